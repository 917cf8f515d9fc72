"""Metrics for binary and multi-class classification and regression, overall and per slice.

scikit-learn computes what it already computes well; this module adds the checks that make a bad
input fail loudly (length mismatch, NaN labels, non-binary labels) and turns the degenerate cases
that sklearn raises or warns on (a single class, too few rows) into NaN with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

ArrayLike = Any  # anything np.asarray accepts: list, ndarray, pandas Series


def check_pair(
    y_true: ArrayLike, y_other: ArrayLike, other_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Checks lengths, emptiness and NaNs of labels and predictions; returns float arrays."""
    t = np.asarray(y_true, dtype=float).ravel()
    o = np.asarray(y_other, dtype=float).ravel()
    if len(t) != len(o):
        raise ValueError(
            f"y_true has {len(t)} rows but {other_name} has {len(o)}; "
            "pass the labels and predictions of the same rows."
        )
    if len(t) == 0:
        raise ValueError("y_true is empty; metrics need at least one row.")
    bad = int(np.isnan(t).sum())
    if bad:
        raise ValueError(f"y_true has {bad} NaN value(s); drop unlabelled rows before evaluating.")
    bad = int(np.isnan(o).sum())
    if bad:
        raise ValueError(f"{other_name} has {bad} NaN value(s); the model must score every row.")
    return t, o


def check_binary(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates binary labels (0/1) and probability scores in [0, 1]; returns float arrays.

    Args:
        y_true: labels, 0 or 1 (booleans are accepted).
        y_score: predicted probability of class 1.

    Raises:
        ValueError: lengths differ, NaN anywhere, labels not 0/1, or scores outside [0, 1].
    """
    t, s = check_pair(y_true, y_score, "y_score")
    labels = np.unique(t)
    if not np.isin(labels, (0.0, 1.0)).all():
        shown = ", ".join(repr(v) for v in labels[:5].tolist())
        raise ValueError(
            f"y_true must hold 0/1 labels for binary metrics, got values {shown}; "
            "encode the positive class as 1."
        )
    lo, hi = float(s.min()), float(s.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"y_score must be probabilities in [0, 1], got range [{lo:g}, {hi:g}]; "
            "pass predict_proba(X)[:, 1], not decision_function or labels."
        )
    return t, s


def reliability_bins(y_true: ArrayLike, y_score: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Groups scores into ``n_bins`` equal-width bins on [0, 1]: the data of a reliability curve.

    Returns:
        dict with arrays ``mean_score``, ``frac_positive`` and ``count`` for the non-empty bins
        (a score of exactly 1.0 falls in the last bin).
    """
    t, s = check_binary(y_true, y_score)
    idx = np.minimum((s * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_s = np.bincount(idx, weights=s, minlength=n_bins)
    sum_t = np.bincount(idx, weights=t, minlength=n_bins)
    keep = count > 0
    return {
        "mean_score": sum_s[keep] / count[keep],
        "frac_positive": sum_t[keep] / count[keep],
        "count": count[keep],
    }


def expected_calibration_error(y_true: ArrayLike, y_score: ArrayLike, n_bins: int = 10) -> float:
    """Weighted mean gap between predicted probability and observed frequency, over bins."""
    b = reliability_bins(y_true, y_score, n_bins)
    gaps = np.abs(b["frac_positive"] - b["mean_score"])
    return float(np.sum(b["count"] * gaps) / np.sum(b["count"]))


def classification_metrics(
    y_true: ArrayLike, y_score: ArrayLike, *, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of a binary classifier that outputs the probability of class 1.

    Threshold metrics (accuracy, precision, recall, F1, confusion matrix) predict 1 where
    ``y_score >= threshold``. With a single class in ``y_true`` ROC AUC is undefined: it is NaN
    and ``note`` says why, instead of an exception that would stop a whole evaluation.

    Args:
        y_true: 0/1 labels.
        y_score: probability of class 1, in [0, 1].
        threshold: score at and above which a row is predicted positive.

    Returns:
        ``accuracy, selection_rate, precision, recall, f1, roc_auc, log_loss, brier, ece, n,
        positives`` as
        numbers, ``confusion_matrix`` as ``{tn, fp, fn, tp}``, and ``note`` when something is NaN.

    Raises:
        ValueError: lengths differ, NaN values, labels not 0/1, scores outside [0, 1], or a
            threshold outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}.")
    t, s = check_binary(y_true, y_score)
    yt = t.astype(int)
    yp = (s >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(yt, yp, labels=[0, 1]).ravel())
    out: dict[str, Any] = {
        "n": len(t),
        "positives": int(yt.sum()),
        "accuracy": float(skm.accuracy_score(yt, yp)),
        "selection_rate": float(yp.mean()),
        "precision": float(skm.precision_score(yt, yp, zero_division=0.0)),
        "recall": float(skm.recall_score(yt, yp, zero_division=0.0)),
        "f1": float(skm.f1_score(yt, yp, zero_division=0.0)),
        "roc_auc": math.nan,
        "log_loss": float(skm.log_loss(yt, s, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(yt, s, pos_label=1)),
        "ece": expected_calibration_error(t, s),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }
    if 0 < out["positives"] < len(t):
        out["roc_auc"] = float(skm.roc_auc_score(yt, s))
    else:
        out["note"] = f"y_true holds a single class ({int(yt[0])}); roc_auc is undefined."
    return out


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, Any]:
    """MAE, RMSE, R² and MAPE of a regressor.

    MAPE divides by ``y_true``, so rows where it is 0 are left out of MAPE only, and
    ``mape_skipped`` counts them (MAPE is NaN if every row is 0). MAPE is a fraction
    (0.05 = 5 %), as in scikit-learn. R² needs two rows; with one it is NaN.

    Args:
        y_true: observed values.
        y_pred: predicted values.

    Returns:
        ``mae, rmse, r2, mape, mape_skipped, n`` and ``note`` when something is NaN.

    Raises:
        ValueError: lengths differ or NaN values.
    """
    t, p = check_pair(y_true, y_pred, "y_pred")
    nonzero = t != 0
    out: dict[str, Any] = {
        "n": len(t),
        "mae": float(skm.mean_absolute_error(t, p)),
        "rmse": float(np.sqrt(skm.mean_squared_error(t, p))),
        "r2": math.nan,
        "mape": math.nan,
        "mape_skipped": int((~nonzero).sum()),
    }
    notes = []
    if len(t) >= 2:
        out["r2"] = float(skm.r2_score(t, p))
    else:
        notes.append("r2 needs at least 2 rows")
    if nonzero.any():
        out["mape"] = float(skm.mean_absolute_percentage_error(t[nonzero], p[nonzero]))
    else:
        notes.append("every y_true is 0, so mape is undefined")
    if notes:
        out["note"] = "; ".join(notes) + "."
    return out


def by_slice(
    frame: pd.DataFrame,
    slices: list[str],
    fn: Callable[..., dict[str, Any]],
    *,
    y_true: str = "y_true",
    y_score: str = "y_score",
    min_rows: int = 30,
    **kwargs: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Computes ``fn`` (one of the metric functions above) for each value of each slice column.

    Small groups give noisy numbers that look like real gaps, so a group with fewer than
    ``min_rows`` rows keeps its metrics but gets NaN ``roc_auc``/``r2`` and a ``note``; a group with
    a single class gets NaN ``roc_auc`` and a note from ``classification_metrics``. Missing slice
    values form their own group, keyed ``"null"``.

    Args:
        frame: one row per evaluated example.
        slices: columns to group by, each on its own (not crossed).
        fn: ``classification_metrics`` or ``regression_metrics``.
        y_true: column holding the labels / observed values.
        y_score: column holding the scores / predictions (second argument of ``fn``).
        min_rows: groups smaller than this get NaN AUC / R² and a note.
        **kwargs: passed to ``fn`` (e.g. ``threshold``).

    Returns:
        ``{slice column: {group value as str: metrics dict with "n"}}``.

    Raises:
        ValueError: a slice, ``y_true`` or ``y_score`` column is not in ``frame``.
    """
    for role, col in [("y_true", y_true), ("y_score", y_score)] + [("slice", c) for c in slices]:
        if col not in frame.columns:
            raise ValueError(
                f"{role} column {col!r} is not in the evaluation frame; "
                f"available columns: {', '.join(map(str, frame.columns))}."
            )
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for col in slices:
        groups: dict[str, dict[str, Any]] = {}
        for value, part in frame.groupby(col, dropna=False, sort=True):
            key = "null" if pd.isna(value) else str(value)
            metrics = fn(part[y_true].to_numpy(), part[y_score].to_numpy(), **kwargs)
            metrics["n"] = len(part)
            if len(part) < min_rows:
                for name in ("roc_auc", "r2"):
                    if name in metrics:
                        metrics[name] = math.nan
                small = f"only {len(part)} rows (< {min_rows}); roc_auc/r2 not reported."
                metrics["note"] = f"{metrics['note']} {small}" if "note" in metrics else small
            groups[key] = metrics
        result[col] = groups
    return result


def selection_rate(y_score: ArrayLike, *, threshold: float = 0.5) -> float:
    """Share of rows predicted positive: the quantity demographic parity compares across groups."""
    s = np.asarray(y_score, dtype=float).ravel()
    if len(s) == 0:
        raise ValueError("y_score is empty; a selection rate needs at least one row.")
    return float(np.mean(s >= threshold))


def check_multiclass(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates class indices (0..K-1) against an (n, K) probability matrix.

    Raises:
        ValueError: lengths differ, not a matrix, an index outside 0..K-1, NaN probabilities or
            rows that do not sum to 1.
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(
            f"class probabilities must be an (n, K) matrix with K >= 2, got shape {p.shape}; "
            "pass predict_proba(X)."
        )
    if len(t) != p.shape[0]:
        raise ValueError(
            f"y_true has {len(t)} rows but the probabilities have {p.shape[0]}; "
            "pass the labels and predictions of the same rows."
        )
    if len(t) == 0:
        raise ValueError("y_true is empty; metrics need at least one row.")
    if not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(
            f"y_true must hold class indices 0..{p.shape[1] - 1} (positions in the model's "
            "classes); encode the labels with the model's classes first."
        )
    bad = int(np.isnan(p).any(axis=1).sum())
    if bad:
        raise ValueError(
            f"the probabilities have NaN in {bad} row(s); the model must score every row."
        )
    return t.astype(int), p


def multiclass_metrics(
    y_true: ArrayLike, proba: ArrayLike, classes: list[Any] | None = None
) -> dict[str, Any]:
    """Metrics of a K-class classifier from class indices and its (n, K) probabilities.

    ``precision``, ``recall`` and ``f1`` are macro averages (each class counts the same, so a
    rare class that is never found drags them down), ``*_weighted`` weigh classes by support,
    ``roc_auc`` is the macro one-vs-rest AUC over the classes present (NaN with a note if fewer
    than two are), ``brier`` the multi-class Brier score (mean squared distance to the one-hot
    label), ``ece`` the top-label calibration error. The prediction is the most probable class.

    Args:
        y_true: class indices into ``classes`` (see ``steps.encode_labels``).
        proba: (n, K) probabilities, columns in the order of ``classes``.
        classes: the class labels, for ``per_class`` and the confusion matrix (default 0..K-1).

    Returns:
        numbers as for ``classification_metrics`` plus ``*_weighted`` and ``classes``;
        ``per_class`` ``{label: {precision, recall, f1, support}}``; ``confusion_matrix``
        ``{labels, matrix}`` with rows the true class and columns the predicted one.

    Raises:
        ValueError: see ``check_multiclass``.
    """
    t, p = check_multiclass(y_true, proba)
    k = p.shape[1]
    labels = list(range(k))
    names = [str(c) for c in (classes if classes is not None else labels)]
    pred = p.argmax(axis=1)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        t, pred, labels=labels, zero_division=0.0
    )
    onehot = np.eye(k)[t]
    top = p[np.arange(len(t)), pred]
    out: dict[str, Any] = {
        "n": len(t),
        "classes": k,
        "accuracy": float(np.mean(pred == t)),
        "balanced_accuracy": float(np.mean([rec[i] for i in labels if support[i] > 0])),
        "precision": float(np.mean(prec)),
        "recall": float(np.mean(rec)),
        "f1": float(np.mean(f1)),
        "precision_weighted": float(np.average(prec, weights=support)),
        "recall_weighted": float(np.average(rec, weights=support)),
        "f1_weighted": float(np.average(f1, weights=support)),
        "roc_auc": math.nan,
        "log_loss": float(skm.log_loss(t, np.clip(p, 1e-15, 1.0), labels=labels)),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error((pred == t).astype(float), np.clip(top, 0.0, 1.0)),
        "per_class": {
            names[i]: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in labels
        },
        "confusion_matrix": {
            "labels": names,
            "matrix": skm.confusion_matrix(t, pred, labels=labels).tolist(),
        },
    }
    present = [i for i in labels if 0 < support[i] < len(t)]
    if len(present) >= 2:
        out["roc_auc"] = float(np.mean([skm.roc_auc_score(t == i, p[:, i]) for i in present]))
        if len(present) < k:
            absent = [names[i] for i in labels if i not in present]
            out["note"] = f"class(es) {', '.join(absent)} absent; roc_auc averages the others."
    else:
        out["note"] = "fewer than two classes in y_true; roc_auc is undefined."
    return out
