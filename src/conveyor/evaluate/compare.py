"""Paired comparison of a challenger (b) with the incumbent (a) on the same holdout, and gates.

Both models score the same rows, so their errors are correlated; a paired test uses that and needs
far fewer rows than comparing two independent confidence intervals. Three tests:

- ``delong``: ROC AUC, fast DeLong (Sun & Xu 2014), O(n log n) with midranks.
- ``mcnemar``: accuracy of hard predictions, on the discordant pairs.
- ``paired_bootstrap``: any supported metric; rows are resampled once and both models are scored
  on the same resample. Given (n, K) class probabilities it compares K-class models (macro
  precision/recall/F1/one-vs-rest AUC, log loss, Brier, accuracy).

Every test returns a ``Comparison`` whose ``diff`` is b − a with a two-sided (1 − α) interval, and
the gates ``not_worse`` and ``better`` read only that interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from conveyor.config.metrics import COMPARABLE, METRICS
from conveyor.evaluate.metrics import check_binary, check_multiclass, check_pair

ArrayLike = Any

# Metrics a gate may compare, and whether a higher value is better (config/metrics.py).
HIGHER_IS_BETTER: dict[str, bool] = {name: METRICS[name] is True for name in COMPARABLE}
_CLASSIFICATION = {"roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"}
_EPS = 1e-15  # log_loss clips probabilities as scikit-learn does


@dataclass(frozen=True)
class Comparison:
    """Challenger ``b`` against incumbent ``a`` on the same rows.

    ``diff`` is ``b - a``; ``ci_low``/``ci_high`` bound it with a two-sided (1 − α) interval;
    ``p_value`` tests ``diff == 0``. ``higher_is_better`` is False for losses (log_loss, brier,
    mae, rmse), where a negative diff is an improvement.
    """

    metric: str
    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    n: int
    higher_is_better: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON evidence of a gate."""
        return dict(self.__dict__)


def not_worse(cmp: Comparison, margin: float) -> bool:
    """True if the challenger is, with confidence 1 − α/2, at most ``margin`` worse.

    For a metric where higher is better: ``ci_low > -margin`` (the lower bound of b − a lies above
    −margin). For a loss: ``ci_high < margin``. A non-inferiority test: with a truly equal
    challenger and enough rows it passes; with too few rows the interval is wide and it refuses,
    which is the safe answer.

    Raises:
        ValueError: ``margin`` is negative or NaN.
    """
    _check_margin(margin)
    if cmp.higher_is_better:
        return bool(cmp.ci_low > -margin)
    return bool(cmp.ci_high < margin)


def better(cmp: Comparison, margin: float = 0.0) -> bool:
    """True if the challenger is, with confidence 1 − α/2, better by more than ``margin``.

    For a metric where higher is better: ``ci_low > margin``. For a loss: ``ci_high < -margin``.
    With ``margin=0`` this is a one-sided superiority test at level α/2, so noise between equal
    models promotes in at most about α/2 of cases.

    Raises:
        ValueError: ``margin`` is negative or NaN.
    """
    _check_margin(margin)
    if cmp.higher_is_better:
        return bool(cmp.ci_low > margin)
    return bool(cmp.ci_high < -margin)


def _check_margin(margin: float) -> None:
    if not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}.")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}; 0.05 is the usual choice.")


def _paired(
    y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, *, binary: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if binary:
        t, a = check_binary(y_true, score_a)
        _, b = check_binary(y_true, score_b)
    else:
        t, a = check_pair(y_true, score_a, "score_a")
        _, b = check_pair(y_true, score_b, "score_b")
    return t, a, b


# --- DeLong --------------------------------------------------------------------------------------


def _delong_components(t: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance for k score vectors (rows of ``scores``), Sun & Xu (2014).

    Midranks within positives, within negatives and overall give each positive's share of
    negatives scored below it (V10) and each negative's share of positives above it (V01)
    without the O(m·n) pair loop.
    """
    pos = t == 1
    m, n = int(pos.sum()), int((~pos).sum())
    x, y = scores[:, pos], scores[:, ~pos]
    tx = stats.rankdata(x, axis=1)
    ty = stats.rankdata(y, axis=1)
    tz = stats.rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong(
    y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, *, alpha: float = 0.05
) -> Comparison:
    """DeLong's test for the difference of two correlated ROC AUCs (fast algorithm).

    Args:
        y_true: 0/1 labels of the holdout.
        score_a: incumbent's probability of class 1 on the same rows.
        score_b: challenger's probability of class 1.
        alpha: the interval is the two-sided 1 − alpha normal interval of AUC_b − AUC_a.

    Raises:
        ValueError: bad inputs (see ``check_binary``), fewer than 2 rows of each class, or a bad
            ``alpha``.
    """
    _check_alpha(alpha)
    t, a, b = _paired(y_true, score_a, score_b, binary=True)
    m = int(t.sum())
    if m < 2 or len(t) - m < 2:
        raise ValueError(
            f"DeLong needs at least 2 rows of each class, got {m} positive and {len(t) - m} "
            "negative; evaluate on a larger holdout."
        )
    aucs, cov = _delong_components(t, np.vstack([a, b]))
    diff = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var <= 1e-18:  # identical rankings: no uncertainty about a zero difference
        se, p = 0.0, 1.0 if diff == 0 else 0.0
    else:
        se = math.sqrt(var)
        p = float(2.0 * stats.norm.sf(abs(diff) / se))
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return Comparison(
        "roc_auc",
        float(aucs[0]),
        float(aucs[1]),
        diff,
        diff - z * se,
        diff + z * se,
        p,
        "delong",
        len(t),
    )


# --- McNemar -------------------------------------------------------------------------------------


def mcnemar(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    *,
    alpha: float = 0.05,
    exact_below: int = 25,
) -> Comparison:
    """McNemar's test for the difference in accuracy of two sets of hard predictions.

    Only discordant rows carry information: ``n01`` (a wrong, b right) and ``n10`` (a right,
    b wrong). Below ``exact_below`` discordant rows the p-value is the exact two-sided binomial
    test of n01 against n01 + n10 at 1/2; otherwise the chi-square statistic with continuity
    correction, (|n01 − n10| − 1)² / (n01 + n10), on 1 degree of freedom. The interval is the
    Wald interval of the difference of paired proportions, (n01 − n10) / n.

    Args:
        y_true: labels (any values comparable with the predictions).
        pred_a: incumbent's predicted labels.
        pred_b: challenger's predicted labels.
        alpha: two-sided level of the interval.
        exact_below: use the exact binomial test when n01 + n10 is below this.

    Raises:
        ValueError: lengths differ, empty input, or a bad ``alpha``.
    """
    _check_alpha(alpha)
    t, pa, pb = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not len(t) == len(pa) == len(pb):
        raise ValueError(
            f"y_true has {len(t)} rows, pred_a {len(pa)} and pred_b {len(pb)}; "
            "pass predictions of the same rows."
        )
    if len(t) == 0:
        raise ValueError("y_true is empty; McNemar needs at least one row.")
    ca, cb = pa == t, pb == t
    n = len(t)
    n01 = int((~ca & cb).sum())
    n10 = int((ca & ~cb).sum())
    d = n01 + n10
    if d == 0:
        p, method = 1.0, "mcnemar-exact"
    elif d < exact_below:
        p, method = float(stats.binomtest(n01, d, 0.5).pvalue), "mcnemar-exact"
    else:
        chi2 = (abs(n01 - n10) - 1.0) ** 2 / d
        p, method = float(stats.chi2.sf(chi2, 1)), "mcnemar-chi2"
    diff = (n01 - n10) / n
    se = math.sqrt(max(d - (n01 - n10) ** 2 / n, 0.0)) / n
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    acc_a, acc_b = float(ca.mean()), float(cb.mean())
    return Comparison("accuracy", acc_a, acc_b, diff, diff - z * se, diff + z * se, p, method, n)


# --- Paired bootstrap ----------------------------------------------------------------------------

# Each statistic is computed from resample *counts* w (rows of a matrix, one per resample), so a
# resample is a matrix-vector product rather than a fancy-indexed copy of the data.


def _weighted_auc(t: np.ndarray, s: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """AUC of weighted rows: sort the negatives once; each resample is then one cumulative sum.

    A positive's credit is the weight of negatives scored below it plus half the weight of those
    tied with it, read off the cumulative sum at two precomputed positions.
    """
    pos = t == 1
    neg_order = np.flatnonzero(~pos)[np.argsort(s[~pos], kind="stable")]
    neg_sorted = s[neg_order]
    pos_rows = np.flatnonzero(pos)
    lo = np.searchsorted(neg_sorted, s[pos_rows], side="left")
    hi = np.searchsorted(neg_sorted, s[pos_rows], side="right")

    def auc(w: np.ndarray) -> np.ndarray:
        wn = w[:, neg_order]
        cum = np.zeros((w.shape[0], len(neg_order) + 1))
        np.cumsum(wn, axis=1, out=cum[:, 1:])
        wp = w[:, pos_rows]
        num = np.einsum("bi,bi->b", wp, cum[:, lo] + cum[:, hi]) / 2.0
        den = wp.sum(axis=1) * cum[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den  # NaN for a resample holding a single class

    return auc


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _statistic(
    metric: str, t: np.ndarray, s: np.ndarray, threshold: float
) -> Callable[[np.ndarray], np.ndarray]:
    """The metric as a function of a (resamples × rows) count matrix."""
    n = len(t)
    if metric == "roc_auc":
        return _weighted_auc(t, s)
    if metric in ("accuracy", "precision", "recall", "f1"):
        pred = (s >= threshold).astype(float)
        correct = (pred == t).astype(float)
        hit = pred * t
        if metric == "accuracy":
            return lambda w: w @ correct / n
        if metric == "precision":
            return lambda w: _ratio(w @ hit, w @ pred)
        if metric == "recall":
            return lambda w: _ratio(w @ hit, w @ t)
        return lambda w: _ratio(2.0 * (w @ hit), w @ pred + w @ t)
    if metric == "log_loss":
        p = np.clip(s, _EPS, 1.0 - _EPS)
        row = -(t * np.log(p) + (1.0 - t) * np.log1p(-p))
        return lambda w: w @ row / n
    if metric == "brier":
        row = (s - t) ** 2
        return lambda w: w @ row / n
    err = s - t
    if metric == "mae":
        row = np.abs(err)
        return lambda w: w @ row / n
    sq = err**2
    if metric == "rmse":
        return lambda w: np.sqrt(w @ sq / n)
    # r2: 1 - SSE / SST, both taken over the resample.
    t2 = t**2
    return lambda w: 1.0 - _ratio(w @ sq, w @ t2 - (w @ t) ** 2 / n)


def _multiclass_statistic(
    metric: str, t: np.ndarray, p: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """A K-class metric (macro averages, as ``multiclass_metrics``) of a count matrix.

    Per-class counts are weighted sums of indicator columns, so a resample is still a few
    matrix products; a class absent from a resample is left out of the macro average, as
    scikit-learn's per-class recall would be undefined for it.
    """
    n, k = p.shape
    if metric not in _CLASSIFICATION:
        raise ValueError(
            f"{metric!r} is not a classification metric; it cannot compare classifiers."
        )
    truth = np.eye(k)[t]
    pred = np.eye(k)[p.argmax(axis=1)]
    if metric == "accuracy":
        correct = (p.argmax(axis=1) == t).astype(float)
        return lambda w: w @ correct / n
    if metric == "log_loss":
        row = -np.log(np.clip(p[np.arange(n), t], _EPS, 1.0))
        return lambda w: w @ row / n
    if metric == "brier":
        row = np.sum((p - truth) ** 2, axis=1)
        return lambda w: w @ row / n
    if metric == "roc_auc":
        per_class = [_weighted_auc((t == j).astype(float), p[:, j]) for j in range(k)]

        def auc(w: np.ndarray) -> np.ndarray:
            aucs = np.column_stack([f(w) for f in per_class])
            finite = np.isfinite(aucs)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(finite, aucs, 0.0).sum(axis=1) / finite.sum(axis=1)

        return auc
    hit = truth * pred

    def macro(w: np.ndarray) -> np.ndarray:
        tp, predicted, actual = w @ hit, w @ pred, w @ truth
        if metric == "precision":
            per = _ratio(tp, predicted)
        elif metric == "recall":
            per = _ratio(tp, actual)
        else:
            per = _ratio(2.0 * tp, predicted + actual)
        present = actual > 0
        return (per * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)

    return macro


def paired_bootstrap(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    metric: str,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = 0.5,
    chunk_cells: int = 2_000_000,
) -> Comparison:
    """Paired bootstrap interval of ``metric(b) - metric(a)`` on the same holdout.

    Each resample draws n row indices with replacement, once, and scores both models on it; the
    interval is the percentile interval of the ``n_boot`` differences. The p-value is the
    two-sided percentile p-value, 2·min(P*(d ≤ 0), P*(d ≥ 0)) with a +1 correction, so it
    is below α exactly when 0 falls outside the interval (up to that correction). Resamples are
    drawn as index matrices of about ``chunk_cells`` cells and reduced to count matrices, so
    memory stays bounded and the work is vectorised.

    Args:
        y_true: labels (0/1 for binary metrics, class indices 0..K-1 when the scores are
            (n, K) class probabilities) or observed values (mae, rmse, r2).
        score_a: incumbent's scores (probabilities of class 1, or of each class) or
            predictions.
        score_b: challenger's scores or predictions on the same rows.
        metric: one of ``HIGHER_IS_BETTER``.
        n_boot: number of resamples.
        alpha: the interval is two-sided at 1 − alpha.
        seed: seed of the resampling, so a gate's verdict is reproducible.
        threshold: score at and above which a row is positive (accuracy, precision, recall, f1).
        chunk_cells: resamples are drawn in blocks of about this many indices.

    Raises:
        ValueError: unknown metric, bad inputs, ``n_boot`` < 100, or a bad ``alpha``.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(
            f"Unknown metric {metric!r} for paired_bootstrap; "
            f"choose one of {', '.join(sorted(HIGHER_IS_BETTER))}."
        )
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100 for a usable interval, got {n_boot}.")
    _check_alpha(alpha)
    if np.ndim(score_a) == 2 or np.ndim(score_b) == 2:
        t, a = check_multiclass(y_true, score_a)
        _, b = check_multiclass(y_true, score_b)
        if a.shape != b.shape:
            raise ValueError(
                f"score_a has shape {a.shape} and score_b {b.shape}; align both models' "
                "probabilities to the same classes."
            )
        stat_a, stat_b = _multiclass_statistic(metric, t, a), _multiclass_statistic(metric, t, b)
    else:
        t, a, b = _paired(y_true, score_a, score_b, binary=metric in _CLASSIFICATION)
        stat_a, stat_b = _statistic(metric, t, a, threshold), _statistic(metric, t, b, threshold)
    n = len(t)
    ones = np.ones((1, n))
    point_a, point_b = float(stat_a(ones)[0]), float(stat_b(ones)[0])

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, chunk_cells // n))
    diffs = np.empty(n_boot)
    offsets = None
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        if offsets is None or len(offsets) != k:
            offsets = (np.arange(k) * n)[:, None]
        counts = np.bincount((idx + offsets).ravel(), minlength=k * n).reshape(k, n)
        w = counts.astype(float)
        diffs[start : start + k] = stat_b(w) - stat_a(w)

    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < n_boot // 2:
        raise ValueError(
            f"Only {len(diffs)} of {n_boot} resamples gave a finite {metric}; "
            "the holdout has too few rows of one class for a bootstrap."
        )
    lo, hi = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    below = (np.count_nonzero(diffs <= 0) + 1) / (len(diffs) + 1)
    above = (np.count_nonzero(diffs >= 0) + 1) / (len(diffs) + 1)
    p = float(min(1.0, 2.0 * min(below, above)))
    return Comparison(
        metric,
        point_a,
        point_b,
        point_b - point_a,
        float(lo),
        float(hi),
        p,
        f"paired-bootstrap({n_boot})",
        n,
        HIGHER_IS_BETTER[metric],
    )
