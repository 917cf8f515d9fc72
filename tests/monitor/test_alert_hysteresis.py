"""Alerts with ``for:`` and ``resolve_for:``: a rule fires only after its condition held without
a break for that long, and resolves only after it was false for as long; the wait lives in the
store, so a restarted controller (a new Alerter over a reopened store) neither pages twice nor
starts its wait again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.config.monitor import AlertRule
from conveyor.monitor.alerts import FIRED, PENDING, RESOLVED, Alerter, evaluate
from conveyor.store.metadata import Store
from tests.monitor.test_alerts import report

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meta.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{db}").open()
    try:
        yield store
    finally:
        store.close()


def slow_rule(**timing: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "slow", "when": {"p99_ms": 100}, **timing})


def alerter(store: Store, rule: AlertRule) -> Alerter:
    return Alerter(store, [rule], project="shop", model="churn", environment="production")


def observe(alerts: Alerter, p99: float | None, minute: float) -> list[tuple[str, Any]]:
    """Judge one report at T0 + minute; (kind, state) of each event written."""
    rep = report(p99_ms=p99) if p99 is not None else report(enough=False)
    now = T0 + timedelta(minutes=minute)
    written = alerts.process(evaluate(list(alerts.rules.values()), rep), rep, now=now)
    return [(w["kind"], w["state"]) for w in written]


def test_a_rule_fires_only_after_holding_for_its_duration(store: Store) -> None:
    alerts = alerter(store, slow_rule(**{"for": "10m"}))
    assert observe(alerts, 250, 0) == [(PENDING, "pending")]
    assert observe(alerts, 250, 5) == []  # holding, 5 of 10 minutes
    assert observe(alerts, None, 7) == []  # a report that cannot tell keeps the wait
    assert not alerts.firing("slow")
    assert observe(alerts, 250, 10) == [(FIRED, "firing")]
    assert alerts.firing("slow") and alerts.pending("slow") is None
    assert observe(alerts, 250, 11) == []  # firing: nothing new
    # resolve_for defaults to for: a 9-minute lull resolves nothing
    assert observe(alerts, 20, 12) == [(PENDING, "pending")]
    assert alerts.pending("slow") == (False, T0 + timedelta(minutes=12))
    assert observe(alerts, 20, 21) == []
    assert observe(alerts, 20, 22) == [(RESOLVED, "resolved")]
    assert not alerts.firing("slow")


def test_a_break_restarts_the_wait(store: Store) -> None:
    alerts = alerter(store, slow_rule(**{"for": "10m"}))
    # a metric hovering at its bound: held, broken, held again
    assert observe(alerts, 250, 0) == [(PENDING, "pending")]
    assert observe(alerts, 20, 6) == [(PENDING, "cancelled")]
    assert alerts.pending("slow") is None
    assert observe(alerts, 20, 7) == []  # quiet and not firing: nothing to record
    assert observe(alerts, 250, 8) == [(PENDING, "pending")]
    assert observe(alerts, 250, 17) == []  # 9 minutes since it began again (17 since the first)
    assert observe(alerts, 250, 18) == [(FIRED, "firing")]
    # while firing, a short dip cancels the resolve wait in the same way
    assert observe(alerts, 20, 19) == [(PENDING, "pending")]
    assert observe(alerts, 250, 20) == [(PENDING, "cancelled")]
    assert observe(alerts, 20, 21) == [(PENDING, "pending")]
    assert observe(alerts, 20, 30) == []
    assert observe(alerts, 20, 31) == [(RESOLVED, "resolved")]


def test_resolve_for_is_its_own_duration(store: Store) -> None:
    alerts = alerter(store, slow_rule(**{"for": "2m", "resolve_for": "30m"}))
    assert observe(alerts, 250, 0) == [(PENDING, "pending")]
    assert observe(alerts, 250, 2) == [(FIRED, "firing")]
    assert observe(alerts, 20, 3) == [(PENDING, "pending")]
    assert observe(alerts, 20, 32) == []
    assert observe(alerts, 20, 33) == [(RESOLVED, "resolved")]
    # without for, a rule with only resolve_for fires at once and resolves slowly
    quick = alerter(
        store,
        AlertRule.model_validate({"name": "quick", "when": {"p99_ms": 100}, "resolve_for": "5m"}),
    )
    assert observe(quick, 250, 40) == [(FIRED, "firing")]
    assert observe(quick, 20, 41) == [(PENDING, "pending")]
    assert observe(quick, 20, 46) == [(RESOLVED, "resolved")]


def test_a_restart_keeps_the_wait_and_repeats_nothing(store: Store, db: Path) -> None:
    rule = slow_rule(**{"for": "10m"})
    assert observe(alerter(store, rule), 250, 0) == [(PENDING, "pending")]
    reopened = Store(f"sqlite:///{db}").open()  # a new controller process
    try:
        again = alerter(reopened, rule)
        assert again.pending("slow") == (True, T0)
        assert observe(again, 250, 3) == []  # the wait goes on from minute 0, not from 3
        assert observe(again, 250, 10) == [(FIRED, "firing")]
    finally:
        reopened.close()
    third = alerter(store, rule)
    assert observe(third, 250, 11) == []
    kinds = [e.kind for e in store.events(entity="alert", entity_id="churn@production:slow")]
    assert kinds == [PENDING, FIRED]


def test_for_and_resolve_for_read_as_durations() -> None:
    rule = slow_rule(**{"for": "5m", "resolve_for": "1h"})
    assert (rule.for_, rule.resolve_for) == (300.0, 3600.0)
    assert (slow_rule().for_, slow_rule().resolve_for) == (0.0, None)
    with pytest.raises(ValueError, match="for"):
        slow_rule(**{"for": "soon"})
