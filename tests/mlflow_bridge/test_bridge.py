"""The MLflow bridge for real: a model logged with MLflow's own API into a SQLite tracking
store in tmp_path, imported with `conveyor models import`, served by `conveyor serve`, exported
with `conveyor models export --format mlflow` and served by `mlflow models serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import conveyor
from conveyor.exceptions import ModelNotFound, RegistryError, UnsafeModelFile
from tests.gateway.servers import TOKEN, free_port, spawn
from tests.mlflow_bridge.conftest import Logged, log_model

CLI = [sys.executable, "-m", "conveyor.cli.main"]


def conveyor_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.mark.slow
def test_import_a_runs_uri_carries_the_run_and_serves_the_same_answers(
    logged: Logged, target_project: Path
) -> None:
    done = conveyor_cli(
        "models",
        "import",
        f"runs:/{logged.run_id}/model",
        "--name",
        "churn",
        "--tracking-uri",
        logged.tracking_uri,
        "--alias",
        "production",
        "--json",
        "-C",
        target_project,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["version"] == 1 and answer["aliases"] == ["production"]
    assert [(g["name"], g["verdict"]) for g in answer["gates"]] == [("servable", "pass")]
    assert answer["metrics"]["train_accuracy"] == pytest.approx(0.8, abs=0.15)
    mlflow = answer["lineage"]["mlflow"]
    assert answer["lineage"]["source"] == "imported from MLflow"
    assert mlflow["run_id"] == logged.run_id and mlflow["flavour"] == "sklearn"
    assert mlflow["serialization"] == "skops"
    assert mlflow["params"] == {"C": "0.3", "scaler": "standard"}
    assert answer["lineage"]["params"] == {"import churn": {"C": "0.3", "scaler": "standard"}}

    rows = logged.X_test.head(50)
    with spawn(target_project) as gateway:
        r = gateway.post(
            "/v1/models/churn/predict",
            json={"instances": json.loads(rows.to_json(orient="records"))},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == logged.model.predict(rows).tolist()
    np.testing.assert_allclose(
        r.json()["probabilities"], logged.model.predict_proba(rows), atol=1e-5
    )


def test_import_a_models_uri_with_labelled_data_runs_the_project_gates(
    logged: Logged, target_project: Path
) -> None:
    config = target_project / "conveyor.yaml"
    config.write_text(
        config.read_text()
        + "pipeline:\n  train: {run: 'steps:train'}\n"
        + "model: {name: churn, from: train, holdout: train, target: churned}\n"
        + "gates:\n  - roc_auc >= 0.99\n"
    )
    holdout = target_project / "holdout.parquet"
    logged.X_test.assign(churned=logged.y_test).to_parquet(holdout)
    project = conveyor.open_project(target_project)

    with pytest.raises(conveyor.RegistrationRefused, match=r"roc_auc >= 0.99: fail"):
        from conveyor.actions.mlflow_bridge import import_mlflow

        import_mlflow(
            "models:/churn-mlflow/1",
            name="churn",
            project=project,
            tracking_uri=logged.tracking_uri,
            data=holdout,
            target="churned",
        )
    config.write_text(config.read_text().replace("roc_auc >= 0.99", "roc_auc >= 0.8"))
    version = import_mlflow(
        "models:/churn-mlflow/1",
        name="churn",
        path=target_project,
        tracking_uri=logged.tracking_uri,
        data=holdout,
        target="churned",
    )
    assert [g["name"] for g in version.gates] == ["roc_auc >= 0.8", "servable"]
    assert version.metrics["roc_auc"] > 0.8
    assert "mlflow_train_accuracy" in version.metrics  # the run's number, kept apart


def test_a_pickled_model_is_imported_only_when_trusted_by_name(
    tmp_path: Path, target_project: Path
) -> None:
    pickled = log_model(tmp_path / "pickled", serialization_format="cloudpickle")
    source = f"runs:/{pickled.run_id}/model"

    refused = conveyor_cli(
        "models",
        "import",
        source,
        "--name",
        "churn",
        "--tracking-uri",
        pickled.tracking_uri,
        "-C",
        target_project,
    )
    assert refused.returncode == 1
    assert "is a cloudpickle file" in refused.stderr and "--trust-pickle" in refused.stderr
    with pytest.raises(ModelNotFound):
        conveyor.load_model("churn", path=target_project)  # nothing was registered
    from conveyor.actions.mlflow_bridge import import_mlflow

    with pytest.raises(UnsafeModelFile, match="is a cloudpickle file"):
        import_mlflow(source, name="churn", path=target_project, tracking_uri=pickled.tracking_uri)

    trusted = conveyor_cli(
        "models",
        "import",
        source,
        "--name",
        "churn",
        "--tracking-uri",
        pickled.tracking_uri,
        "--trust-pickle",
        "-C",
        target_project,
    )
    assert trusted.returncode == 0, trusted.stderr
    loaded = conveyor.load_model("churn:1", path=target_project)
    assert loaded.native.__class__.__name__ == "Pipeline"  # stored as skops, not as a pickle
    assert list(loaded.predict(pickled.X_test)) == list(pickled.model.predict(pickled.X_test))


def test_import_errors_name_the_source_and_the_fix(tmp_path: Path, target_project: Path) -> None:
    from conveyor.actions.mlflow_bridge import import_mlflow

    with pytest.raises(RegistryError, match="neither a runs:/"):
        import_mlflow("s3://bucket/model", name="m", path=target_project)
    with pytest.raises(RegistryError, match="without an MLmodel file"):
        import_mlflow(str(tmp_path), name="m", path=target_project)
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(RegistryError, match=r"Cannot fetch 'runs:/0123abc/model' from sqlite"):
        import_mlflow("runs:/0123abc/model", name="m", path=target_project, tracking_uri=uri)


def test_a_local_model_directory_imports_without_a_tracking_store(
    tmp_path: Path, target_project: Path, logged: Logged
) -> None:
    import mlflow.sklearn

    folder = tmp_path / "saved"
    mlflow.sklearn.save_model(
        logged.model,
        str(folder),
        input_example=logged.X_test.head(3),
        pip_requirements=["scikit-learn"],
    )
    from conveyor.actions.mlflow_bridge import import_mlflow

    version = import_mlflow(str(folder), name="churn", path=target_project)
    # saved outside a run: no run to carry params and metrics from, and the lineage says so
    assert version.lineage["mlflow"]["note"] == "the MLmodel names no run"
    loaded = conveyor.load_model("churn", path=target_project)
    assert list(loaded.predict(logged.X_test)) == list(logged.model.predict(logged.X_test))


@pytest.mark.slow
def test_export_back_and_mlflow_models_serve_answers_the_same(
    logged: Logged, target_project: Path, tmp_path: Path
) -> None:
    from conveyor.actions.mlflow_bridge import import_mlflow

    import_mlflow(
        f"runs:/{logged.run_id}/model",
        name="churn",
        path=target_project,
        tracking_uri=logged.tracking_uri,
        aliases=("production",),
    )
    out = tmp_path / "exported"
    done = conveyor_cli(
        "models",
        "export",
        "churn@production",
        "--format",
        "mlflow",
        "--out",
        out,
        "-C",
        target_project,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "MLmodel",
        "model",
        "python_env.yaml",
        "requirements.txt",
    ]
    again = conveyor_cli("models", "export", "churn:1", "--out", out, "-C", target_project)
    assert again.returncode == 1 and "is not an empty folder" in again.stderr

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # as in an activated virtualenv: MLflow starts its server with 'uvicorn' from PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(out),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise AssertionError(f"mlflow models serve exited: {server.stdout.read()}")
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not start in 180 s"
            time.sleep(0.5)
        rows = logged.X_test.head(40)
        split = json.loads(rows.to_json(orient="split", index=False))
        r = httpx.post(url + "/invocations", json={"dataframe_split": split}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == logged.model.predict(rows).tolist()
        r = httpx.post(
            url + "/invocations",
            json={"dataframe_split": split, "params": {"predict_method": "predict_proba"}},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        got = [[row["0"], row["1"]] for row in r.json()["predictions"]]
        np.testing.assert_allclose(got, logged.model.predict_proba(rows), atol=1e-9)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_an_xgboost_model_imports_from_its_own_file_without_a_pickle(
    tmp_path: Path, target_project: Path
) -> None:
    xgb = pytest.importorskip("xgboost")
    import warnings

    import mlflow.xgboost

    from conveyor.actions.mlflow_bridge import import_mlflow
    from tests.mlflow_bridge.conftest import data

    X_train, y_train, X_test, _ = data()
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.xgboost.save_model(
            model,
            str(tmp_path / "xgb"),
            input_example=X_train.head(5),
            pip_requirements=["xgboost"],
        )

    version = import_mlflow(str(tmp_path / "xgb"), name="churn-xgb", path=target_project)
    assert version.file.format == "xgboost-json"
    assert version.lineage["mlflow"]["flavour"] == "xgboost"
    assert [(g["name"], g["verdict"]) for g in version.gates] == [("servable", "pass")]
    loaded = conveyor.load_model("churn-xgb", path=target_project)
    assert list(loaded.predict(X_test)) == list(model.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test))


def test_an_export_carries_the_project_code_its_trusted_types_need(tmp_path: Path) -> None:
    from conveyor.actions.mlflow_bridge import export_mlflow
    from tests.api.conftest import fitted, write_project

    root = write_project(tmp_path / "api")  # its model uses features.Clip, trusted by name
    model, X_test, y_test = fitted(root)
    conveyor.register(model, name="churn", data=(X_test, y_test), path=root, gates=None)
    out = export_mlflow("churn:1", tmp_path / "exported", path=root)
    assert sorted(p.name for p in (out / "code").iterdir()) == ["features.py"]

    X_test.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import json, warnings, pandas, mlflow.pyfunc\n"
        "warnings.simplefilter('ignore')\n"
        f"m = mlflow.pyfunc.load_model({str(out)!r})\n"
        f"rows = pandas.read_csv({str(tmp_path / 'rows.csv')!r})\n"
        "print(json.dumps(m.predict(rows).tolist()))\n"
    )
    elsewhere = tmp_path / "elsewhere"  # not the project: features.py comes from the export
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == model.predict(X_test).tolist()


def test_a_lightgbm_model_imports_from_skops_through_the_allow_list(
    tmp_path: Path, target_project: Path
) -> None:
    lgb = pytest.importorskip("lightgbm")
    import warnings

    import mlflow.lightgbm

    from conveyor.actions.mlflow_bridge import import_mlflow
    from tests.mlflow_bridge.conftest import data

    X_train, y_train, X_test, _ = data()
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(X_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.lightgbm.save_model(
            model,
            str(tmp_path / "lgbm"),
            input_example=X_train.head(5),
            pip_requirements=["lightgbm"],
        )

    version = import_mlflow(str(tmp_path / "lgbm"), name="churn-lgbm", path=target_project)
    assert version.file.format == "lightgbm-text"  # stored as LightGBM's own text model
    assert version.lineage["mlflow"]["serialization"] == "skops"
    loaded = conveyor.load_model("churn-lgbm", path=target_project)
    assert list(loaded.predict(X_test)) == list(model.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test))
