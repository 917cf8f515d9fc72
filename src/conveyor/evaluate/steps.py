"""Built-in evaluation steps: ``run: conveyor.evaluate:classification`` (or ``:regression``).

A step receives the model and the holdout frame and returns one dict; the engine stores it as
JSON and records its top-level numbers as the step's metrics, which is what gates read. Plots
travel in the same dict as SVG text (the registry stores each as its own artifact), so these
functions stay free of IO like the rest of ``evaluate/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conveyor.evaluate.metrics import by_slice, classification_metrics, regression_metrics
from conveyor.evaluate.plots import calibration_svg, residuals_svg, roc_svg


def features_of(model: Any, frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The columns the model was fitted on (``feature_names_in_``), else all but the target.

    Raises:
        ValueError: a column the model needs is not in the frame.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return frame.drop(columns=[target], errors="ignore")
    missing = [str(n) for n in names if n not in frame.columns]
    if missing:
        raise ValueError(
            f"the holdout frame lacks column(s) the model was fitted on: {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns))}."
        )
    return frame[list(names)]


def predict_scores(model: Any, features: pd.DataFrame, task: str) -> np.ndarray:
    """Probability of the positive class (classification) or the prediction (regression).

    Raises:
        ValueError: a classifier without ``predict_proba`` or with more than two classes.
    """
    if task == "regression":
        return np.asarray(model.predict(features), dtype=float)
    if not hasattr(model, "predict_proba"):
        raise ValueError(
            f"a {type(model).__name__} has no predict_proba; the classification evaluation "
            "needs probabilities (use a classifier, or set model.task: regression)."
        )
    proba = np.asarray(model.predict_proba(features), dtype=float)
    if proba.ndim != 2 or proba.shape[1] != 2:
        raise ValueError(
            f"the classifier predicts {proba.shape[1] if proba.ndim == 2 else 1} classes; "
            "the built-in classification evaluation handles binary targets (0/1)."
        )
    return proba[:, 1]


def _target(frame: pd.DataFrame, target: str) -> pd.Series:
    if target not in frame.columns:
        raise ValueError(
            f"target column {target!r} is not in the holdout frame; it has "
            f"{', '.join(map(str, frame.columns))}. Set model.target in conveyor.yaml."
        )
    return frame[target]


def _check_slices(frame: pd.DataFrame, slices: list[str]) -> None:
    missing = [s for s in slices if s not in frame.columns]
    if missing:
        raise ValueError(
            f"slice column(s) {', '.join(map(repr, missing))} are not in the holdout frame; it "
            f"has {', '.join(map(str, frame.columns))}. Fix model.slices in conveyor.yaml."
        )


def classification(
    model: Any,
    holdout: pd.DataFrame,
    *,
    target: str,
    slices: list[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC, log loss, Brier, calibration error and the
    confusion matrix of a binary classifier on the holdout, overall and per slice, with ROC and
    calibration plots.

    Raises:
        ValueError: the target or a slice column is missing, or the model is not binary.
    """
    slices = list(slices or [])
    y = _target(holdout, target)
    _check_slices(holdout, slices)
    scores = predict_scores(model, features_of(model, holdout, target), "classification")
    overall = classification_metrics(y.to_numpy(), scores, threshold=threshold)
    frame = holdout[slices].assign(y_true=y.to_numpy(), y_score=scores)
    plots = {"calibration": calibration_svg(y.to_numpy(), scores)}
    if 0 < int(overall["positives"]) < len(y):
        plots["roc"] = roc_svg(y.to_numpy(), scores)
    return {
        **overall,
        "task": "classification",
        "target": target,
        "settings": {"threshold": threshold},  # nested: not a metric
        "slices": by_slice(frame, slices, classification_metrics, threshold=threshold),
        "plots": plots,
    }


def regression(
    model: Any, holdout: pd.DataFrame, *, target: str, slices: list[str] | None = None
) -> dict[str, Any]:
    """MAE, RMSE, R² and MAPE of a regressor on the holdout, overall and per slice, with a
    residuals plot.

    Raises:
        ValueError: the target or a slice column is missing.
    """
    slices = list(slices or [])
    y = _target(holdout, target).astype(float)
    _check_slices(holdout, slices)
    predictions = predict_scores(model, features_of(model, holdout, target), "regression")
    overall = regression_metrics(y.to_numpy(), predictions)
    frame = holdout[slices].assign(y_true=y.to_numpy(), y_score=predictions)
    return {
        **overall,
        "task": "regression",
        "target": target,
        "slices": by_slice(frame, slices, regression_metrics),
        "plots": {"residuals": residuals_svg(y.to_numpy(), predictions)},
    }
