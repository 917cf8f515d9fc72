"""`conveyor ci` end to end on a real project in tmp_path: data gates before training, the
pipeline, model gates, registration or refusal, and the report, JUnit file, events and card."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from conveyor.actions.ci import run_ci
from conveyor.exceptions import ConfigError, DataError, GateError, ModelTampered
from tests.churn_project import CONFIG_HEAD, STEPS, rows, write_data

CONFIG = (
    CONFIG_HEAD
    + """\
  slices: [region]
  intended_use: Rank customers for a retention call.
validate:
  rows: {schema: schemas/rows.yaml, drift: {psi: 0.2, max_share: 0.34}}
gates:
  - roc_auc >= 0.55
  - name: not worse than production
    check: roc_auc >= production.roc_auc - 0.01
  - fairness: {group: region, metric: recall, max_gap: 0.5}
  - size: {max_mb: 5}
"""
)


@pytest.fixture
def shop(project):
    project.write("shop.py", STEPS)
    project.write("conveyor.yaml", CONFIG)
    (project.root / "data").mkdir()
    rows().to_csv(project.root / "data" / "rows.csv", index=False)
    from conveyor.actions.data import infer_source_schema

    infer_source_schema(project.config(), "rows")
    return project


def _ci(project, **kwargs):
    root = project.root
    kwargs.setdefault("report_path", root / "report.md")
    kwargs.setdefault("junit_path", root / "junit.xml")
    return run_ci(project.config(), jobs=2, **kwargs)


def _events(project, kind: str) -> list[dict]:
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        return [e.payload for e in store.events() if e.kind == kind]


def test_first_ci_registers_with_lineage_and_writes_the_report(shop) -> None:
    outcome = _ci(shop)
    assert outcome.passed and outcome.version == 1
    verdicts = {g["name"]: g["verdict"] for g in outcome.report["gates"]}
    assert verdicts == {
        "data validation: rows": "pass",
        "data drift: rows": "skipped",
        "roc_auc >= 0.55": "pass",
        "not worse than production": "skipped",
        "fairness: recall gap across region <= 0.5": "pass",
        "size <= 5 MB": "pass",
        "servable": "pass",
    }
    report = outcome.report
    assert report["status"] == "registered" and report["aliases"] == []
    assert report["metrics"]["roc_auc"] > 0.75
    assert set(report["slices"]["region"]) == {"north", "south", "east"}
    assert {s["source"] for s in report["data"]["snapshots"]} == {"rows"}
    assert report["lineage"]["params"]["train"] == {
        "features": ["tenure", "spend", "region"],
        "C": 1.0,
    }
    assert [i["name"] for i in report["signature"]["inputs"]] == ["tenure", "spend", "region"]
    assert report["artifacts"]["model"]["format"] == "skops"
    assert report["artifacts"]["onnx"]["max_abs_diff"] < 1e-4  # stored beside it for serving
    markdown = (shop.root / "report.md").read_text()
    assert "churn" in markdown and "roc_auc" in markdown
    assert (shop.root / "report-plots" / "roc.svg").read_text().startswith("<svg")
    suite = ET.parse(shop.root / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "7" and suite.get("failures") == "0"
    [registered] = _events(shop, "model.registered")
    assert registered["version"] == 1 and registered["run_id"] == outcome.run_id


def test_a_worse_candidate_is_refused_by_the_comparison_with_evidence(shop) -> None:
    from conveyor.actions.models import set_alias

    assert _ci(shop).version == 1
    set_alias(shop.config(), None, 1, "production")
    shop.write("conveyor.yaml", CONFIG.replace("[tenure, spend, region]", "[spend, region]"))
    outcome = _ci(shop)
    assert not outcome.passed and outcome.version is None
    assert outcome.report["status"] == "rejected"
    [failed] = outcome.failed_gates
    assert failed["name"] == "not worse than production" and failed["verdict"] == "fail"
    evidence = failed["evidence"]
    assert evidence["method"] == "delong" and evidence["incumbent_version"] == 1
    assert evidence["ci_high"] < -0.01
    assert outcome.report["baseline"]["version"] == 1
    markdown = (shop.root / "report.md").read_text()
    assert "not worse than production" in markdown and "delong" in markdown
    suite = ET.parse(shop.root / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    [rejected] = _events(shop, "candidate.rejected")
    assert rejected["failed"] == ["not worse than production"]
    from conveyor.actions.models import list_versions

    assert [v["version"] for v in list_versions(shop.config())] == [1]


def test_bad_data_stops_before_training(shop) -> None:
    _ci(shop)
    from conveyor.store.metadata import Store

    with Store(shop.config().store_url()) as store:
        runs_before = len(store.runs())
    bad = rows()
    bad.loc[[3, 7, 11], "region"] = "atlantis"
    bad.loc[5, "spend"] = -50.0
    write_data(shop.root, bad)
    outcome = _ci(shop)
    assert not outcome.passed and outcome.run_id is None
    [gate] = outcome.failed_gates
    assert gate["kind"] == "validation"
    failures = {f["column"]: f for f in gate["evidence"]["failures"]}
    assert failures["region"]["failing_rows"] == 3
    assert [e["row"] for e in failures["region"]["examples"]] == [3, 7, 11]
    assert failures["spend"]["failing_rows"] == 1
    with Store(shop.config().store_url()) as store:
        assert len(store.runs()) == runs_before  # no training time spent
    assert "atlantis" in (shop.root / "report.md").read_text()


def test_drift_against_the_production_training_data(shop) -> None:
    from conveyor.actions.models import set_alias

    _ci(shop)
    set_alias(shop.config(), None, 1, "production")
    schema = shop.root / "schemas" / "rows.yaml"
    schema.write_text(schema.read_text().replace("max: 59.0", "max: 200.0"))
    write_data(shop.root, rows(seed=1, shift=1.0))
    outcome = _ci(shop)
    drift = next(g for g in outcome.report["gates"] if g["kind"] == "drift")
    assert drift["verdict"] == "fail" and "tenure" in drift["evidence"]["drifted"]
    assert drift["evidence"]["production_version"] == 1


def test_card_show_and_compare_tell_the_story(shop) -> None:
    from conveyor.actions.models import compare_versions, render_card, set_alias, version_story

    _ci(shop)
    set_alias(shop.config(), None, 1, "production")
    shop.write("conveyor.yaml", CONFIG.replace("C: 1.0", "C: 0.5"))
    second = _ci(shop)
    assert second.version == 2, [g["summary"] for g in second.report["gates"]]
    markdown, written = render_card(shop.config(), None, "2", shop.root / "cards")
    assert "Rank customers for a retention call." in markdown
    assert [p.name for p in written] == ["churn-v2.md", "churn-v2.html"]
    html = written[1].read_text()
    assert "data:image/svg+xml;base64," in html and "not worse than production" in html
    story = version_story(shop.config(), None, "production")
    assert story["version"] == 1 and story["aliases"] == ["production"]
    comparison = compare_versions(shop.config(), None, "production", "2")
    assert {c["metric"] for c in comparison["comparisons"]} >= {"roc_auc", "accuracy"}


def test_a_tampered_production_model_is_refused_by_name(shop) -> None:
    from conveyor.actions.models import open_registry, set_alias

    first = _ci(shop)
    set_alias(shop.config(), None, 1, "production")
    with open_registry(shop.config()) as registry:
        digest = registry.version("churn", 1).file.digest
        path = registry.artifacts.path(digest, verify=False)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    shop.write("conveyor.yaml", CONFIG.replace("C: 1.0", "C: 0.7"))
    with pytest.raises(ModelTampered, match="model 'churn' version 1"):
        _ci(shop)
    assert first.version == 1


def test_problems_known_before_training_are_errors_first(shop) -> None:
    shop.write("conveyor.yaml", CONFIG.replace("- roc_auc >= 0.55", "- ece >= production.ece"))
    with pytest.raises(GateError, match=r"gates\[0\].*'ece' has no paired test"):
        _ci(shop)
    shop.write(
        "conveyor.yaml", CONFIG.replace("- roc_auc >= 0.55", "- log_loss >= production.log_loss")
    )
    with pytest.raises(GateError, match="lower log_loss is better.*did you mean '<='"):
        _ci(shop)
    shop.write("conveyor.yaml", CONFIG.replace("schemas/rows.yaml", "schemas/nope.yaml"))
    with pytest.raises(DataError, match="validate.rows: schema file .*nope.yaml' does not exist"):
        _ci(shop)
    shop.write("conveyor.yaml", CONFIG.replace("metric: recall", "metric: recal"))
    with pytest.raises(ConfigError, match="did you mean 'recall'"):
        _ci(shop)
    from conveyor.store.metadata import Store

    with Store(
        shop.config().store_url() if False else f"sqlite:///{shop.root}/.conveyor/conveyor.db"
    ) as store:
        assert store.runs() == []


def test_cli_exit_codes_and_json(shop) -> None:
    from tests.cli.test_cli import conveyor

    ok = conveyor(
        "ci",
        "-C",
        shop.root,
        "--report",
        shop.root / "r.md",
        "--junit",
        shop.root / "j.xml",
        "--json",
    )
    assert ok.code == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == 1
    assert conveyor("models", "alias", "1", "production", "-C", shop.root).code == 0
    shop.write("conveyor.yaml", CONFIG.replace("[tenure, spend, region]", "[spend, region]"))
    refused = conveyor(
        "ci", "-C", shop.root, "--report", shop.root / "r.md", "--junit", shop.root / "j.xml"
    )
    assert refused.code == 3
    assert "gates did not pass" in refused.stdout and "not worse than production" in refused.stdout
    listing = conveyor("models", "list", "-C", shop.root)
    assert listing.code == 0 and "production" in listing.stdout
    card = conveyor("models", "card", "churn", "1", "-C", shop.root)
    assert card.code == 0 and "Rank customers" in card.stdout
    missing = conveyor("models", "show", "churn", "9", "-C", shop.root)
    assert missing.code == 1 and "has no version 9 (latest is 1)" in missing.stderr
