"""`conveyor data infer|validate|diff`, `conveyor models ...` and `conveyor export ...`, driven
through the real commands in-process on a small generated churn project.

Registering a version costs a `conveyor ci` (a few seconds), so the module pays for two once:
version 1, then version 2 on more rows with a shifted column. Each test that reads or moves the
registry works on a copy of one of those two states (``.conveyor/`` included); the rest need no
registry and write their project from scratch.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.churn_project import STEPS, backdate, rows, write_data
from tests.cli.test_cli import CONVEYOR_VARS, conveyor

PIPELINE = """
project: shop
data:
  rows: data/rows.csv
pipeline:
  prepare: {run: shop:prepare, inputs: [data.rows]}
  train:
    run: shop:train
    inputs: [prepare.train]
    params: {features: [tenure, spend, region], C: 1.0}
  evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
"""

MODEL = """
model:
  name: churn
  from: train
  holdout: prepare.test
  target: churned
  slices: [region]
  intended_use: Rank customers for a retention call.
"""

VALIDATE = """
validate:
  rows: {schema: schemas/rows.yaml}
"""

GATES = """
gates:
  - roc_auc >= 0.55
  - fairness: {group: region, metric: recall, max_gap: 0.5}
"""

# The registry project has no `validate:`: its second version is trained on shifted data that
# the first data's schema would refuse.
REGISTRY_CONFIG = PIPELINE + MODEL + GATES
CHECKED_CONFIG = PIPELINE + MODEL + VALIDATE + GATES
NO_MODEL_CONFIG = PIPELINE
KINDS = {
    "github-actions": ".github/workflows/conveyor.yml",
    "gitlab-ci": ".gitlab-ci.yml",
    "jenkins": "Jenkinsfile",
}
CI_INTERVAL = re.compile(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]")


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    backdate(path)
    return path


def _make_shop(root: Path, config: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write(root, "shop.py", STEPS)
    _write(root, "conveyor.yaml", config)
    write_data(root, rows())
    return root


def _ci(root: Path) -> None:
    done = conveyor("ci", "-C", root, "--report", root / "r.md", "--junit", root / "j.xml")
    assert done.code == 0, done.stdout + done.stderr


def _copy(state: Path, tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    shutil.copytree(state, root)
    return root


def _json(*args: str | Path) -> object:
    done = conveyor(*args, "--json")
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)


def _line(text: str, start: str) -> str:
    """The one line of ``text`` that starts with ``start`` (after indentation)."""
    found = [line for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, text
    return found[0]


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The registry project after its first `conveyor ci` and after its second."""
    base = tmp_path_factory.mktemp("registry")
    root = _make_shop(base / "live", REGISTRY_CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        for var in CONVEYOR_VARS:  # the autouse isolation of conftest is per test
            mp.delenv(var, raising=False)
        mp.setenv("XDG_CACHE_HOME", str(base / ".cache"))
        _ci(root)
        one = shutil.copytree(root, base / "one")
        shifted = rows(n=3600, seed=1)
        shifted["spend"] *= 1.5
        write_data(root, shifted)
        _ci(root)
    return {"one": one, "two": root}


@pytest.fixture
def one_version(states: dict[str, Path], tmp_path: Path) -> Path:
    return _copy(states["one"], tmp_path)


@pytest.fixture
def two_versions(states: dict[str, Path], tmp_path: Path) -> Path:
    return _copy(states["two"], tmp_path)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The project with `validate: {rows: schemas/rows.yaml}` and no schema file yet."""
    return _make_shop(tmp_path / "proj", CHECKED_CONFIG)


# -- data infer -------------------------------------------------------------------------------


def test_data_infer_writes_the_default_schema_and_never_overwrites_it_silently(
    tmp_path: Path,
) -> None:
    root = _make_shop(tmp_path / "proj", REGISTRY_CONFIG)  # no validate: the plain default
    schema = root / "schemas" / "rows.yaml"

    done = conveyor("data", "infer", "rows", "-C", root)
    assert done.code == 0, done.stderr
    assert done.stdout == f"Wrote {schema} (4 columns).\n"
    text = schema.read_text()
    assert "from 3,000 rows" in text
    columns = yaml.safe_load(text)["columns"]
    assert list(columns) == ["tenure", "spend", "region", "churned"]
    assert columns["region"]["allowed"] == ["east", "north", "south"]
    assert columns["tenure"]["min"] == 1.0 and columns["tenure"]["max"] <= 59.0

    again = conveyor("data", "infer", "rows", "-C", root)
    assert again.code == 1 and again.stdout == ""
    assert str(schema) in again.stderr and "--force" in again.stderr
    assert schema.read_text() == text

    write_data(root, rows(n=3600, seed=1))
    forced = conveyor("data", "infer", "rows", "--force", "-C", root)
    assert forced.code == 0, forced.stderr
    assert "from 3,600 rows" in schema.read_text()


def test_data_infer_writes_where_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _make_shop(tmp_path / "proj", CHECKED_CONFIG.replace("rows.yaml", "churn-rows.yaml"))
    elsewhere = tmp_path / "out" / "rows-schema.yaml"
    done = conveyor("data", "infer", "rows", "-o", elsewhere, "-C", root)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith(f"Wrote {elsewhere} ")
    assert yaml.safe_load(elsewhere.read_text())["columns"]["spend"]["dtype"] == "float"
    assert not (root / "schemas").exists()

    # Without -o, the file `validate:` names.
    assert conveyor("data", "infer", "rows", "-C", root).code == 0
    assert (root / "schemas" / "churn-rows.yaml").is_file()

    monkeypatch.chdir(root)
    done = conveyor("data", "infer", "rows", "--output", "s/r.yaml")
    assert done.code == 0, done.stderr
    assert (root / "s" / "r.yaml").is_file()


def test_data_infer_of_an_unknown_source_names_the_known_ones(shop: Path) -> None:
    done = conveyor("data", "infer", "customers", "-C", shop)
    assert done.code == 1 and done.stdout == ""
    assert "No data source 'customers'" in done.stderr
    assert "known sources: rows" in done.stderr
    assert not (shop / "schemas").exists()


# -- data validate ----------------------------------------------------------------------------


def _bad_rows() -> pd.DataFrame:
    bad = rows()
    bad.loc[[3, 7, 11], "region"] = "atlantis"  # a category the schema does not allow
    bad.loc[5, "spend"] = -50.0  # below the inferred min
    return bad


def test_data_validate_passes_on_the_data_the_schema_came_from(shop: Path) -> None:
    assert conveyor("data", "infer", "rows", "-C", shop).code == 0
    done = conveyor("data", "validate", "rows", "-C", shop)
    assert done.code == 0, done.stdout + done.stderr
    assert "3,000 rows × 4 columns; every check holds" in done.stdout
    verdict = _json("data", "validate", "rows", "-C", shop)
    assert verdict["verdict"] == "pass" and verdict["blocks"] is False
    assert verdict["evidence"]["failures"] == [] and verdict["evidence"]["rows"] == 3000


def test_data_validate_prints_every_failing_check_and_exits_3(shop: Path) -> None:
    assert conveyor("data", "infer", "rows", "-C", shop).code == 0
    write_data(shop, _bad_rows())

    done = conveyor("data", "validate", "rows", "-C", shop)
    assert done.code == 3, done.stderr
    assert done.stderr == ""
    region = _line(done.stdout, "region:")
    assert "allowed('east', 'north', 'south') failed for 3 rows" in region
    assert "row 3: 'atlantis', row 7: 'atlantis', row 11: 'atlantis'" in region
    spend = _line(done.stdout, "spend:")
    assert "in_range(" in spend and "failed for 1 row, e.g. row 5: -50.0" in spend
    assert "tenure" not in done.stdout and "churned" not in done.stdout

    as_json = conveyor("data", "validate", "rows", "--json", "-C", shop)
    assert as_json.code == 3
    verdict = json.loads(as_json.stdout)
    assert verdict["name"] == "data validation: rows"
    assert verdict["verdict"] == "fail" and verdict["blocks"] is True
    failures = {f["column"]: f for f in verdict["evidence"]["failures"]}
    assert set(failures) == {"region", "spend"}
    assert failures["region"]["failing_rows"] == 3
    assert failures["region"]["examples"] == [
        {"row": 3, "value": "atlantis"},
        {"row": 7, "value": "atlantis"},
        {"row": 11, "value": "atlantis"},
    ]
    assert failures["spend"]["failing_rows"] == 1
    assert failures["spend"]["examples"] == [{"row": 5, "value": -50.0}]


def test_data_validate_with_a_schema_file_given(tmp_path: Path) -> None:
    root = _make_shop(tmp_path / "proj", REGISTRY_CONFIG)  # nothing in validate:
    missing = conveyor("data", "validate", "rows", "-C", root)
    assert missing.code == 1
    assert "has no schema in 'validate:'" in missing.stderr
    assert "--schema FILE" in missing.stderr and "conveyor data infer rows" in missing.stderr

    assert conveyor("data", "infer", "rows", "-o", "checks/rows.yaml", "-C", root).code == 0
    good = conveyor("data", "validate", "rows", "--schema", "checks/rows.yaml", "-C", root)
    assert good.code == 0, good.stdout + good.stderr
    assert "Validation passed" in good.stdout

    write_data(root, _bad_rows())
    bad = conveyor("data", "validate", "rows", "--schema", "checks/rows.yaml", "-C", root)
    assert bad.code == 3
    assert "failed for 3 rows" in _line(bad.stdout, "region:")
    assert "Validation failed: 2 check(s) failed" in bad.stdout

    nowhere = conveyor("data", "validate", "rows", "--schema", "nope.yaml", "-C", root)
    assert nowhere.code == 1 and "nope.yaml" in nowhere.stderr


def test_data_validate_json_with_a_schema_file_has_the_verdict_and_failures(
    tmp_path: Path,
) -> None:
    root = _make_shop(tmp_path / "proj", REGISTRY_CONFIG)
    assert conveyor("data", "infer", "rows", "-o", "checks/rows.yaml", "-C", root).code == 0
    write_data(root, _bad_rows())
    done = conveyor(
        "data", "validate", "rows", "--schema", "checks/rows.yaml", "--json", "-C", root
    )
    assert done.code == 3
    verdict = json.loads(done.stdout)
    assert verdict.get("verdict") == "fail"
    failures = {f["column"]: f["failing_rows"] for f in verdict["evidence"]["failures"]}
    assert failures == {"region": 3, "spend": 1}


# -- data diff --------------------------------------------------------------------------------


def test_data_diff_shows_the_rows_and_the_shifted_mean(two_versions: Path) -> None:
    root = two_versions
    diff = _json("data", "diff", "rows~1", "rows", "-C", root)
    assert set(diff) == {"a", "b", "rows", "columns", "changes"}
    assert diff["rows"] == {"before": 3000, "after": 3600, "added": 600, "removed": 0}
    assert diff["columns"] == {"added": [], "removed": [], "type_changed": {}}
    spend = diff["changes"]["spend"]["mean"]
    assert spend["after"] > 1.3 * spend["before"]  # the column scaled by 1.5
    assert abs(diff["changes"]["tenure"]["mean"]["change"]) < 3
    assert diff["a"]["id"] != diff["b"]["id"] and diff["a"]["id"].startswith("rows:")

    done = conveyor("data", "diff", "rows~1", "rows", "-C", root)
    assert done.code == 0, done.stderr
    assert f"{diff['a']['id']} → {diff['b']['id']}" in done.stdout
    assert "rows 3,000 → 3,600 (+600 / −0 net)" in done.stdout
    assert f"{spend['before']:.4f} → {spend['after']:.4f}" in _line(done.stdout, "spend")

    # A snapshot id (or a unique prefix of it) names the same snapshot.
    by_id = _json("data", "diff", diff["a"]["id"][:12], diff["b"]["id"], "-C", root)
    assert by_id["rows"] == diff["rows"]


def test_data_diff_of_an_unknown_reference_says_what_would_work(two_versions: Path) -> None:
    root = two_versions
    unknown = conveyor("data", "diff", "customers", "rows", "-C", root)
    assert unknown.code == 1 and unknown.stdout == ""
    assert "No snapshot matches 'customers'" in unknown.stderr
    assert "source name (rows)" in unknown.stderr and "SOURCE~N" in unknown.stderr

    too_far = conveyor("data", "diff", "rows~5", "rows", "-C", root)
    assert too_far.code == 1
    assert "has 2 profiled snapshot(s); 'rows~5' asks for number 6" in too_far.stderr

    not_a_number = conveyor("data", "diff", "rows~x", "rows", "-C", root)
    assert not_a_number.code == 1 and "SOURCE~N with N a number" in not_a_number.stderr

    no_alias = conveyor("data", "diff", "rows@production", "rows", "-C", root)
    assert no_alias.code == 1
    assert "has no alias 'production' (aliases: none)" in no_alias.stderr


def test_data_diff_against_the_data_production_was_trained_on(two_versions: Path) -> None:
    root = two_versions
    assert conveyor("models", "alias", "1", "production", "-C", root).code == 0
    trained = _json("data", "diff", "rows@production", "rows", "-C", root)
    previous = _json("data", "diff", "rows~1", "rows", "-C", root)
    assert trained["a"]["id"] == previous["a"]["id"]
    assert trained["rows"] == {"before": 3000, "after": 3600, "added": 600, "removed": 0}

    done = conveyor("data", "diff", "rows@production", "rows", "-C", root)
    assert done.code == 0 and "rows 3,000 → 3,600" in done.stdout

    elsewhere = conveyor("data", "diff", "tenure@production", "rows", "-C", root)
    assert elsewhere.code == 1
    assert "was not trained on source 'tenure'" in elsewhere.stderr


# -- models list and show ---------------------------------------------------------------------


def test_models_list_the_versions_newest_first(two_versions: Path) -> None:
    root = two_versions
    done = conveyor("models", "list", "-C", root)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["version", "aliases", "created"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "1"]
    assert "roc_auc 0." in lines[1] and "skops" in lines[1]

    rows = _json("models", "list", "churn", "-C", root)
    assert [r["version"] for r in rows] == [2, 1]
    assert {r["model"] for r in rows} == {"churn"}
    assert rows[0]["metrics"]["roc_auc"] > 0.7 and rows[0]["aliases"] == []
    assert conveyor("models", "list", "churn", "-C", root).stdout == done.stdout

    unknown = conveyor("models", "list", "loans", "-C", root)
    assert unknown.code == 1 and "No model 'loans'" in unknown.stderr
    assert "Registered models: churn" in unknown.stderr


def test_models_list_without_a_model_section_lists_the_models(two_versions: Path) -> None:
    root = two_versions
    _write(root, "conveyor.yaml", NO_MODEL_CONFIG)
    done = conveyor("models", "list", "-C", root)
    assert done.code == 0, done.stderr
    row = _line(done.stdout, "churn").split()
    assert row[:3] == ["churn", "2", "2"]
    [model] = _json("models", "list", "-C", root)
    assert model["model"] == "churn" and model["latest"] == 2 and model["versions"] == 2
    assert [r["version"] for r in _json("models", "list", "churn", "-C", root)] == [2, 1]


def test_models_list_on_an_empty_store_without_a_model_section(tmp_path: Path) -> None:
    root = _make_shop(tmp_path / "proj", NO_MODEL_CONFIG)
    done = conveyor("models", "list", "-C", root)
    assert done.code == 0 and "No registered models yet. Run 'conveyor ci'." in done.stdout
    assert _json("models", "list", "-C", root) == []


def test_models_list_before_the_first_version_is_empty_not_an_error(shop: Path) -> None:
    done = conveyor("models", "list", "-C", shop)
    assert done.code == 0, done.stderr
    assert "conveyor ci" in done.stdout
    assert _json("models", "list", "-C", shop) == []


def test_models_show_before_the_first_version_names_the_fix(shop: Path) -> None:
    done = conveyor("models", "show", "-C", shop)
    assert done.code == 1
    assert "No model 'churn'" in done.stderr and "conveyor ci" in done.stderr


def test_models_show_latest_a_number_and_an_unknown_version(one_version: Path) -> None:
    root = one_version
    done = conveyor("models", "show", "-C", root)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("churn version 1\n")
    assert "classification of 'churned'" in done.stdout
    assert re.search(
        r"file skops sha256 [0-9a-f]{64} \(\d+ bytes\); ONNX [0-9a-f]{12}", done.stdout
    )
    assert "✓ pass  roc_auc >= 0.55" in done.stdout
    assert "data rows: rows:" in done.stdout and "3000 rows" in done.stdout
    assert "signature: 3 inputs (tenure:number, spend:number, region:string)" in done.stdout
    assert conveyor("models", "show", "churn", "1", "-C", root).stdout == done.stdout

    story = _json("models", "show", "churn", "latest", "-C", root)
    assert "plots" not in story
    assert story["model"] == "churn" and story["version"] == 1 and story["aliases"] == []
    assert story["metrics"]["roc_auc"] > 0.7
    assert {g["name"]: g["verdict"] for g in story["gates"]} == {
        "roc_auc >= 0.55": "pass",
        "fairness: recall gap across region <= 0.5": "pass",
        "servable": "pass",
    }
    assert story["lineage"]["params"]["train"]["C"] == 1.0
    assert [i["name"] for i in story["signature"]["inputs"]] == ["tenure", "spend", "region"]

    missing = conveyor("models", "show", "churn", "9", "-C", root)
    assert missing.code == 1 and missing.stdout == ""
    assert "has no version 9 (latest is 1)" in missing.stderr


def test_models_show_by_alias(two_versions: Path) -> None:
    root = two_versions
    assert conveyor("models", "alias", "1", "production", "-C", root).code == 0
    done = conveyor("models", "show", "churn", "production", "-C", root)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("churn version 1  (production)\n")
    story = _json("models", "show", "churn", "production", "-C", root)
    assert story["version"] == 1 and story["aliases"] == ["production"]
    assert _json("models", "show", "-C", root)["version"] == 2  # 'latest' is still version 2

    unknown = conveyor("models", "show", "churn", "staging", "-C", root)
    assert unknown.code == 1 and "has no alias 'staging'" in unknown.stderr


# -- models compare, card, alias --------------------------------------------------------------


def test_models_compare_scores_both_on_the_second_holdout(two_versions: Path) -> None:
    root = two_versions
    done = conveyor("models", "compare", "1", "2", "-C", root)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("churn: v1 (a) vs v2 (b) on version 2's holdout (1440 rows)")
    assert _line(done.stdout, "metric").split()[:3] == ["metric", "v1", "v2"]
    auc = _line(done.stdout, "roc_auc")
    assert CI_INTERVAL.search(auc) and auc.split()[-1] == "delong"

    result = _json("models", "compare", "1", "latest", "-m", "churn", "-C", root)
    assert result["a"]["version"] == 1 and result["b"]["version"] == 2
    by_metric = {c["metric"]: c for c in result["comparisons"]}
    assert {"roc_auc", "accuracy"} <= set(by_metric)
    roc = by_metric["roc_auc"]
    assert roc["method"] == "delong" and roc["ci_low"] <= roc["diff"] <= roc["ci_high"]
    assert roc["b"] == pytest.approx(result["b"]["metrics"]["roc_auc"])

    missing = conveyor("models", "compare", "1", "9", "-C", root)
    assert missing.code == 1 and "has no version 9 (latest is 2)" in missing.stderr


def test_models_card_prints_markdown_and_writes_md_and_html(
    one_version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = one_version
    done = conveyor("models", "card", "-C", root)
    assert done.code == 0, done.stderr
    markdown = done.stdout
    assert markdown.startswith("# Model card: churn v1\n")
    assert "## Intended use\n\nRank customers for a retention call." in markdown
    assert "| roc_auc |" in markdown and "## Gates" in markdown

    out = tmp_path / "cards"
    written = conveyor("models", "card", "churn", "1", "-o", out, "-C", root)
    assert written.code == 0, written.stderr
    assert written.stdout == f"Wrote {out / 'churn-v1.md'}\nWrote {out / 'churn-v1.html'}\n"
    assert (out / "churn-v1.md").read_text() == markdown
    html = (out / "churn-v1.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Model card: churn v1</title>" in html

    monkeypatch.chdir(tmp_path)  # a relative DIR is taken from the working directory
    assert conveyor("models", "card", "-o", "here", "-C", root).code == 0
    assert (tmp_path / "here" / "churn-v1.html").is_file()

    missing = conveyor("models", "card", "churn", "4", "-C", root)
    assert missing.code == 1 and "has no version 4 (latest is 1)" in missing.stderr


def test_models_alias_moves_and_is_an_event(two_versions: Path) -> None:
    root = two_versions
    first = conveyor("models", "alias", "1", "production", "-C", root)
    assert first.code == 0, first.stderr
    assert first.stdout == "churn: production -> version 1\n"
    moved = conveyor("models", "alias", "2", "production", "-m", "churn", "-C", root)
    assert moved.code == 0, moved.stderr
    assert moved.stdout == "churn: production -> version 2 (was version 1)\n"
    assert _json("models", "show", "churn", "production", "-C", root)["version"] == 2

    invalid = conveyor("models", "alias", "1", "Prod!", "-C", root)
    assert invalid.code == 1 and invalid.stdout == ""
    assert "'Prod!' is not an alias name" in invalid.stderr and "lowercase" in invalid.stderr
    reserved = conveyor("models", "alias", "1", "latest", "-C", root)
    assert reserved.code == 1 and "'latest' is reserved" in reserved.stderr
    missing = conveyor("models", "alias", "9", "staging", "-C", root)
    assert missing.code == 1 and "has no version 9 (latest is 2)" in missing.stderr
    not_a_number = conveyor("models", "alias", "two", "staging", "-C", root)
    assert not_a_number.code == 2  # a usage error

    events = _json("events", "-C", root)
    moves = [e for e in events if e["kind"] == "alias.moved"]
    assert [(e["entity_id"], e["payload"]) for e in moves] == [
        ("churn", {"alias": "production", "from": None, "to": 1, "reason": "cli"}),
        ("churn", {"alias": "production", "from": 1, "to": 2, "reason": "cli"}),
    ]
    assert events[-1]["kind"] == "alias.moved"  # the refused moves wrote nothing

    listing = conveyor("models", "list", "-C", root)
    assert _line(listing.stdout, "2 ").split()[1] == "production"


# -- ci ---------------------------------------------------------------------------------------


def test_ci_with_a_project_elsewhere_writes_its_report_into_that_project(
    one_version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    done = conveyor("ci", "-C", one_version)

    assert done.code == 0, done.stderr
    assert list(elsewhere.iterdir()) == []
    report, junit = one_version / "conveyor-report.md", one_version / "conveyor-junit.xml"
    assert "churn" in report.read_text() and "<testsuite" in junit.read_text()
    assert f"  wrote {report}\n" in done.stdout and f"  wrote {junit}\n" in done.stdout

    monkeypatch.chdir(one_version)  # from the project itself, the paths read as before
    again = conveyor("ci")
    assert again.code == 0, again.stderr
    assert "  wrote conveyor-report.md\n" in again.stdout
    assert again.stdout.endswith("  wrote conveyor-junit.xml\n")


def test_ci_wait_queues_behind_a_run_as_the_lock_message_says(one_version: Path) -> None:
    import threading
    import time

    from conveyor.pipeline.lock import RunLock

    lock = RunLock(one_version / ".conveyor" / "run.lock").acquire()
    try:
        refused = conveyor("ci", "-C", one_version)
        releaser = threading.Thread(target=lambda: (time.sleep(0.5), lock.release()))
        releaser.start()
        waited = conveyor("ci", "--wait", "-C", one_version)
        releaser.join()
    finally:
        lock.release()

    assert refused.code == 1
    assert "pass --wait to queue behind it." in refused.stderr
    assert waited.code == 0, waited.stderr
    assert re.search(r"^All \d+ gates passed", waited.stdout, flags=re.M), waited.stdout


# -- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_export_writes_the_default_file_once_unless_forced(kind: str, shop: Path) -> None:
    from conveyor import __version__ as conveyor_version

    target = shop / KINDS[kind]
    done = conveyor("export", kind, "-C", shop)
    assert done.code == 0, done.stderr
    assert done.stdout == f"Wrote {target}\n"
    text = target.read_text()
    assert "conveyor ci --report conveyor-report.md --junit conveyor-junit.xml" in text
    assert "'shop'" in text  # the project, in the header
    # no requirements.txt in the project: the exact version that wrote the file
    assert f'pip install "conveyor-ml=={conveyor_version}"' in text

    again = conveyor("export", kind, "-C", shop)
    assert again.code == 1 and again.stdout == ""
    assert f"'{target}' already exists; pass --force to replace it." in again.stderr

    target.write_text("edited by hand\n")
    _write(shop, "requirements.txt", "conveyor-ml\nscikit-learn\n")
    forced = conveyor("export", kind, "--force", "--python", "3.12", "-C", shop)
    assert forced.code == 0, forced.stderr
    text = target.read_text()
    assert "conveyor ci" in text and "3.12" in text
    # the project's requirements and the pinned Conveyor in one pip run
    assert f'pip install -r requirements.txt "conveyor-ml=={conveyor_version}"' in text


def test_export_output_is_relative_to_the_working_directory(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = shop.parent  # the project is the folder 'proj' of its repository
    monkeypatch.chdir(repo)
    done = conveyor("export", "gitlab-ci", "-C", "proj", "-o", ".gitlab-ci.yml")
    assert done.code == 0, done.stderr
    assert done.stdout == f"Wrote {repo / '.gitlab-ci.yml'}\n"
    text = (repo / ".gitlab-ci.yml").read_text()
    assert "- cd proj" in text and '"proj/conveyor-junit.xml"' in text
    assert not (shop / ".gitlab-ci.yml").exists()

    done = conveyor("export", "github-actions", "-C", "proj", "-o", ".github/workflows/ml.yml")
    assert done.code == 0, done.stderr
    assert 'working-directory: "proj"' in (repo / ".github" / "workflows" / "ml.yml").read_text()

    monkeypatch.chdir(shop)
    done = conveyor("export", "github-actions", "--output", "wf.yml")
    assert done.code == 0 and (shop / "wf.yml").is_file()
    assert "working-directory" not in (shop / "wf.yml").read_text()


@pytest.mark.xfail(
    strict=True,
    reason="Known limitation: `conveyor export jenkins -o ci/Jenkinsfile` exits 1: "
    "\"The project '…/proj' is not inside '…/proj/ci', the folder a CI file at "
    "'…/proj/ci/Jenkinsfile' runs from\"; Jenkins (and GitLab with a custom CI file path) runs "
    "from the checkout, not from the file's folder",
)
def test_export_jenkins_into_a_subfolder_as_documented(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(shop)
    done = conveyor("export", "jenkins", "-o", "ci/Jenkinsfile")
    assert done.code == 0, done.stderr
    assert "conveyor ci" in (shop / "ci" / "Jenkinsfile").read_text()


def test_export_refuses_unknown_kinds_and_versions(shop: Path) -> None:
    unknown = conveyor("export", "travis", "-C", shop)
    assert unknown.code == 1 and unknown.stdout == ""
    assert "Unknown CI system 'travis'; choose one of github-actions, gitlab-ci, jenkins." in (
        unknown.stderr
    )
    python = conveyor("export", "jenkins", "--python", "three", "-C", shop)
    assert python.code == 1 and "'three' is not a version such as '3.11'" in python.stderr
    assert not (shop / "Jenkinsfile").exists()
