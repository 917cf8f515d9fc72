"""Gates on a trained candidate: thresholds, comparison with an environment, fairness,
latency and size.

A comparison scores the candidate and the version the environment serves on the *candidate's*
holdout, and judges the difference with a paired test (DeLong for ROC AUC, McNemar for accuracy,
a paired bootstrap otherwise): the verdict reads only the confidence interval of the difference,
so noise neither promotes nor blocks, and a holdout too small to tell says ``inconclusive``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from conveyor.config.gates import Comparison, Threshold
from conveyor.evaluate.compare import HIGHER_IS_BETTER, delong, mcnemar, paired_bootstrap
from conveyor.evaluate.metrics import by_slice, classification_metrics, regression_metrics
from conveyor.evaluate.steps import (
    encode_labels,
    features_of,
    model_classes,
    multiclass_by_slice,
    positive_of,
    predict_scores,
)
from conveyor.evaluate.values import format_signed
from conveyor.gates.verdicts import GateResult, blocking, fmt

# What an environment serves, for comparisons: (version number, fitted model), or None.
IncumbentLookup = Callable[[str], "tuple[int, Any] | None"]


@dataclass
class Candidate:
    """The model under judgement and what it is judged on.

    For a classifier, ``truth()`` and ``scores()`` are in the model's own terms: 0/1 labels
    and the positive class's probability when it has two classes (``positive_class``, else its
    second), class indices and the (n, K) probabilities when it has more. An incumbent is
    scored against the same classes, so the two are compared column by column.
    """

    model_name: str
    task: str
    target: str
    model: Any
    holdout: pd.DataFrame
    metrics: dict[str, Any]
    file_size: int
    evaluation_step: str
    threshold: float = 0.5
    serving: Any = None  # a faster predictor with the same answers (ONNX), for latency
    positive_class: Any = None
    _scores: np.ndarray | None = field(default=None, repr=False)

    @property
    def y(self) -> np.ndarray:
        """The target as written in the holdout."""
        return self.holdout[self.target].to_numpy()

    @property
    def classes(self) -> list[Any]:
        """The candidate's classes (a classifier only)."""
        return model_classes(self.model)

    def truth(self) -> np.ndarray:
        """The target in the terms ``scores()`` are in (see the class docstring)."""
        if self.task == "regression":
            return self.y.astype(float)
        return encode_labels(self.y, self.classes, self.positive_class)

    def scores(self) -> np.ndarray:
        if self._scores is None:
            self._scores = self.score(self.model)
        return self._scores

    def score(self, model: Any) -> np.ndarray:
        """Another model's scores on the holdout, aligned to the candidate's classes."""
        features = features_of(model, self.holdout, self.target)
        if self.task == "regression":
            return predict_scores(model, features, self.task)
        return predict_scores(
            model, features, self.task, classes=self.classes, positive_class=self.positive_class
        )


def evaluate_gate(gate: Any, candidate: Candidate, incumbent: IncumbentLookup) -> GateResult:
    """Judge one gate from conveyor.yaml; never raises for a problem of the candidate itself
    (that is an ``error`` verdict with the reason)."""
    start = time.perf_counter()
    try:
        kind = gate.kind
        if kind == "threshold":
            result = _threshold(gate.expression, candidate)
        elif kind == "compare":
            result = _compare(gate.expression, gate.alpha, candidate, incumbent)
        elif kind == "fairness":
            result = _fairness(gate.fairness, candidate, gate.alpha)
        elif kind == "latency":
            result = _latency(gate.latency, candidate)
        else:
            result = _size(gate.size, candidate)
    except (ValueError, KeyError, TypeError) as exc:
        result = GateResult("", gate.kind, "error", f"could not be evaluated: {exc}")
    result.name = gate.label
    result.kind = gate.kind
    result.duration_s = time.perf_counter() - start
    result.blocks = blocking(result, gate.on_inconclusive)
    return result


def _threshold(expr: Threshold, c: Candidate) -> GateResult:
    if expr.metric not in c.metrics:
        produced = ", ".join(sorted(c.metrics)) or "none"
        return GateResult(
            "",
            "threshold",
            "error",
            f"no metric {expr.metric!r}: step {c.evaluation_step!r} produced {produced}",
            {"metric": expr.metric, "produced": sorted(c.metrics)},
        )
    value = c.metrics[expr.metric]
    evidence = {"metric": expr.metric, "value": value, "op": expr.op, "bound": expr.value}
    if value is None or not math.isfinite(float(value)):
        return GateResult(
            "", "threshold", "fail", f"{expr.metric} is undefined (NaN) on the holdout", evidence
        )
    ok = expr.holds(float(value))
    verdict = "pass" if ok else "fail"
    truth = "holds" if ok else "does not hold"
    summary = f"{expr.metric} = {fmt(float(value))}; {expr.op} {expr.value:g} {truth}"
    return GateResult("", "threshold", verdict, summary, evidence)


def judge(cmp: Any, op: str, offset: float) -> str:
    """pass / fail / inconclusive for ``b OP a + offset`` from the interval of ``b − a``.

    ``>=``: pass if the whole interval is at or above ``offset``, fail if it is wholly below,
    else inconclusive; ``>`` asks for strictly above. ``<=``/``<`` mirror them for losses.
    """
    low, high = cmp.ci_low, cmp.ci_high
    if op == ">=":
        return "pass" if low >= offset else "fail" if high < offset else "inconclusive"
    if op == ">":
        return "pass" if low > offset else "fail" if high <= offset else "inconclusive"
    if op == "<=":
        return "pass" if high <= offset else "fail" if low > offset else "inconclusive"
    return "pass" if high < offset else "fail" if low >= offset else "inconclusive"


def paired_comparison(
    metric: str,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    alpha: float,
    task: str,
    threshold: float = 0.5,
) -> Any:
    """The paired test that fits ``metric``: DeLong (binary ROC AUC), McNemar on correctness
    (accuracy, for any number of classes), or a paired bootstrap (anything else; (n, K) scores
    give the K-class versions of the metrics).

    Args:
        y: 0/1 labels with 1-d scores, class indices with (n, K) scores, or observed values.
        a, b: the incumbent's and the challenger's scores on the same rows.
    """
    multiclass = np.ndim(a) == 2
    if metric == "roc_auc" and not multiclass:
        return delong(y, a, b, alpha=alpha)
    if metric == "accuracy" and task == "classification":
        return mcnemar(y, _hard(a, threshold), _hard(b, threshold), alpha=alpha)
    return paired_bootstrap(y, a, b, metric, alpha=alpha, seed=0, threshold=threshold)


def _hard(scores: np.ndarray, threshold: float) -> np.ndarray:
    if np.ndim(scores) == 2:
        return np.asarray(scores).argmax(axis=1)
    return (np.asarray(scores) >= threshold).astype(int)


def _compare(
    expr: Comparison, alpha: float, c: Candidate, incumbent: IncumbentLookup
) -> GateResult:
    metric = expr.metric
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(
            f"{metric!r} cannot be compared with a paired test; comparable metrics: "
            f"{', '.join(HIGHER_IS_BETTER)}"
        )
    served = incumbent(expr.env)
    if served is None:
        return GateResult(
            "",
            "compare",
            "skipped",
            f"no version serves {expr.env!r} yet: nothing to compare with",
            {"env": expr.env},
        )
    version, model = served
    a = c.score(model)
    cmp = paired_comparison(
        metric, c.truth(), a, c.scores(), alpha=alpha, task=c.task, threshold=c.threshold
    )
    verdict = judge(cmp, expr.op, expr.offset)
    evidence = {
        **cmp.as_dict(),
        "alpha": alpha,
        "env": expr.env,
        "incumbent_version": version,
        "op": expr.op,
        "offset": expr.offset,
    }
    shift = f" {'+' if expr.offset >= 0 else '-'} {abs(expr.offset):g}" if expr.offset else ""
    interval = f"[{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}]"
    what = {
        "pass": "shown",
        "fail": "shown NOT",
        "inconclusive": "cannot tell (interval straddles the bound) whether",
    }[verdict]
    summary = (
        f"{metric} {fmt(cmp.b)} vs {expr.env} v{version} {fmt(cmp.a)}: "
        f"diff {format_signed(cmp.diff)}, "
        f"{int((1 - alpha) * 100)}% CI {interval} ({cmp.method}, n={cmp.n}); {what} "
        f"{metric} {expr.op} {expr.env}{shift}"
    )
    return GateResult("", "compare", verdict, summary, evidence)


def _fairness(cfg: Any, c: Candidate, alpha: float = 0.05) -> GateResult:
    group = cfg.group
    if group not in c.holdout.columns:
        raise ValueError(
            f"group column {group!r} is not in the holdout; it has "
            f"{', '.join(map(str, c.holdout.columns))}"
        )
    if cfg.metric == "selection_rate":
        return _parity(cfg, c, alpha)
    truth, scores = c.truth(), c.scores()
    if c.task == "classification" and np.ndim(scores) == 2:
        groups = multiclass_by_slice(
            c.holdout, [group], truth.astype(int), scores, c.classes, min_rows=cfg.min_rows
        )[group]
    else:
        fn = classification_metrics if c.task == "classification" else regression_metrics
        frame = pd.DataFrame(
            {group: c.holdout[group].to_numpy(), "y_true": truth, "y_score": scores}
        )
        kwargs: dict[str, Any] = {"threshold": c.threshold} if c.task == "classification" else {}
        groups = by_slice(frame, [group], fn, min_rows=cfg.min_rows, **kwargs)[group]
    values: dict[str, float] = {}
    left_out: dict[str, str] = {}
    for name, metrics in groups.items():
        value = metrics.get(cfg.metric)
        if value is None:
            raise ValueError(f"the {c.task} metrics have no {cfg.metric!r}")
        if metrics["n"] < cfg.min_rows or not math.isfinite(float(value)):
            left_out[name] = f"{metrics['n']} rows" + (
                "" if math.isfinite(float(value)) else ", metric undefined"
            )
            continue
        values[name] = float(value)
    evidence: dict[str, Any] = {
        "group": group,
        "metric": cfg.metric,
        "max_gap": cfg.max_gap,
        "min_rows": cfg.min_rows,
        "groups": {k: {"value": v, "n": groups[k]["n"]} for k, v in values.items()},
        "left_out": left_out,
    }
    if len(values) < 2:
        return GateResult(
            "",
            "fairness",
            "inconclusive",
            f"fewer than 2 groups of {group!r} have {cfg.min_rows}+ rows; cannot measure a gap",
            evidence,
        )
    low = min(values, key=values.__getitem__)
    high = max(values, key=values.__getitem__)
    gap = values[high] - values[low]
    evidence.update(gap=gap, lowest=low, highest=high)
    verdict = "pass" if gap <= cfg.max_gap else "fail"
    if gap == 0:
        summary = (
            f"{cfg.metric} is {values[low]:.4f} in each of the {len(values)} groups of {group}; "
            f"max gap {cfg.max_gap:g}"
        )
    else:
        summary = (
            f"{cfg.metric} gap across {group} = {gap:.4f} ({high} {values[high]:.4f} vs {low} "
            f"{values[low]:.4f}); max {cfg.max_gap:g}"
        )
    return GateResult("", "fairness", verdict, summary, evidence)


def _parity(cfg: Any, c: Candidate, alpha: float) -> GateResult:
    """Demographic parity: the gap in the share of rows predicted positive between groups.

    Every pair of groups with ``min_rows``+ rows gets a Newcombe interval for its gap (the
    difference of two independent proportions), Bonferroni-adjusted over the pairs: the gate
    passes when every interval lies within ``max_gap``, fails when one lies wholly beyond it,
    and is inconclusive otherwise (groups too small to tell).
    """
    if c.task != "classification":
        raise ValueError("selection_rate is a classification metric; this model is a regressor")
    selected = _selected(c)
    column = c.holdout[cfg.group].reset_index(drop=True)
    counts: dict[str, tuple[int, int]] = {}
    left_out: dict[str, str] = {}
    for value, rows in column.groupby(column, dropna=False, sort=True).groups.items():
        name = "null" if pd.isna(value) else str(value)
        index = np.asarray(list(rows), dtype=int)
        if len(index) < cfg.min_rows:
            left_out[name] = f"{len(index)} rows"
            continue
        counts[name] = (int(selected[index].sum()), len(index))
    evidence: dict[str, Any] = {
        "group": cfg.group,
        "metric": "selection_rate",
        "max_gap": cfg.max_gap,
        "min_rows": cfg.min_rows,
        "alpha": alpha,
        "groups": {k: {"value": x / n, "n": n, "selected": x} for k, (x, n) in counts.items()},
        "left_out": left_out,
    }
    if len(counts) < 2:
        return GateResult(
            "",
            "fairness",
            "inconclusive",
            f"fewer than 2 groups of {cfg.group!r} have {cfg.min_rows}+ rows; cannot measure a gap",
            evidence,
        )
    names = list(counts)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    level = alpha / len(pairs)
    widest: tuple[float, float, float, str, str] | None = None
    verdicts = []
    for i, j in pairs:
        (hi_name, lo_name) = (names[i], names[j])
        if counts[hi_name][0] / counts[hi_name][1] < counts[lo_name][0] / counts[lo_name][1]:
            hi_name, lo_name = lo_name, hi_name
        gap, low, high = newcombe_gap(*counts[hi_name], *counts[lo_name], alpha=level)
        verdicts.append("fail" if low > cfg.max_gap else "pass" if high <= cfg.max_gap else "?")
        if widest is None or gap > widest[0]:
            widest = (gap, low, high, hi_name, lo_name)
    assert widest is not None
    gap, low, high, hi_name, lo_name = widest
    verdict = (
        "fail"
        if "fail" in verdicts
        else "pass"
        if all(v == "pass" for v in verdicts)
        else "inconclusive"
    )
    rate = {k: x / n for k, (x, n) in counts.items()}
    evidence.update(
        gap=gap, ci_low=low, ci_high=high, highest=hi_name, lowest=lo_name, pairs=len(pairs)
    )
    confidence = f"{int(round((1 - alpha) * 100))}% CI"
    summary = (
        f"selection_rate gap across {cfg.group} = {gap:.4f} ({hi_name} {rate[hi_name]:.4f} vs "
        f"{lo_name} {rate[lo_name]:.4f}), {confidence} [{low:.4f}, {high:.4f}] over "
        f"{len(pairs)} pair(s); max {cfg.max_gap:g}"
    )
    if verdict == "inconclusive":
        summary += "; the groups are too small to tell"
    return GateResult("", "fairness", verdict, summary, evidence)


def _selected(c: Candidate) -> np.ndarray:
    """Which rows the candidate selects: positive at the threshold, or predicted as
    ``positive_class`` among K classes."""
    scores = c.scores()
    if np.ndim(scores) == 1:
        return np.asarray(scores) >= c.threshold
    if c.positive_class is None:
        raise ValueError(
            f"selection_rate of a {len(c.classes)}-class model needs model.positive_class (the "
            "class whose selection is compared across groups)"
        )
    chosen = c.classes.index(positive_of(c.classes, c.positive_class))
    return np.asarray(scores).argmax(axis=1) == chosen


def newcombe_gap(
    x1: int, n1: int, x2: int, n2: int, *, alpha: float = 0.05
) -> tuple[float, float, float]:
    """``p1 - p2`` of two independent proportions and its Newcombe (hybrid Wilson score)
    interval, which keeps its coverage for small groups and rates near 0 or 1.

    Raises:
        ValueError: an empty group or counts outside 0..n.
    """
    for x, n in ((x1, n1), (x2, n2)):
        if n <= 0 or not 0 <= x <= n:
            raise ValueError(f"a proportion needs 0 <= x <= n and n > 0, got {x}/{n}")
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))

    def wilson(x: int, n: int) -> tuple[float, float, float]:
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return p, centre - half, centre + half

    p1, l1, u1 = wilson(x1, n1)
    p2, l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def _latency(cfg: Any, c: Candidate) -> GateResult:
    features = features_of(c.model, c.holdout, c.target)
    if len(features) == 0:
        raise ValueError("the holdout is empty; no rows to time")
    predictor, runtime = (c.serving, "onnx") if c.serving is not None else (c.model, "native")
    method = "predict_proba" if c.task == "classification" else "predict"
    call = getattr(predictor, method)
    rows = [features.iloc[[i % len(features)]] for i in range(cfg.rows)]
    for row in rows[:10]:  # warm caches and lazy initialisation
        call(row)
    timings = np.empty(len(rows))
    for i, row in enumerate(rows):
        start = time.perf_counter_ns()
        call(row)
        timings[i] = (time.perf_counter_ns() - start) / 1e6
    p50, p99 = (float(np.percentile(timings, q)) for q in (50, 99))
    evidence = {
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": float(timings.max()),
        "budget_ms": cfg.p99_ms,
        "rows": len(rows),
        "runtime": runtime,
    }
    verdict = "pass" if p99 <= cfg.p99_ms else "fail"
    summary = (
        f"p99 of single-row {method} = {p99:.2f} ms ({runtime}, {len(rows)} calls, "
        f"p50 {p50:.2f} ms); budget {cfg.p99_ms:g} ms"
    )
    return GateResult("", "latency", verdict, summary, evidence)


def _size(cfg: Any, c: Candidate) -> GateResult:
    mb = c.file_size / 1e6
    evidence = {"bytes": c.file_size, "max_mb": cfg.max_mb, "mb": mb}
    verdict = "pass" if mb <= cfg.max_mb else "fail"
    return GateResult(
        "", "size", verdict, f"model file {mb:.2f} MB; budget {cfg.max_mb:g} MB", evidence
    )
