"""The controller keeps each monitoring report it computes, so a look at `conveyor monitor`
while `conveyor watch` runs finds it, as long as the log has not changed since."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from conveyor.actions.models import open_registry, set_alias
from conveyor.controller import Controller
from conveyor.store import kept as keeper
from tests.churn_project import STEPS, backdate, rows
from tests.cli.test_monitor_kept import probe
from tests.monitor.logs import entry, records, write

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
monitor:
  environment: production
  window: 30m
"""


def test_a_look_while_the_controller_runs_finds_its_report(project) -> None:
    from conveyor.actions.ci import run_ci

    project.write("shop.py", STEPS)
    project.write("conveyor.yaml", CONFIG)
    (project.root / "data").mkdir()
    path = project.root / "data" / "a.csv"
    rows().to_csv(path, index=False)
    backdate(path)
    config = project.config()
    assert run_ci(config, jobs=1).version == 1
    set_alias(config, None, 1, "production")
    served = rows(100, seed=3)[["tenure", "spend", "region"]]
    with open_registry(config) as registry:
        model = registry.load(registry.version("churn", 1), allow_pickle=False)
    sent, answers = records(served), model.predict(served).tolist()
    now = datetime.now(UTC)
    logged = []
    for k in range(25):
        e = entry(f"q{k}", sent[k * 4 : k * 4 + 4], answers[k * 4 : k * 4 + 4], model="churn")
        e["at"] = now - timedelta(seconds=300 - 10 * k)
        logged.append(e)
    write(config, logged)

    with open_registry(config) as registry:
        with Controller(config, registry, monitor_every=3600) as controller:
            controller.turn()
            report = json.loads(json.dumps(controller.last_report, default=str))
    assert report["requests"] == 25
    record = keeper.read_record(
        project.root / ".conveyor", keeper.Key("churn", "production", 1800.0, None)
    )
    assert record is not None and record["by"] == "conveyor watch"

    look = probe(project.root, "--json")  # model, environment and window from conveyor.yaml
    assert look["code"] == 0 and look["heavy"] == [], look["heavy"]
    kept = json.loads(look["out"])
    assert kept[keeper.FIELD]["by"] == "conveyor watch"
    assert kept[keeper.FIELD]["computed_at"] == report["window"]["end"]
    for either in (kept, report):
        either.pop(keeper.FIELD, None)
        either["window"] = {k: v for k, v in either["window"].items() if k not in ("start", "end")}
    assert kept == report
