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

from tests.churn_project import STEPS, rows, write_data

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
