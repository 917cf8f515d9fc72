"""A real project store for the dashboard tests: runs, versions, releases and events.

``conveyor ci`` runs twice on the churn project (a step logs a loss curve, so a run has a
metric series), registering versions 1 and 2 with their gates; version 1 is released to
staging and production directly, version 2 to production as a canary that stays running, so
the acts have something to act on. A third CI run fails, so a run page shows a failed step.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.churn_project import CONFIG_HEAD, STEPS, rows, write_data

TOKEN = "dashboard-test-token-0123456789"

CONFIG = """
project: shop
data:
  rows: data/rows.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  curve: {run: shop:curve, inputs: [prepare.train]}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
model:
  name: churn
  from: train
  holdout: prepare.test
  target: churned
  intended_use: Rank customers for a retention call.
gates:
  - roc_auc >= 0.55
deploy:
  staging: {strategy: direct}
  production:
    strategy: canary
    steps: [{weight: 10, for: 1m}, {weight: 50, for: 1m}]
"""

CURVE = """

def curve(train):
    import conveyor

    for i in range(8):
        conveyor.log_metric("loss", 1.0 / (i + 1))
    return {"rows": len(train)}
"""


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    stamp = time.time_ns() - 10_000_000_000
    os.utime(path, ns=(stamp, stamp))


def build(root: Path) -> dict[str, Any]:
    """Write the project into ``root`` and fill its store; returns what the tests look for."""
    from conveyor.actions.ci import run_ci
    from conveyor.actions.models import open_registry
    from conveyor.config import load_config
    from conveyor.release.releases import Releases

    root.mkdir(parents=True, exist_ok=True)
    _write(root, "shop.py", STEPS + CURVE)
    _write(root, "conveyor.yaml", CONFIG)
    write_data(root, rows())
    config = load_config(root / "conveyor.yaml")
    first = run_ci(config, jobs=1, report_path=root / "report.md")
    assert first.passed and first.version == 1, first
    _write(root, "conveyor.yaml", CONFIG.replace("C: 1.0", "C: 0.5"))
    config = load_config(root / "conveyor.yaml")
    second = run_ci(config, jobs=1, report_path=root / "report.md")
    assert second.passed and second.version == 2, second
    with open_registry(config) as registry:
        releases = Releases(config, registry)
        staging = releases.start("churn", 1, "staging")
        direct = releases.start("churn", 1, "production")
        canary = releases.start("churn", 2, "production", reason="C=0.5 looks better")
    requests = serve_traffic(config)
    _write(
        root,
        "shop.py",
        STEPS + CURVE.replace("return {", "raise RuntimeError('no rows')\n    return {"),
    )
    from conveyor.exceptions import ConveyorError

    try:
        run_ci(config, jobs=1, report_path=root / "report.md")
    except ConveyorError:
        pass
    return {
        "config": config,
        "run_id": first.report["run_id"],
        "versions": [1, 2],
        "staging": staging.id,
        "direct": direct.id,
        "canary": canary.id,
        "requests": requests,
    }


def serve_traffic(config: Any) -> int:
    """Customers whose tenure drifted, sent through a real gateway to churn@production, and
    the true labels of half of them through its feedback endpoint: the monitoring page then
    has drift to show and live quality to measure. Returns the number of requests."""
    from tests.gateway.servers import TOKEN as GATEWAY_TOKEN
    from tests.gateway.servers import running

    frame = rows(n=400, seed=7, shift=1.0)
    sent = 0
    with running(config, token=GATEWAY_TOKEN) as gw:
        for i in range(0, len(frame), 10):
            chunk = frame.iloc[i : i + 10]
            records = chunk[["tenure", "spend", "region"]].to_dict(orient="records")
            r = gw.predict("churn", records)
            assert r.status_code == 200, r.text
            sent += 1
            if i % 20 == 0:
                body = {
                    "request_id": r.headers["x-request-id"],
                    "labels": chunk["churned"].tolist(),
                }
                headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
                # feedback is checked against the request log, written off the hot path in
                # batches: on a busy machine the row may land a moment after the answer
                deadline = time.monotonic() + 10
                while True:
                    answer = gw.post("/v1/feedback", json=body, headers=headers)
                    if answer.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert answer.status_code == 200, answer.text
    return sent


# -- the demo's story ---------------------------------------------------------------------------

DEMO_CONFIG = (
    CONFIG_HEAD
    + """\
gates:
  - roc_auc >= 0.70
deploy:
  production:
    strategy: canary
    steps: [{weight: 20, for: 1m}, {weight: 50, for: 1m}]
    analysis: {min_requests: 30, min_agreement: 0.8, max_p99_ratio: 50}
monitor:
  environment: production
  window: {last: 2000}
  min_rows: 100
  alerts:
    - {name: tenure drift, when: {column: tenure}}
"""
)


def build_demo(root: Path) -> dict[str, Any]:
    """The demo's story in a store, with the demo's parts doing their own work: a run that
    registers version 1, a worse candidate (trained on region alone) that the gate refuses,
    version 2 released to production as a canary through its traffic steps (20%, 50%, then
    promoted) while customers whose tenure drifted are served through a real gateway, the
    monitor's drift alert fired on that traffic, and a bad version 3 (trained on inverted
    labels) rolled back by the canary's analysis on its own."""
    from datetime import timedelta

    from conveyor.actions.ci import run_ci
    from conveyor.actions.models import open_registry
    from conveyor.config import load_config
    from conveyor.monitor.alerts import Alerter, evaluate
    from conveyor.monitor.report import monitor_report
    from conveyor.release.releases import Releases
    from conveyor.store.records import utcnow
    from tests.gateway.servers import TOKEN as GATEWAY_TOKEN
    from tests.gateway.servers import running

    root.mkdir(parents=True, exist_ok=True)
    _write(root, "shop.py", STEPS)
    _write(root, "conveyor.yaml", DEMO_CONFIG)
    write_data(root, rows())
    config = load_config(root / "conveyor.yaml")
    first = run_ci(config, jobs=1, report_path=root / "report.md")
    assert first.passed and first.version == 1, first.failed_gates
    _write(root, "conveyor.yaml", DEMO_CONFIG.replace("[tenure, spend, region]", "[region]"))
    refused = run_ci(load_config(root / "conveyor.yaml"), jobs=1, report_path=root / "r.md")
    assert not refused.passed and refused.version is None, refused
    _write(root, "conveyor.yaml", DEMO_CONFIG.replace("C: 1.0", "C: 0.5"))
    config = load_config(root / "conveyor.yaml")
    second = run_ci(config, jobs=1, report_path=root / "report.md")
    assert second.passed and second.version == 2, second.failed_gates
    bad = _register_inverted(config)
    drifted = rows(n=600, seed=7, shift=1.0)
    with open_registry(config) as registry:
        releases = Releases(config, registry)
        first_release = releases.start("churn", 1, "production")
        with running(config, token=GATEWAY_TOKEN) as gw:
            canary = releases.start("churn", 2, "production", reason="C=0.5")
            _routed(gw, 2)
            _send(gw, drifted.iloc[:300])
            stepped = releases.step(canary.id, now=utcnow() + timedelta(minutes=2))[0]
            assert stepped["action"] == "next", stepped
            _send(gw, drifted.iloc[300:])
            done = releases.step(canary.id, now=utcnow() + timedelta(minutes=4))[0]
            assert done["action"] == "promoted", done
            rules = config.monitor.alerts if config.monitor else []
            report = monitor_report(config, registry, model="churn", environment="production")
            fired = Alerter(
                registry.store, rules, project="shop", model="churn", environment="production"
            ).process(evaluate(rules, report), report, now=utcnow())
            assert [c["state"] for c in fired] == ["firing"], fired
            rollback = releases.start("churn", bad, "production", reason="a hand-made model")
            _routed(gw, bad)
            _send(gw, rows(n=300, seed=11))
            outcome = releases.step(rollback.id)[0]
            assert outcome["action"] == "rolled_back", outcome
    return {
        "config": config,
        "run_id": first.run_id,
        "refused_run_id": refused.run_id,
        "first": first_release.id,
        "canary": canary.id,
        "rollback": rollback.id,
        "bad_version": bad,
        "rollback_why": outcome["why"],
    }


def _register_inverted(config: Any) -> int:
    """A model of the same features that answers the opposite of the truth."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from conveyor.actions.models import register_fitted

    frame = rows(n=2000, seed=3)
    features = ["tenure", "spend", "region"]
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])],
        remainder="passthrough",
        sparse_threshold=0.0,
    )
    model = Pipeline([("encode", encode), ("fit", LogisticRegression(max_iter=500))])
    model.fit(frame[features], 1 - frame["churned"])
    version = register_fitted(
        config, model, frame[features].iloc[:400], name="churn", task="classification"
    )
    return int(version.version)


def _routed(gw: Any, version: int) -> None:
    """Until the gateway, following the store, routes the canary to ``version``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        served = gw.get("/v1/models/churn/versions").json()["environments"]["production"]
        if served.get("canary") == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway did not route the canary to version {version}")


def _send(gw: Any, frame: Any) -> None:
    """Each customer as one request, then until the request log has written them all."""
    for i in range(len(frame)):
        record = frame.iloc[i : i + 1][["tenure", "spend", "region"]].to_dict(orient="records")
        r = gw.predict("churn", record)
        assert r.status_code == 200, r.text
    log = gw.gateway.request_log
    deadline = time.monotonic() + 10
    while log.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a flush in progress finishes
