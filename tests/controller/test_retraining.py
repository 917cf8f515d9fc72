"""Retraining beside the loop, on a real project: a canary is judged while training runs, data
already trained on is never trained on again, and the cooldown counts from a retraining's end."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from conveyor.actions.ci import run_ci
from conveyor.actions.models import open_registry
from conveyor.controller import Controller
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow
from tests.churn_project import STEPS, backdate, rows
from tests.controller.turning import turn_until

#: The churn steps plus one that sleeps SHOP_NAP seconds: a retraining as slow as a test needs.
SLOW_STEPS = (
    STEPS
    + """

def nap(rows: pd.DataFrame) -> dict:
    import os
    import time

    time.sleep(float(os.environ.get("SHOP_NAP", "0")))
    return {"rows": len(rows)}
"""
)

PIPELINE = """
project: shop
data:
  rows: data/*.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  nap: {run: shop:nap, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model: {name: churn, from: train, holdout: prepare.test, target: churned}
gates:
  - roc_auc >= 0.55
"""

DIRECT = """
deploy:
  production: {strategy: direct}
monitor:
  environment: production
  retrain:
    triggers: [new_data, drift, {schedule: "* * * * *"}]
    cooldown: %s
    min_new_rows: 100
    max_runs_per_day: 50
"""


def shop(project, extra: str):
    project.write("shop.py", SLOW_STEPS)
    project.write("conveyor.yaml", PIPELINE + extra)
    add_rows(project.root, "a.csv", rows())
    return project


def add_rows(root, name: str, frame) -> None:
    path = root / "data" / name
    path.parent.mkdir(exist_ok=True)
    frame.to_csv(path, index=False)
    backdate(path)


def project_events(store, prefix: str = "controller.") -> list:
    return [e for e in store.events(entity="project", limit=1000) if e.kind.startswith(prefix)]


def test_data_already_trained_on_is_never_trained_on_again(project) -> None:
    shop(project, DIRECT % "1s")
    config = project.config()
    run_ci(config)
    with (
        open_registry(config) as registry,
        Controller(config, registry, monitor_every=3600) as controller,
    ):
        controller.turn()  # v1 to production
        add_rows(project.root, "b.csv", rows(n=600, seed=7))  # the last batch of data
        acts = turn_until(controller, "retrained")
        assert [a["version"] for a in acts if a["act"] == "retrained"] == [2]
        assert registry.alias("churn", "production") == 2
        # the schedule fires every minute from now on; 30 turns over half an hour
        later = [controller.turn(now=utcnow() + timedelta(minutes=2 + i)) for i in range(30)]
        acts = [a for turn in later for a in turn]
        assert [a["act"] for a in acts] == ["retrain_skipped"]
        assert acts[0]["why"].startswith("nothing_new")
        assert acts[0]["causes"][0].startswith("schedule: * * * * *")
        kinds = [e.kind for e in project_events(registry.store)]
        assert kinds.count("controller.retrain_started") == 1
        assert kinds.count("controller.retrain_skipped") == 1
        assert controller.retrainer.job is None  # no child was started
    # changed code is something new: the same data and the schedule retrain once more
    (project.root / "conveyor.yaml").write_text(
        (project.root / "conveyor.yaml").read_text().replace("C: 1.0", "C: 0.5")
    )
    config = project.config()
    with (
        open_registry(config) as registry,
        Controller(config, registry, monitor_every=3600) as controller,
    ):
        acts = turn_until(controller, "retrained", now=utcnow() + timedelta(hours=1))
        assert [a["act"] for a in acts if a["act"].startswith("retrain")] == [
            "retrain_started",
            "retrained",
        ]
        assert [a["causes"][0][:10] for a in acts if a["act"] == "retrained"] == ["schedule: "]


def test_the_cooldown_counts_from_the_end_of_the_last_retraining(project) -> None:
    extra = (DIRECT % "2s").replace(', drift, {schedule: "* * * * *"}', "")
    shop(project, extra)
    config = project.config()
    run_ci(config)
    with (
        open_registry(config) as registry,
        Controller(config, registry, monitor_every=3600) as controller,
    ):
        controller.turn()
        add_rows(project.root, "b.csv", rows(n=600, seed=7))
        turn_until(controller, "retrained")
        events = {e.kind: e for e in project_events(registry.store)}
        began = as_utc(events["controller.retrain_started"].at)
        ended = as_utc(events["controller.retrain_finished"].at)
        assert (ended - began).total_seconds() > 2  # it took longer than the cooldown
        add_rows(project.root, "c.csv", rows(n=600, seed=8))
        # 1 s after its end (more than 2 s after its start): still cooling down
        held = controller.turn(now=ended + timedelta(seconds=1))
        assert [a["act"] for a in held] == ["retrain_skipped"]
        assert held[0]["why"].startswith("cooldown: the last retraining ended 1s ago")
        # 3 s after its end: the new data is trained on
        started = controller.turn(now=ended + timedelta(seconds=3))
        assert [a["act"] for a in started] == ["retrain_started"]
        assert started[0]["causes"] == ["new_data: rows"]
        turn_until(controller, "retrained")


CANARY = """
serve:
  poll_seconds: 0.1
  log: {flush_seconds: 0.2}
deploy:
  production:
    strategy: canary
    steps: [{weight: 50, for: 1h}]
    analysis: {min_requests: 30, max_p99_ratio: 50}
monitor:
  environment: production
  retrain: {triggers: [new_data], cooldown: 1s, min_new_rows: 100}
"""


@pytest.mark.slow
def test_a_bad_canary_is_rolled_back_while_a_slow_retraining_runs(project, monkeypatch) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from conveyor.actions.models import register_fitted
    from tests.gateway.servers import running

    nap = 30.0
    shop(project, CANARY)
    config = project.config()
    run_ci(config)
    features = ["tenure", "spend", "region"]
    train = rows(n=3000, seed=1)
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])], remainder="passthrough"
    )
    inverted = Pipeline([("encode", encode), ("fit", LogisticRegression(max_iter=500))])
    inverted.fit(train[features], 1 - train["churned"])  # answers the opposite of the truth
    holdout = rows(n=400, seed=2)[features]
    with open_registry(config) as registry:
        registry.set_alias("churn", "production", 1)
    monkeypatch.setenv("SHOP_NAP", str(nap))
    stop = threading.Event()
    with (
        running(config) as gw,
        open_registry(config) as registry,
        Controller(config, registry, monitor_every=3600) as controller,
    ):
        add_rows(project.root, "b.csv", rows(n=600, seed=7))
        started = controller.turn()
        assert [a["act"] for a in started] == ["retrain_started"]
        t_retrain = time.monotonic()
        bad = register_fitted(config, inverted, holdout, name="churn", task="classification")
        acts = controller.turn()
        assert [(a["act"], a.get("version")) for a in acts] == [("release_started", bad.version)]
        payload = holdout.to_dict(orient="records")

        def traffic() -> None:
            i = 0
            while not stop.is_set():
                gw.predict("churn", [payload[i % len(payload)]])
                i += 1

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            verdicts = []
            deadline = time.monotonic() + nap
            while time.monotonic() < deadline:
                t_turn = time.monotonic()
                acts = controller.turn()
                t_done = time.monotonic()
                verdicts += [a for a in acts if a["act"] == "release"]
                if any(a.get("action") == "rolled_back" for a in acts):
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            sender.join(10)
        rolled = [a for a in verdicts if a["action"] == "rolled_back"]
        assert rolled, f"no rollback while the retraining ran: {verdicts}"
        # the turn that judged the canary returned at once, and the retraining still runs
        assert t_done - t_turn < 2.0, t_done - t_turn
        assert controller.retrainer.running and controller.retrainer.job.poll() is None
        assert t_done - t_retrain < nap
        assert registry.alias("churn", "production") == 1
        acts = turn_until(controller, "retrained", timeout=nap + 90)
        assert [a["passed"] for a in acts if a["act"] == "retrained"] == [True]
