"""`conveyor config schema` and `conveyor config check`, through their own Typer app (the main
app registers it as the `config` group)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.config import config_app
from conveyor.config import load_config
from conveyor.config.base import all_models
from conveyor.config.project import ProjectConfig

TEMPLATE = Path(__file__).parents[2] / "src/conveyor/actions/templates/loans/conveyor.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

BROKEN = """\
project: p
serve:
  thread: 2
deploy:
  staging: {analysis: {min_agreemnt: 0.5}}
pipeline:
  train: {run: m:train, inputs: [prep]}
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def schema_file(tmp_path: Path, runner: CliRunner) -> Path:
    result = runner.invoke(config_app, ["schema"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "conveyor.schema.json"
    path.write_text(result.stdout)
    return path


def _validate(schema: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(schema), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_schema_is_valid_json_schema_and_accepts_the_example_project(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["project"]
    meta = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--check-metaschema", str(schema_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert meta.returncode == 0, meta.stdout + meta.stderr
    # The file `conveyor init` copies, with gate shorthands such as "roc_auc >= 0.70".
    result = _validate(schema_file, TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_accepts_every_documented_example_and_shorthand(
    schema_file: Path, tmp_path: Path
) -> None:
    examples = [m.yaml_example for m in all_models(ProjectConfig).values() if m.yaml_example]
    sample = tmp_path / "conveyor.yaml"
    sample.write_text("".join(e.lstrip("\n") for e in examples) + "x-defaults: &fit {a: 1}\n")
    load_config(sample, env={})  # the reference's examples are a valid project together
    empty = tmp_path / "empty.yaml"
    empty.write_text(
        textwrap.dedent(
            """
            project: p
            registry:
            serve: {batch: , log: {sample: 0.5}}
            deploy: {staging: {analysis: , steps: }}
            monitor:
            """
        )
    )
    load_config(empty, env={})
    result = _validate(schema_file, sample, empty)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_refuses_what_the_loader_refuses(schema_file: Path, tmp_path: Path) -> None:
    texts = [
        "project: p\nserve: {thread: 2}\n",
        "project: p\nexecutor: dask\n",
        "project: p\ndeploy: {staging: {strategy: sideways}}\n",
        "project: p\nmonitor: {window: soon}\n",
        "project: p\ngates: [{check: a > 1, fairness: 1}]\n",
        "serve: {}\n",
    ]
    files = []
    for index, text in enumerate(texts):
        files.append(tmp_path / f"bad{index}.yaml")
        files[-1].write_text(text)
    result = _validate(schema_file, *files)
    assert result.returncode == 1
    refused = {line.split("::")[0].strip() for line in result.stdout.splitlines() if "::" in line}
    assert refused == {str(f) for f in files}


@pytest.mark.slow
def test_schema_accepts_the_project_conveyor_init_creates(
    schema_file: Path, tmp_path: Path
) -> None:
    from conveyor.actions.init import init_project

    init_project(tmp_path / "loans")
    result = _validate(schema_file, tmp_path / "loans" / "conveyor.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_every_problem_with_key_and_line(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "conveyor.yaml").write_text(BROKEN)
    result = runner.invoke(config_app, ["check", "-C", str(tmp_path)])
    assert result.exit_code == 2
    path = tmp_path.resolve() / "conveyor.yaml"
    assert result.stdout.splitlines() == [
        f"{path}:3: serve: unknown key 'thread'; did you mean 'threads'?",
        f"{path}:5: deploy.staging.analysis: unknown key 'min_agreemnt'; did you mean "
        "'min_agreement'?",
        f"{path}:7: pipeline.train.inputs[0]: unknown step 'prep'; there are no other steps",
    ]
    assert result.stderr == f"3 problems in {path}.\n"


def test_check_json_and_an_explicit_file(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "other.yaml").write_text(BROKEN)
    result = runner.invoke(config_app, ["check", "--json", str(tmp_path / "other.yaml")])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["problems"][0] == {
        "key": "serve",
        "line": 3,
        "message": "unknown key 'thread'; did you mean 'threads'?",
    }
    assert [p["line"] for p in report["problems"]] == [3, 5, 7]


def test_check_passes_a_good_file(tmp_path: Path, runner: CliRunner) -> None:
    shutil.copyfile(TEMPLATE, tmp_path / "conveyor.yaml")
    result = runner.invoke(config_app, ["check", "-C", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (
        0,
        f"{tmp_path.resolve() / 'conveyor.yaml'}: no problems.\n",
    )
    result = runner.invoke(config_app, ["check", "-C", str(tmp_path), "conveyor.yaml", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "file": str(tmp_path / "conveyor.yaml"),
        "ok": True,
        "problems": [],
    }


def test_check_without_a_project_says_how_to_start_one(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(config_app, ["check", "-C", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: No conveyor.yaml in {tmp_path.resolve()}")
    assert "conveyor init" in result.stderr


def test_check_reports_an_unparsable_file_without_a_line(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "conveyor.yaml").write_text("# nothing\n")
    result = runner.invoke(config_app, ["check", "-C", str(tmp_path)])
    assert result.exit_code == 2
    path = tmp_path.resolve() / "conveyor.yaml"
    assert result.stdout == (
        f"{path}: the file is empty; start it with a line such as 'project: loans'\n"
    )
