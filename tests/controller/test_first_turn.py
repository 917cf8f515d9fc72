"""The first turn of a controller tells its release step before the slow first monitoring
report (which loads the model, importing scikit-learn) starts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.actions.models import open_registry
from conveyor.controller import Controller
from conveyor.release.releases import ACTIVE
from conveyor.store import models as m
from conveyor.store.records import utcnow
from tests.churn_project import STEPS, backdate, rows

CONFIG = """
project: shop
data:
  rows: data/*.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model: {name: churn, from: train, holdout: prepare.test, target: churned}
deploy:
  production: {strategy: direct}
monitor:
  environment: production
"""


@pytest.mark.slow
def test_the_first_turn_tells_its_release_step_before_monitoring_starts(project) -> None:
    from conveyor.actions.ci import run_ci

    project.write("shop.py", STEPS)
    project.write("conveyor.yaml", CONFIG)
    (project.root / "data").mkdir()
    path = project.root / "data" / "a.csv"
    rows().to_csv(path, index=False)
    backdate(path)
    config = project.config()
    assert run_ci(config).version == 1
    prom = project.root / ".conveyor" / "monitor.prom"
    with open_registry(config) as registry:
        # the version is registered but no release of it has run: the controller starts one
        # (direct, so it promotes in the same step) and the monitoring report follows
        seen: list[tuple[str, Any, bool, float]] = []

        def record(act: dict[str, Any]) -> None:
            seen.append((act["act"], act.get("action"), prom.exists(), time.monotonic()))

        with Controller(config, registry, monitor_every=3600, report=record) as controller:
            controller.turn()
        assert [s[0] for s in seen] == ["release_started"]
        assert registry.alias("churn", "production") == 1
        assert not prom.exists()  # not yet due in this turn: no version served when it began

        # a later release: a canary over the served version, its step judged on the next turn
        project.write("conveyor.yaml", CONFIG.replace("{strategy: direct}", CANARY))
        path2 = project.root / "data" / "b.csv"
        rows().iloc[:300].to_csv(path2, index=False)
        backdate(path2)
        config = project.config()
        assert run_ci(config).version == 2
        with Controller(config, registry, monitor_every=3600) as controller:
            assert [a["act"] for a in controller.turn()] == ["release_started"]
        prom.unlink(missing_ok=True)

        seen.clear()
        began = datetime.now(UTC)
        with Controller(config, registry, monitor_every=3600, report=record) as controller:
            controller.turn(now=utcnow() + timedelta(hours=2))
        ended = datetime.now(UTC)
        with registry.store.session() as session:
            (release,) = session.scalars(select(m.Release).where(m.Release.state.in_(ACTIVE))).all()
            verdicts = list(release.verdicts or [])
    # the canary's step was judged (a verdict kept on the release, stamped when judged) before
    # the first monitoring report of this controller wrote its figures
    assert prom.exists() and verdicts, "the turn neither monitored nor judged the canary"
    judged = datetime.fromisoformat(verdicts[-1]["at"])
    monitored = datetime.fromtimestamp(prom.stat().st_mtime, UTC)
    assert began <= judged < monitored <= ended
    assert (ended - began).total_seconds() < 120  # generous: the whole turn, cold imports too
    assert not any(act[2] for act in seen if act[0] == "release")


CANARY = "{strategy: canary, steps: [{weight: 10, for: 1m}]}"
