"""Alert rules judged on monitor reports, and their events and webhooks.

Webhooks go to a real HTTP server on 127.0.0.1 that records each call and answers with scripted
statuses; the alerts' state lives in a real SQLite store, and a "restart" is a new Alerter (over
a reopened store) on the same file. Backoff waits are recorded, not slept.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.config.monitor import AlertCondition, AlertRule, MonitorConfig
from conveyor.exceptions import MonitorError
from conveyor.monitor.alerts import (
    ENTITY,
    EVENT_HEADER,
    FIRED,
    RESOLVED,
    SIGNATURE_HEADER,
    Alerter,
    AlertState,
    evaluate,
    sign,
    verify_signature,
)
from conveyor.store.metadata import Store
from tests.monitor.webhooks import Receiver, serve_receiver

SECRET = "s3cret-key"


def report(**changes: Any) -> dict[str, Any]:
    """A monitor report in the shared contract's shape, with nothing alarming in it."""
    base: dict[str, Any] = {
        "model": "churn",
        "environment": "production",
        "version": 3,
        "window": {
            "seconds": 3600.0,
            "last": None,
            "start": "2025-01-01T00:00:00+00:00",
            "end": "2025-01-01T01:00:00+00:00",
        },
        "rows": 500,
        "requests": 520,
        "enough": True,
        "error_rate": 0.01,
        "p99_ms": 40.0,
        "drift": {
            "share_drifted": 0.0,
            "drifted": [],
            "drifted_overall": False,
            "columns": {
                "annual_income": {
                    "kind": "numeric",
                    "method": "ks",
                    "drifted": False,
                    "stats": {"psi": {"statistic": 0.02, "threshold": 0.2, "drifted": False}},
                },
                "age": {"kind": "numeric", "method": "ks", "drifted": False, "stats": {}},
            },
        },
        "prediction_drift": {"psi": 0.01, "drifted": False, "p_value": None},
        "quality": {
            "labelled": 300,
            "labelled_share": 0.6,
            "label_delay_s_p50": 60.0,
            "metrics": {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75},
            "by_version": {},
        },
    }
    base.update(changes)
    return base


def drifting(share: float = 0.5) -> dict[str, Any]:
    drift = report()["drift"]
    drift["share_drifted"] = share
    drift["drifted"] = ["annual_income"]
    drift["columns"]["annual_income"].update(
        drifted=True, stats={"psi": {"statistic": 0.41, "threshold": 0.2, "drifted": True}}
    )
    return report(drift=drift)


def rule(name: str, webhook: str | None = None, secret_env: str | None = None, **when: Any):
    return AlertRule(
        name=name,
        when=AlertCondition(**when),
        webhook=webhook,
        secret_env=secret_env,
        severity="critical",
    )


# -- evaluate ---------------------------------------------------------------------------------


RULES = MonitorConfig.model_validate(
    {
        "alerts": [
            {"name": "data drift", "when": {"drift_share": 0.2}},
            {"name": "income drift", "when": {"column": "annual_income"}},
            {"name": "live accuracy", "when": {"metric": "accuracy", "below": 0.7}},
            {"name": "errors", "when": {"error_rate": 0.05}},
            {"name": "slow", "when": {"p99_ms": 100}},
        ]
    }
).alerts


def test_evaluate_quiet_report_holds_nothing() -> None:
    states = evaluate(RULES, report())
    assert [s.name for s in states] == [r.name for r in RULES]
    assert [s.holds for s in states] == [False] * 5
    by_name = {s.name: s for s in states}
    assert by_name["data drift"] == AlertState(
        "data drift", False, 0.0, 0.2, "0 of 2 features drift: share 0 < 0.2"
    )
    assert by_name["income drift"].summary == "column 'annual_income' does not drift (psi 0.02)"
    assert (by_name["live accuracy"].value, by_name["live accuracy"].bound) == (0.9, 0.7)
    assert by_name["errors"].summary == "error rate 0.01 <= 0.05 (520 requests)"
    assert by_name["slow"].summary == "p99 latency 40 ms <= 100 ms"


def test_evaluate_each_condition_at_its_bound() -> None:
    quality = report()["quality"] | {"metrics": {"accuracy": 0.69}}
    states = evaluate(
        RULES, drifting(0.2) | {"quality": quality, "error_rate": 0.0501, "p99_ms": 100.5}
    )
    assert all(s.holds for s in states), states
    by_name = {s.name: s for s in states}
    assert by_name["data drift"].summary == "1 of 2 features drift: share 0.2 >= 0.2"
    assert by_name["income drift"] == AlertState(
        "income drift", True, 0.41, 0.2, "column 'annual_income' drifts (psi 0.41), by ks"
    )
    assert by_name["live accuracy"].summary == "live accuracy 0.69 < 0.7"
    # Exactly at the bound: drift_share holds (>=), the others need to cross it.
    at_bound = report(error_rate=0.05, p99_ms=100.0)
    at_bound["quality"]["metrics"]["accuracy"] = 0.7
    assert [s.holds for s in evaluate(RULES[2:], at_bound)] == [False, False, False]


def test_evaluate_without_enough_data_or_inputs_says_nothing() -> None:
    states = evaluate(RULES, drifting() | {"enough": False, "rows": 12})
    assert {s.holds for s in states} == {None}
    assert states[0].summary == "not enough data: 12 served rows in the window"
    missing = report(drift=None, p99_ms=None)
    missing["quality"] = {"labelled": 0, "labelled_share": 0.0, "metrics": {}, "by_version": {}}
    states = {s.name: s for s in evaluate(RULES, missing)}
    assert states["data drift"].holds is None
    assert states["income drift"].holds is None
    assert states["live accuracy"] == AlertState(
        "live accuracy", None, None, 0.7, "no live accuracy yet (0 labelled rows)"
    )
    assert states["errors"].holds is False  # the error rate is still known
    assert states["slow"].holds is None
    unknown = evaluate([rule("zip", column="zip_code")], report())
    assert unknown[0].holds is None
    assert unknown[0].summary == "column 'zip_code' is not in the drift report"
    nan = evaluate([rule("errors", error_rate=0.05)], report(error_rate=float("nan")))
    assert nan[0].holds is None


def test_evaluate_reads_a_real_drift_report() -> None:
    """The drift section as ``conveyor.data.drift.drift_report`` writes it."""
    import numpy as np
    import pandas as pd

    from conveyor.data.drift import drift_report

    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {"annual_income": rng.normal(50, 10, 2000), "age": rng.normal(40, 5, 2000)}
    )
    current = pd.DataFrame(
        {"annual_income": rng.normal(80, 10, 2000), "age": rng.normal(40, 5, 2000)}
    )
    # The methods conveyor.yaml's monitor.drift uses by default.
    drift = drift_report(reference, current, methods={"numeric": ["ks", "psi"]}, drift_share=0.2)
    states = {s.name: s for s in evaluate(RULES[:2], report(drift=drift))}
    assert states["data drift"].holds is True
    assert states["data drift"].value == 0.5
    income = states["income drift"]
    assert income.holds is True and income.bound == 0.2
    assert income.value is not None and income.value > 0.2
    assert income.summary.startswith("column 'annual_income' drifts (psi ")


# -- signatures -------------------------------------------------------------------------------


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"alert":"data drift"}'
    at = 1_700_000_000  # signatures cover a timestamp (tests/monitor/test_webhook_signing.py)
    header = sign(body, SECRET, at)
    assert header.startswith("t=1700000000,v1=") and len(header) == 16 + 64
    assert verify_signature(body, header, SECRET, now=at)
    assert not verify_signature(body + b" ", header, SECRET, now=at)
    assert not verify_signature(body, header, "other-key", now=at)
    assert not verify_signature(body, header[13:], SECRET, now=at)  # no "t=" field
    assert not verify_signature(body, "t=1700000000,v1=ünïcode", SECRET, now=at)
    assert not verify_signature(body, "", SECRET, now=at)


# -- a real webhook receiver ------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store("sqlite:///" + str(tmp_path / "meta.db")).open()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhooks in these tests go to 127.0.0.1 directly, whatever proxy the machine sets."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


class Waits(list[float]):
    """Records the backoff instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def alerter(store: Store, rules: list[AlertRule], waits: Waits | None = None) -> Alerter:
    return Alerter(
        store,
        rules,
        project="loans",
        model="churn",
        environment="production",
        sleep=waits if waits is not None else Waits(),
    )


def alert_events(store: Store, name: str) -> list[tuple[str, dict[str, Any]]]:
    events = store.events(entity=ENTITY, entity_id=f"churn@production:{name}")
    return [(e.kind, e.payload) for e in events]


@pytest.mark.slow
def test_fired_webhook_is_signed_and_recorded(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    rules = [rule("data drift", receiver.url, "HOOK_SECRET", drift_share=0.2)]
    written = alerter(store, rules).process(evaluate(rules, drifting(0.5)), drifting(0.5))

    (call,) = receiver.calls
    assert call["path"] == "/hook"
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["headers"][EVENT_HEADER] == "fired"
    assert verify_signature(call["body"], call["headers"][SIGNATURE_HEADER], SECRET)
    body = json.loads(call["body"])
    assert set(body) == {
        "alert", "state", "severity", "model", "environment", "version", "value", "bound",
        "summary", "at", "project",
    }  # fmt: skip
    assert body["alert"] == "data drift" and body["state"] == "firing"
    assert body["severity"] == "critical"
    assert (body["model"], body["environment"], body["version"]) == ("churn", "production", 3)
    assert (body["value"], body["bound"]) == (0.5, 0.2)
    assert body["summary"] == "1 of 2 features drift: share 0.5 >= 0.2"
    assert body["project"] == "loans" and body["at"].endswith("+00:00")

    ((kind, payload),) = alert_events(store, "data drift")
    assert kind == FIRED
    assert payload == {**body, "delivered": True, "attempts": 1, "status": 200, "error": None}
    assert written == [
        {"kind": FIRED, "entity_id": "churn@production:data drift", **payload},
    ]


@pytest.mark.slow
def test_holding_does_not_repeat_and_stopping_resolves(store: Store, receiver: Receiver) -> None:
    rules = [rule("errors", receiver.url, error_rate=0.05)]
    bad = report(error_rate=0.2)
    alerts = alerter(store, rules)
    assert [w["kind"] for w in alerts.process(evaluate(rules, bad), bad)] == [FIRED]
    assert alerts.firing("errors")
    assert alerts.process(evaluate(rules, bad), bad) == []  # still holds: nothing new
    thin = bad | {"enough": False}
    assert alerts.process(evaluate(rules, thin), thin) == []  # not enough data: keeps firing
    assert alerts.firing("errors")
    good = report(error_rate=0.0)
    assert [w["kind"] for w in alerts.process(evaluate(rules, good), good)] == [RESOLVED]
    assert alerts.process(evaluate(rules, good), good) == []
    assert not alerts.firing("errors")

    assert [b["state"] for b in receiver.bodies()] == ["firing", "resolved"]
    assert [c["headers"][EVENT_HEADER] for c in receiver.calls] == ["fired", "resolved"]
    assert SIGNATURE_HEADER not in receiver.calls[0]["headers"]  # no secret_env: unsigned
    assert [k for k, _ in alert_events(store, "errors")] == [FIRED, RESOLVED]
    resolved = alert_events(store, "errors")[1][1]
    assert resolved["summary"] == "error rate 0 <= 0.05 (520 requests)"


@pytest.mark.slow
def test_restart_does_not_fire_again(store: Store, receiver: Receiver, tmp_path: Path) -> None:
    rules = [rule("slow", receiver.url, p99_ms=100)]
    slow = report(p99_ms=250.0)
    alerter(store, rules).process(evaluate(rules, slow), slow)
    assert len(receiver.calls) == 1

    # A new process: a new store connection and a new Alerter over the same database file.
    reopened = Store("sqlite:///" + str(tmp_path / "meta.db")).open()
    try:
        again = alerter(reopened, rules)
        assert again.firing("slow")
        assert again.process(evaluate(rules, slow), slow) == []
        assert len(receiver.calls) == 1
        fast = report(p99_ms=20.0)
        assert [w["kind"] for w in again.process(evaluate(rules, fast), fast)] == [RESOLVED]
    finally:
        reopened.close()
    assert [b["state"] for b in receiver.bodies()] == ["firing", "resolved"]
    # The same rule name for another model or environment is another alert.
    other = Alerter(store, rules, project="loans", model="churn", environment="staging")
    assert not other.firing("slow")
    assert [w["entity_id"] for w in other.process(evaluate(rules, slow), slow)] == [
        "churn@staging:slow"
    ]


@pytest.mark.slow
def test_5xx_is_retried_with_backoff_until_delivered(store: Store, receiver: Receiver) -> None:
    receiver.statuses[:] = [500, 503]
    rules = [rule("errors", receiver.url, error_rate=0.05)]
    waits = Waits()
    bad = report(error_rate=0.5)
    (written,) = alerter(store, rules, waits).process(evaluate(rules, bad), bad)
    assert (written["delivered"], written["attempts"], written["status"]) == (True, 3, 200)
    assert written["error"] is None
    assert waits == [0.5, 1.0]
    assert len(receiver.calls) == 3
    assert len({c["body"] for c in receiver.calls}) == 1  # the same body each time


@pytest.mark.slow
def test_4xx_is_not_retried(store: Store, receiver: Receiver) -> None:
    receiver.statuses[:] = [400]
    rules = [rule("errors", receiver.url, error_rate=0.05)]
    waits = Waits()
    bad = report(error_rate=0.5)
    (written,) = alerter(store, rules, waits).process(evaluate(rules, bad), bad)
    assert (written["delivered"], written["attempts"], written["status"]) == (False, 1, 400)
    assert written["error"] == "the webhook answered 400 Bad Request"
    assert waits == [] and len(receiver.calls) == 1
    # The change is recorded even though no one heard of it; it is not sent again.
    assert [k for k, _ in alert_events(store, "errors")] == [FIRED]


@pytest.mark.slow
def test_unreachable_webhook_gives_up_after_the_retries(store: Store) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rules = [rule("errors", f"http://127.0.0.1:{port}/hook", error_rate=0.05)]
    waits = Waits()
    bad = report(error_rate=0.5)
    (written,) = alerter(store, rules, waits).process(evaluate(rules, bad), bad)
    assert (written["delivered"], written["attempts"], written["status"]) == (False, 4, None)
    assert written["error"].startswith("ConnectError")
    assert waits == [0.5, 1.0, 2.0]


@pytest.mark.slow
def test_unset_secret_is_an_error_and_nothing_is_sent(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MISSING_HOOK_SECRET", raising=False)
    rules = [rule("errors", receiver.url, "MISSING_HOOK_SECRET", error_rate=0.05)]
    bad = report(error_rate=0.5)
    (written,) = alerter(store, rules).process(evaluate(rules, bad), bad)
    assert receiver.calls == []
    assert (written["delivered"], written["attempts"], written["status"]) == (False, 0, None)
    assert written["error"] == (
        "The environment variable 'MISSING_HOOK_SECRET' (secret_env of alert 'errors') is not "
        "set, so the webhook was not called; set it to the key the receiver checks "
        "signatures with."
    )
    assert alert_events(store, "errors")[0][1]["error"] == written["error"]


def test_rule_without_webhook_only_records(store: Store) -> None:
    rules = [rule("income drift", column="annual_income")]
    (written,) = alerter(store, rules).process(evaluate(rules, drifting()), drifting())
    assert written["kind"] == FIRED
    assert (written["delivered"], written["attempts"]) == (None, 0)
    assert written["value"] == 0.41


def test_state_for_an_unknown_rule_is_refused(store: Store) -> None:
    alerts = alerter(store, [rule("errors", error_rate=0.05)])
    with pytest.raises(MonitorError, match="'slow' names no rule of this Alerter"):
        alerts.process([AlertState("slow", True, 1.0, 0.5, "")], report())
