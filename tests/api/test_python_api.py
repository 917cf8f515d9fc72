"""The public Python API end to end on a real project: a SQLite store and an artifact folder in
tmp_path, the real gates and the servability check in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import conveyor
from conveyor.exceptions import ModelNotFound, RegistryError, UnsafeModelFile
from tests.api.conftest import FEATURES, fitted

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def dashboard(config: Any) -> Iterator[str]:
    """`conveyor ui` on uvicorn in a thread of this process, on a free loopback port."""
    import uvicorn

    from conveyor.dashboard.app import Dashboard
    from tests.gateway.servers import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Dashboard(config, token=None), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_public_api_is_exactly_these_names() -> None:
    assert conveyor.__all__ == [
        "ConveyorError",
        "LoadedModel",
        "Project",
        "RegistrationRefused",
        "Run",
        "__version__",
        "load_model",
        "log_artifact",
        "log_metric",
        "log_metrics",
        "log_param",
        "open_project",
        "register",
        "start_run",
    ]
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None
    assert set(conveyor.__all__) <= set(dir(conveyor))
    with pytest.raises(AttributeError, match="no attribute 'load_models'"):
        conveyor.load_models  # noqa: B018


def test_import_conveyor_stays_light() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import conveyor"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    heavy = {"pandas", "sklearn", "sqlalchemy", "numpy", "pydantic", "conveyor.actions"}
    assert not heavy & imported, sorted(heavy & imported)


def test_register_judges_with_the_project_gates_and_load_model_predicts_alike(
    api_project: Path,
) -> None:
    model, X_test, y_test = fitted(api_project)
    version = conveyor.register(
        model, name="churn", data=(X_test, y_test), path=api_project, aliases=("production",)
    )

    assert version.version == 1 and version.aliases == ["production"]
    assert [g["name"] for g in version.gates] == ["roc_auc >= 0.7", "size <= 5 MB", "servable"]
    assert all(g["verdict"] == "pass" for g in version.gates)
    assert version.metrics["roc_auc"] > 0.7 and version.file.format == "skops"
    assert version.lineage["source"] == "registered from Python"
    assert version.signature["output"]["classes"] == ["no", "yes"]

    project = conveyor.open_project(api_project / "notebooks")
    for ref in ("churn@production", "churn:1", "churn", "churn:latest"):
        loaded = conveyor.load_model(ref, project=project)
        assert loaded.version == 1
        assert list(loaded.predict(X_test)) == list(model.predict(X_test))
        np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test))
    # extra columns (the target, an id) are left out as the gateway leaves them out
    with_target = X_test.assign(label=y_test, id=range(len(X_test)))
    assert list(loaded.predict(with_target)) == list(model.predict(X_test))


def test_load_model_errors_name_what_was_not_found_and_what_exists(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)
    conveyor.register(
        model, name="churn", data=(X_test, y_test), path=api_project, aliases=("production",)
    )

    with pytest.raises(ModelNotFound, match=r"no alias 'staging' \(aliases: production\)"):
        conveyor.load_model("churn@staging", path=api_project)
    with pytest.raises(ModelNotFound, match=r"no version 7 \(latest is 1\)"):
        conveyor.load_model("churn:7", path=api_project)
    with pytest.raises(ModelNotFound, match=r"No model 'churm' .* Registered models: churn"):
        conveyor.load_model("churm@production", path=api_project)
    with pytest.raises(RegistryError, match=r"for an alias write 'churn@prod'"):
        conveyor.load_model("churn:prod", path=api_project)
    with pytest.raises(RegistryError, match="does not name a model version"):
        conveyor.load_model("@production", path=api_project)
    loaded = conveyor.load_model("churn@production", path=api_project)
    with pytest.raises(conveyor.ConveyorError, match=r"lacks column\(s\) 'f3'.* takes f0, f1"):
        loaded.predict(X_test.drop(columns=["f3"]))


def test_load_model_refuses_a_type_the_project_no_longer_trusts(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)
    conveyor.register(model, name="churn", data=(X_test, y_test), path=api_project)
    config = api_project / "conveyor.yaml"
    config.write_text(config.read_text().replace("  trusted_types: [features.Clip]\n", ""))

    with pytest.raises(UnsafeModelFile, match="features.Clip"):
        conveyor.load_model("churn:1", path=api_project)


def test_a_refused_model_is_not_registered_and_says_which_gate(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)

    with pytest.raises(conveyor.RegistrationRefused, match=r"roc_auc >= 0.999: fail") as info:
        conveyor.register(
            model, name="churn", data=(X_test, y_test), path=api_project, gates=["roc_auc >= 0.999"]
        )

    assert [(g["name"], g["verdict"]) for g in info.value.gates] == [("roc_auc >= 0.999", "fail")]
    with pytest.raises(ModelNotFound):
        conveyor.load_model("churn", path=api_project)
    from conveyor.actions.runs import describe_run, list_events, list_runs

    project = conveyor.open_project(api_project)
    (run,) = list_runs(project.config)
    assert run["status"] == "failed"
    assert "RegistrationRefused" in describe_run(project.config, run["run_id"])["error"]
    kinds = [e["kind"] for e in list_events(project.config)]
    assert "candidate.rejected" in kinds and "model.registered" not in kinds


def test_gates_given_in_python_are_checked_like_conveyor_yaml(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)

    with pytest.raises(conveyor.ConveyorError, match=r"gates\[0\] \('roc_auc >> 0.8'\) is not"):
        conveyor.register(
            model, name="churn", data=(X_test, y_test), path=api_project, gates=["roc_auc >> 0.8"]
        )
    with pytest.raises(conveyor.ConveyorError, match="metrics\\['roc_auc'\\] is computed"):
        conveyor.register(
            model, name="churn", data=(X_test, y_test), path=api_project, metrics={"roc_auc": 0.99}
        )
    version = conveyor.register(
        model,
        name="churn",
        data=(X_test, y_test),
        path=api_project,
        gates=None,
        metrics={"cv_roc_auc": 0.81},
    )
    assert [g["name"] for g in version.gates] == ["servable"]
    assert version.metrics["cv_roc_auc"] == 0.81


def test_start_run_records_a_run_like_a_pipeline_run(api_project: Path) -> None:
    from conveyor.actions.runs import describe_run, list_runs

    project = conveyor.open_project(api_project)
    artifact = api_project / "notes.txt"
    artifact.write_text("tried C=0.5 and C=1\n")
    with conveyor.start_run("tuning", project=project, params={"C": 0.5}) as run:
        run.log_metric("loss", 0.9)
        run.log_metric("loss", 0.7)
        conveyor.log_metric("roc_auc", 0.81)  # the module-level functions record here too
        conveyor.log_param("solver", "lbfgs")
        digest = run.log_artifact(artifact)

    with pytest.raises(conveyor.ConveyorError, match="outside a pipeline step"):
        conveyor.log_metric("after", 1.0)
    with pytest.raises(conveyor.ConveyorError, match="has ended"):
        run.log_metric("after", 1.0)
    (row,) = list_runs(project.config)
    assert row["run_id"] == run.id and row["status"] == "succeeded"
    assert row["steps"] == {"ran": 1}
    shown = describe_run(project.config, run.id)
    (step,) = shown["steps"]
    assert step["step"] == "tuning" and step["status"] == "ran"
    text = json.dumps(shown)
    for fragment in ('"loss"', '"roc_auc"', '"solver"', '"C"', digest):
        assert fragment in text


def test_a_block_that_raises_ends_its_run_failed_and_register_inside_links_it(
    api_project: Path,
) -> None:
    from conveyor.actions.runs import describe_run

    model, X_test, y_test = fitted(api_project)
    project = conveyor.open_project(api_project)
    with conveyor.start_run("notebook", project=project) as ok:
        ok.log_param("C", 1.0)
        version = conveyor.register(model, name="churn", data=(X_test, y_test), project=project)
    assert version.run_id == ok.id
    assert version.lineage["params"] == {"notebook": {"C": 1.0}}

    with pytest.raises(ZeroDivisionError):
        with conveyor.start_run("broken", project=project) as bad:
            bad.log_metric("partial", 1.0)
            _ = 1 / 0
    shown = describe_run(project.config, bad.id)
    assert shown["status"] == "failed" and "ZeroDivisionError" in shown["error"]
    assert "partial" in json.dumps(shown)  # what was logged before the error is kept


def test_load_model_works_in_a_fresh_process_from_the_project_folder(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)
    conveyor.register(
        model, name="churn", data=(X_test, y_test), path=api_project, aliases=("production",)
    )
    X_test.to_csv(api_project / "rows.csv", index=False)
    script = (
        "import json, pandas, conveyor\n"
        "m = conveyor.load_model('churn@production')\n"
        "rows = pandas.read_csv('../rows.csv')\n"
        "print(json.dumps({'v': m.version, 'p': m.predict(rows).tolist(),"
        " 'q': m.predict_proba(rows).tolist()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # from a subfolder: the project's own module (features.Clip) is found only through
    # load_model putting the project on the path
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=api_project / "notebooks",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["v"] == 1
    assert answer["p"] == list(model.predict(X_test))
    np.testing.assert_allclose(answer["q"], model.predict_proba(X_test))
    assert FEATURES == list(X_test.columns)


def test_the_dashboard_shows_a_python_run_like_a_pipeline_run(api_project: Path) -> None:
    model, X_test, y_test = fitted(api_project)
    project = conveyor.open_project(api_project)
    with conveyor.start_run("notebook", project=project) as run:
        run.log_metric("cv_auc", 0.8)
        run.log_param("C", 1.0)
        conveyor.register(model, name="churn", data=(X_test, y_test), project=project)

    with dashboard(project.config) as url, httpx.Client(base_url=url, timeout=30) as client:
        runs = client.get("/runs.json").json()
        page = client.get(f"/runs/{run.id}.json").json()
        html = client.get(f"/runs/{run.id}")
    assert [(r["run_id"], r["status"], r["steps"]) for r in runs["runs"]] == [
        (run.id, "succeeded", {"ran": 1})
    ]
    assert [(s["step"], s["status"]) for s in page["steps"]] == [("notebook", "ran")]
    assert page["params"] == {"notebook": {"C": 1.0}}
    assert page["metrics"]["notebook"]["cv_auc"]["last"] == 0.8
    assert page["metrics"]["notebook"]["roc_auc"]["last"] > 0.7  # register's evaluation
    assert [v["version"] for v in page["versions"]] == [1]
    assert html.status_code == 200 and run.id in html.text


def test_ctrl_c_inside_a_run_ends_it_interrupted(api_project: Path) -> None:
    from conveyor.actions.runs import describe_run

    project = conveyor.open_project(api_project)
    with pytest.raises(KeyboardInterrupt):
        with conveyor.start_run("long", project=project) as run:
            run.log_metric("epoch", 1)
            raise KeyboardInterrupt
    shown = describe_run(project.config, run.id)
    assert shown["status"] == "interrupted"
    assert [(s["step"], s["status"]) for s in shown["steps"]] == [("long", "failed")]
    assert run.status == "interrupted"


def test_nothing_inside_conveyor_takes_the_lazy_names_from_the_root_package() -> None:
    # conveyor/__init__.py is in no import-linter layer; a module importing load_model & co.
    # from it would depend on actions/ without the contract seeing it.
    import ast

    lazy = set(conveyor._LAZY)
    offenders = []
    for path in (REPO / "src" / "conveyor").rglob("*.py"):
        if "templates" in path.parts:
            continue  # the example project is user code
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "conveyor":
                used = lazy & {alias.name for alias in node.names}
                offenders += [f"{path.relative_to(REPO)}: {name}" for name in sorted(used)]
    assert not offenders
