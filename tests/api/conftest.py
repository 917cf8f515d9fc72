"""A project for the Python API: a conveyor.yaml whose model uses a class of the project's own
code (``features.Clip``), trusted by exact name, and a fitted model with its holdout."""

from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

FEATURES = ["f0", "f1", "f2", "f3"]

CODE = '''
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Clip(BaseEstimator, TransformerMixin):
    """Clips every feature to [-limit, limit]: a class of the project's own code."""

    def __init__(self, limit=3.0):
        self.limit = limit

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), -self.limit, self.limit)


def train(rows):
    raise NotImplementedError("this project's models are registered from Python")
'''

CONFIG = """
project: api
pipeline:
  train: {run: "features:train"}
model:
  name: churn
  from: train
  holdout: train
  target: label
  trusted_types: [features.Clip]
gates:
  - roc_auc >= 0.7
  - size: {max_mb: 5}
"""


def write_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(textwrap.dedent(CONFIG).lstrip())
    (root / "features.py").write_text(textwrap.dedent(CODE).lstrip())
    (root / "notebooks").mkdir(exist_ok=True)
    return root


@lru_cache(maxsize=1)
def _data() -> tuple[Any, Any, Any, Any]:
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=800, n_features=4, n_informative=3, n_redundant=0, random_state=1
    )
    frame = pd.DataFrame(X, columns=FEATURES)
    labels = pd.Series(["yes" if v else "no" for v in y], name="label")
    return (
        frame[:500],
        labels[:500],
        frame[500:].reset_index(drop=True),
        labels[500:].reset_index(drop=True),
    )


def fitted(root: Path) -> tuple[Any, Any, Any]:
    """A pipeline over the project's Clip, fitted; and the held-out X and y."""
    import importlib
    import sys

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    sys.path.insert(0, str(root))
    try:
        sys.modules.pop("features", None)
        features = importlib.import_module("features")
    finally:
        sys.path.remove(str(root))
    X_train, y_train, X_test, y_test = _data()
    model = make_pipeline(features.Clip(), LogisticRegression(max_iter=500)).fit(X_train, y_train)
    return model, X_test, y_test


@pytest.fixture
def api_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")
