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

from conveyor.config.gates import Comparison, Threshold
from conveyor.evaluate.compare import HIGHER_IS_BETTER, delong, mcnemar, paired_bootstrap
from conveyor.evaluate.metrics import by_slice, classification_metrics, regression_metrics
from conveyor.evaluate.steps import features_of, predict_scores
from conveyor.evaluate.values import format_signed
from conveyor.gates.verdicts import GateResult, blocking, fmt

# What an environment serves, for comparisons: (version number, fitted model), or None.
IncumbentLookup = Callable[[str], "tuple[int, Any] | None"]


@dataclass
class Candidate:
    """The model under judgement and what it is judged on."""

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
    _scores: np.ndarray | None = field(default=None, repr=False)

    @property
    def y(self) -> np.ndarray:
        return self.holdout[self.target].to_numpy()

    def scores(self) -> np.ndarray:
        if self._scores is None:
            features = features_of(self.model, self.holdout, self.target)
            self._scores = predict_scores(self.model, features, self.task)
        return self._scores


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
            result = _fairness(gate.fairness, candidate)
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
    metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, *, alpha: float, task: str
) -> Any:
    """The paired test that fits ``metric``: DeLong, McNemar, or a paired bootstrap."""
    if metric == "roc_auc":
        return delong(y, a, b, alpha=alpha)
    if metric == "accuracy" and task == "classification":
        cmp = mcnemar(y, (a >= 0.5).astype(int), (b >= 0.5).astype(int), alpha=alpha)
        return cmp
    return paired_bootstrap(y, a, b, metric, alpha=alpha, seed=0)


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
    features = features_of(model, c.holdout, c.target)
    a = predict_scores(model, features, c.task)
    cmp = paired_comparison(metric, c.y, a, c.scores(), alpha=alpha, task=c.task)
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


def _fairness(cfg: Any, c: Candidate) -> GateResult:
    group = cfg.group
    if group not in c.holdout.columns:
        raise ValueError(
            f"group column {group!r} is not in the holdout; it has "
            f"{', '.join(map(str, c.holdout.columns))}"
        )
    fn = classification_metrics if c.task == "classification" else regression_metrics
    frame = pd.DataFrame({group: c.holdout[group].to_numpy(), "y_true": c.y, "y_score": c.scores()})
    kwargs = {"threshold": c.threshold} if c.task == "classification" else {}
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
