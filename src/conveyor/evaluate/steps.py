"""Built-in evaluation steps: ``run: conveyor.evaluate:classification`` (or ``:regression``).

A step receives the model and the holdout frame and returns one dict; the engine stores it as
JSON and records its top-level numbers as the step's metrics, which is what gates read. Plots
travel in the same dict as SVG text (the registry stores each as its own artifact), so these
functions stay free of IO like the rest of ``evaluate/``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from conveyor.evaluate.metrics import (
    by_slice,
    classification_metrics,
    multiclass_metrics,
    regression_metrics,
)
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


def predict_scores(
    model: Any,
    features: pd.DataFrame,
    task: str,
    *,
    classes: list[Any] | None = None,
    positive_class: Any = None,
) -> np.ndarray:
    """Probability of the positive class (binary), the (n, K) class probabilities
    (multi-class), or the prediction (regression).

    Args:
        model: a fitted model with ``predict`` (and ``predict_proba`` and ``classes_`` for a
            classifier).
        features: the rows to score.
        task: ``classification`` or ``regression``.
        classes: the classes to align the probabilities to (another model's, so two models'
            scores are comparable column by column); by default the model's own.
        positive_class: the label whose probability a binary score is; by default the model's
            second class (scikit-learn's ``predict_proba(X)[:, 1]``).

    Raises:
        ValueError: a classifier without ``predict_proba``, or a ``positive_class`` it lacks.
    """
    if task == "regression":
        return np.asarray(model.predict(features), dtype=float)
    own, proba = class_probabilities(model, features)
    if classes is not None:
        proba = align_probabilities(proba, own, classes)
        own = list(classes)
    if len(own) == 2:
        return proba[:, own.index(positive_of(own, positive_class))]
    return proba


def class_probabilities(model: Any, features: pd.DataFrame) -> tuple[list[Any], np.ndarray]:
    """The model's classes and its (n, K) probabilities, columns in the order of the classes.

    Raises:
        ValueError: no ``predict_proba``, or probabilities that do not match ``classes_``.
    """
    if not hasattr(model, "predict_proba"):
        raise ValueError(
            f"a {type(model).__name__} has no predict_proba; the classification evaluation "
            "needs probabilities (use a classifier, or set model.task: regression)."
        )
    proba = np.asarray(model.predict_proba(features), dtype=float)
    if proba.ndim == 1:  # a booster's binary output: probability of the second class
        proba = np.column_stack([1.0 - proba, proba])
    classes = model_classes(model, proba.shape[1])
    if proba.shape[1] != len(classes):
        raise ValueError(
            f"the {type(model).__name__} gives {proba.shape[1]} probabilities per row but has "
            f"{len(classes)} classes ({', '.join(map(repr, classes[:5]))})."
        )
    return classes, proba


def model_classes(model: Any, k: int | None = None) -> list[Any]:
    """``classes_`` as plain Python values (0..K-1 when the model keeps none)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        if k is None:
            raise ValueError(f"a {type(model).__name__} has no classes_; it is not a classifier.")
        return list(range(k))
    return [c.item() if hasattr(c, "item") else c for c in np.asarray(classes).tolist()]


def positive_of(classes: list[Any], positive_class: Any) -> Any:
    """The positive label of a binary model: ``positive_class`` as one of ``classes`` (matched
    as written in conveyor.yaml, so ``"1"`` finds the integer 1), else the second class.

    Raises:
        ValueError: ``positive_class`` is not one of the classes.
    """
    if positive_class is None:
        return classes[-1] if len(classes) == 2 else None
    for c in classes:
        if c == positive_class or str(c) == str(positive_class):
            return c
    raise ValueError(
        f"model.positive_class {positive_class!r} is not one of the model's classes "
        f"({', '.join(map(repr, classes))}); set it to one of them."
    )


def align_probabilities(proba: np.ndarray, own: list[Any], classes: list[Any]) -> np.ndarray:
    """Reorder ``proba`` (columns ``own``) to the columns ``classes``; a class the model never
    saw gets probability 0."""
    index = {c: i for i, c in enumerate(own)}
    out = np.zeros((proba.shape[0], len(classes)))
    for j, c in enumerate(classes):
        if c in index:
            out[:, j] = proba[:, index[c]]
    return out


def encode_labels(y: Any, classes: list[Any], positive: Any = None) -> np.ndarray:
    """Labels as 0/1 floats (``positive`` is 1) for a binary model, else class indices.

    Labels are matched to the classes by value, then as text (a CSV's "1" against an integer
    class), so string targets such as "Yes"/"No" need no encoding by the user.

    Raises:
        ValueError: a label the model has no class for, or a missing label.
    """
    values = pd.Series(y).reset_index(drop=True)
    if values.isna().any():
        raise ValueError(
            f"the target has {int(values.isna().sum())} missing label(s); drop unlabelled rows "
            "before evaluating."
        )
    index = {c: i for i, c in enumerate(classes)}
    text = {str(c): i for i, c in enumerate(classes)}
    codes = np.empty(len(values), dtype=int)
    unknown: dict[str, int] = {}
    for row, v in enumerate(values.tolist()):
        code = index.get(v, text.get(str(v), -1))
        if code < 0:
            unknown[repr(v)] = unknown.get(repr(v), 0) + 1
        codes[row] = code
    if unknown:
        shown = ", ".join(f"{k} ({n} rows)" for k, n in list(unknown.items())[:5])
        raise ValueError(
            f"the holdout's target has label(s) {shown} that the model has no class for (its "
            f"classes: {', '.join(map(repr, classes))}); train on every label, or drop those rows."
        )
    if len(classes) == 2:
        return (codes == classes.index(positive_of(classes, positive))).astype(float)
    return codes


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
    positive_class: Any = None,
) -> dict[str, Any]:
    """The metrics of a classifier on the holdout, overall and per slice, with plots.

    Binary (any two labels; ``positive_class``, else the model's second class, is the positive
    one): accuracy, selection rate, precision, recall, F1, ROC AUC, log loss, Brier, calibration
    error and the confusion matrix, with ROC and calibration plots. More than two classes: the
    same names as macro averages, ``*_weighted`` averages, a per-class report and the K × K
    confusion matrix (see ``multiclass_metrics``).

    Raises:
        ValueError: the target or a slice column is missing, a label the model has no class
            for, or a ``positive_class`` that is not a class.
    """
    slices = list(slices or [])
    y = _target(holdout, target)
    _check_slices(holdout, slices)
    classes, proba = class_probabilities(model, features_of(model, holdout, target))
    if len(classes) > 2:
        return _multiclass(holdout, y, classes, proba, target, slices, positive_class)
    positive = positive_of(classes, positive_class)
    truth = encode_labels(y, classes, positive)
    scores = proba[:, classes.index(positive)]
    overall = classification_metrics(truth, scores, threshold=threshold)
    frame = holdout[slices].assign(y_true=truth, y_score=scores)
    plots = {"calibration": calibration_svg(truth, scores)}
    if 0 < int(overall["positives"]) < len(y):
        plots["roc"] = roc_svg(truth, scores)
    return {
        **overall,
        "task": "classification",
        "target": target,
        "settings": {  # nested: not a metric
            "threshold": threshold,
            "positive_class": positive,
            "classes": classes,
        },
        "slices": by_slice(frame, slices, classification_metrics, threshold=threshold),
        "plots": plots,
    }


def _multiclass(
    holdout: pd.DataFrame,
    y: pd.Series,
    classes: list[Any],
    proba: np.ndarray,
    target: str,
    slices: list[str],
    positive_class: Any,
) -> dict[str, Any]:
    truth = encode_labels(y, classes)
    overall = multiclass_metrics(truth, proba, classes)
    if positive_class is not None:  # selection rate of the class a decision is about
        chosen = classes.index(positive_of(classes, positive_class))
        overall["selection_rate"] = float(np.mean(proba.argmax(axis=1) == chosen))
    return {
        **overall,
        "task": "classification",
        "target": target,
        "settings": {"positive_class": positive_class, "classes": classes},
        "slices": multiclass_by_slice(holdout, slices, truth, proba, classes),
        "plots": {},
    }


def multiclass_by_slice(
    frame: pd.DataFrame,
    slices: list[str],
    truth: np.ndarray,
    proba: np.ndarray,
    classes: list[Any],
    *,
    min_rows: int = 30,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``by_slice`` for K classes: the same groups and small-group rule, without the per-class
    tables (one row of numbers per group)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for col in slices:
        groups: dict[str, dict[str, Any]] = {}
        values = frame[col].reset_index(drop=True)
        for value, rows in values.groupby(values, dropna=False, sort=True).groups.items():
            index = np.asarray(list(rows), dtype=int)
            key = "null" if pd.isna(value) else str(value)
            metrics = multiclass_metrics(truth[index], proba[index], classes)
            metrics = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
            if len(index) < min_rows:
                metrics["roc_auc"] = math.nan
                small = f"only {len(index)} rows (< {min_rows}); roc_auc not reported."
                metrics["note"] = f"{metrics['note']} {small}" if "note" in metrics else small
            groups[key] = metrics
        result[col] = groups
    return result


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
