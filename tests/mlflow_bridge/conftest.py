"""MLflow for real: a SQLite tracking store and an artifact folder in tmp_path, a scikit-learn
model logged with MLflow's own API, and a Conveyor project to import it into."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")

FEATURES = ["age", "income", "tenure"]


@dataclass
class Logged:
    """A model MLflow logged: where, and what it should answer."""

    tracking_uri: str
    run_id: str
    model: Any
    X_test: Any
    y_test: Any


def data() -> tuple[Any, Any, Any, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50_000, 15_000, n).round(2),
            "tenure": rng.uniform(0, 10, n),
        }
    )
    score = (frame["age"] - 45) / 15 + (frame["income"] - 50_000) / 20_000 + rng.normal(0, 1, n)
    y = pd.Series((score > 0).astype(int), name="churned")
    return frame[:400], y[:400], frame[400:].reset_index(drop=True), y[400:].reset_index(drop=True)


def log_model(root: Path, *, serialization_format: str = "skops") -> Logged:
    """Fit and log a scikit-learn pipeline with MLflow (registered as 'churn-mlflow' v1)."""
    with warnings.catch_warnings():  # MLflow's own notices (its SQL store's deprecations)
        warnings.simplefilter("ignore")
        return _log_model(root, serialization_format)


def _log_model(root: Path, serialization_format: str) -> Logged:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("churn", artifact_location=(root / "art").as_uri())
    X_train, y_train, X_test, y_test = data()
    with mlflow.start_run(experiment_id=experiment) as run:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3)).fit(X_train, y_train)
        mlflow.log_params({"C": 0.3, "scaler": "standard"})
        mlflow.log_metric("train_accuracy", float(model.score(X_train, y_train)))
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X_train, model.predict(X_train)),
            input_example=X_train.head(5),
            registered_model_name="churn-mlflow",
            serialization_format=serialization_format,
            pip_requirements=["scikit-learn"],  # no requirement inference (it runs uv export)
        )
    return Logged(uri, run.info.run_id, model, X_test, y_test)


@pytest.fixture(scope="module")
def logged() -> Iterator[Logged]:
    """One model logged for the whole module (logging costs tens of seconds).

    In a folder of its own rather than pytest's numbered basetemp: another pytest session on
    the machine prunes old basetemps, which took the tracking store's artifacts mid-module.
    """
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="conveyor-mlflow-test-") as folder:
        yield log_model(Path(folder))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri() exported it


@pytest.fixture(autouse=True)
def _no_tracking_uri() -> Iterator[None]:
    """Each test names its tracking store; none inherits one that logging exported."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def target_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "conveyor.yaml").write_text("project: bridge\nserve:\n  poll_seconds: 0.1\n")
    return root


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
