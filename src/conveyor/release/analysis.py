"""Live analysis of a release: the candidate against the stable version, on the same traffic.

Both versions are read from the request log over the same window (since the step began): error
rate (5xx answers), p99 latency, the distribution of predictions (PSI of the candidate's
scores against the stable version's), agreement where the candidate answered the same requests
(a shadow), and accuracy where labels arrived through feedback. The verdict is ``promote``
(every check holds on enough data), ``wait`` (not enough data yet, or a bound crossed on a
sample too small to be sure) or ``rollback`` (a check fails with the evidence to say so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import select

from conveyor.config.deploy import AnalysisConfig
from conveyor.store import models as m

__all__ = ["Side", "Verdict", "collect", "judge"]


@dataclass
class Side:
    """What one version did in the window (as served, or as a shadow)."""

    version: int
    role: str
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    scores: list[Any] = field(default_factory=list)  # the predicted label or value, per row
    classes: bool = False  # a classifier: scores are labels, compared as categories
    labels: list[Any] = field(default_factory=list)  # per row: (prediction, label) when known
    by_request: dict[str, list[Any]] = field(default_factory=dict)  # predictions per request

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        return float(np.percentile(self.latencies, 99)) if self.latencies else None

    @property
    def accuracy(self) -> float | None:
        if not self.labels:
            return None
        return float(np.mean([p == y for p, y in self.labels]))

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "role": self.role,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "labelled_rows": len(self.labels),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
        }


@dataclass
class Verdict:
    """``promote``, ``wait`` or ``rollback``, with every check and both sides' figures."""

    decision: str
    checks: list[dict[str, Any]]
    stable: dict[str, Any]
    candidate: dict[str, Any]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "summary": self.summary,
            "checks": self.checks,
            "stable": self.stable,
            "candidate": self.candidate,
        }


def collect(
    store: Any,
    model: str,
    environment: str,
    since: datetime,
    sides: list[tuple[int, str]],
) -> dict[tuple[int, str], Side]:
    """Read the window's request-log rows (and their labels) for each (version, role)."""
    out = {key: Side(version=key[0], role=key[1]) for key in sides}
    versions = sorted({v for v, _r in sides})
    query = (
        select(
            m.RequestLog.request_id,
            m.RequestLog.version,
            m.RequestLog.role,
            m.RequestLog.status,
            m.RequestLog.latency_ms,
            m.RequestLog.outputs,
        )
        .where(m.RequestLog.model == model)
        .where(m.RequestLog.environment == environment)
        .where(m.RequestLog.at >= since)
        .where(m.RequestLog.version.in_(versions))
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
        ids = [r.request_id for r in rows if r.status == 200]
        labels = _labels(conn, ids)
    for rid, version, role, status, latency, outputs in rows:
        side = out.get((version, role))
        if side is None:
            continue
        side.requests += 1
        if status >= 500:
            side.errors += 1
            continue
        side.latencies.append(latency)
        if status != 200:
            continue
        try:
            answer = orjson.loads(outputs)
        except orjson.JSONDecodeError:
            continue
        predictions = answer.get("predictions") or []
        side.classes = side.classes or bool(answer.get("probabilities"))
        side.scores.extend(predictions)
        side.by_request[rid] = predictions
        truth = labels.get(rid)
        if truth is not None and len(truth) == len(predictions):
            side.labels.extend(zip(predictions, truth, strict=True))
    return out


def _labels(conn: Any, request_ids: list[str]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i : i + 500]
        for rid, labels in conn.execute(
            select(m.Feedback.request_id, m.Feedback.labels).where(m.Feedback.request_id.in_(chunk))
        ):
            found[rid] = orjson.loads(labels)  # the latest feedback for a request wins
    return found


def judge(
    stable: Side, candidate: Side, analysis: AnalysisConfig, paired: Side | None = None
) -> Verdict:
    """Compare the candidate with the stable version under the environment's bounds.

    ``paired`` holds the other version's answers to the candidate's own requests (the stable
    version mirrored during a canary, or the stable answers a shadow copied): agreement is
    measured on those pairs. Without it, on ``stable``.
    """
    checks: list[dict[str, Any]] = []
    n = candidate.requests
    enough = n >= analysis.min_requests

    # error rate: the bound, and a one-sided test against the stable version's rate
    rate = candidate.error_rate
    p_value = _fisher_greater(candidate.errors, n, stable.errors, stable.requests)
    error_check = {
        "name": "error rate",
        "value": round(rate, 5),
        "bound": f"<= {analysis.max_error_rate}",
        "stable": round(stable.error_rate, 5),
        "p_value": None if p_value is None else round(p_value, 5),
    }
    if rate <= analysis.max_error_rate:
        error_check["result"] = "pass" if enough else "wait"
    elif p_value is not None and p_value < analysis.alpha and candidate.errors >= 3:
        error_check["result"] = "fail"
    else:
        error_check["result"] = "wait"  # over the bound, but not yet shown worse than stable
    checks.append(error_check)

    p99 = candidate.p99_ms
    if analysis.max_p99_ms is not None and p99 is not None:
        checks.append(
            {
                "name": "p99 latency",
                "value": round(p99, 3),
                "bound": f"<= {analysis.max_p99_ms} ms",
                "result": _bounded(p99 <= analysis.max_p99_ms, enough),
            }
        )
    if analysis.max_p99_ratio is not None and p99 is not None and stable.p99_ms:
        ratio = p99 / stable.p99_ms
        # milliseconds of scheduling noise double a 2 ms p99: a ratio counts only past the slack
        close = p99 - stable.p99_ms <= analysis.p99_slack_ms
        checks.append(
            {
                "name": "p99 latency vs stable",
                "value": round(ratio, 3),
                "bound": f"<= {analysis.max_p99_ratio}x ({stable.p99_ms:.2f} ms) or within "
                f"{analysis.p99_slack_ms:g} ms",
                "result": _bounded(close or ratio <= analysis.max_p99_ratio, enough),
            }
        )
    if analysis.max_prediction_psi is not None and candidate.scores and stable.scores:
        shift = _shift(stable.scores, candidate.scores, analysis, stable.classes)
        if shift is not None:
            psi, p_ks, shifted = shift
            checks.append(
                {
                    "name": "prediction PSI",
                    "value": round(psi, 4),
                    "bound": f"< {analysis.max_prediction_psi} (or test p >= {analysis.alpha})",
                    "p_value": None if p_ks is None else round(p_ks, 5),
                    "result": _bounded(not shifted, enough),
                }
            )
    agreement = _agreement(paired if paired is not None else stable, candidate)
    if agreement is not None:
        share, pairs = agreement
        check = {"name": "agreement", "value": round(share, 4), "pairs": pairs}
        if analysis.min_agreement is not None:
            check["bound"] = f">= {analysis.min_agreement}"
            check["result"] = _bounded(
                share >= analysis.min_agreement, pairs >= analysis.min_requests
            )
        else:
            check["result"] = "info"
        checks.append(check)
    acc_a, acc_b = stable.accuracy, candidate.accuracy
    labelled = min(len(stable.labels), len(candidate.labels))
    if acc_b is not None and acc_a is not None:
        check = {
            "name": "accuracy from labels",
            "value": round(acc_b, 4),
            "stable": round(acc_a, 4),
            "labelled_rows": labelled,
        }
        if analysis.max_accuracy_drop is not None:
            # worse only when shown: below the bound AND a one-sided Fisher test on the counts
            # of right and wrong answers says so (a hundred labels swing accuracy by +-4 points)
            right_b = sum(p == y for p, y in candidate.labels)
            right_a = sum(p == y for p, y in stable.labels)
            p_worse = _fisher_greater(
                len(candidate.labels) - right_b,
                len(candidate.labels),
                len(stable.labels) - right_a,
                len(stable.labels),
            )
            below = acc_b < acc_a - analysis.max_accuracy_drop
            shown = below and p_worse is not None and p_worse < analysis.alpha
            check["bound"] = f">= stable - {analysis.max_accuracy_drop} (or not shown worse)"
            check["p_value"] = None if p_worse is None else round(p_worse, 5)
            check["result"] = _bounded(not shown, labelled >= analysis.min_labels)
        else:
            check["result"] = "info"
        checks.append(check)

    results = [c.get("result") for c in checks]
    if "fail" in results:
        decision = "rollback"
    elif not enough or "wait" in results:
        decision = "wait"
    else:
        decision = "promote"
    failed = [c["name"] for c in checks if c.get("result") == "fail"]
    if decision == "rollback":
        summary = "failed: " + "; ".join(
            f"{c['name']} {c['value']} (bound {c['bound']})" for c in checks if c["name"] in failed
        )
    elif not enough:
        summary = f"waiting: {n} of {analysis.min_requests} requests reached the candidate"
    elif decision == "wait":
        summary = "waiting: " + ", ".join(c["name"] for c in checks if c.get("result") == "wait")
    else:
        summary = f"healthy on {n} requests: " + ", ".join(
            f"{c['name']} {c['value']}" for c in checks
        )
    return Verdict(decision, checks, stable.summary(), candidate.summary(), summary)


def _bounded(ok: bool, enough: bool) -> str:
    if not ok:
        return "fail" if enough else "wait"
    return "pass" if enough else "wait"


def _fisher_greater(errors_b: int, n_b: int, errors_a: int, n_a: int) -> float | None:
    """P-value that the candidate's error rate is higher than the stable one's."""
    if n_b == 0 or n_a == 0:
        return None
    from scipy.stats import fisher_exact

    table = [[errors_b, n_b - errors_b], [errors_a, n_a - errors_a]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _shift(
    reference: list[Any], current: list[Any], analysis: AnalysisConfig, labels: bool
) -> tuple[float, float | None, bool] | None:
    """PSI of the candidate's predictions against the stable ones, and whether they shifted:
    PSI over the bound AND a significant test (chi-square on predicted classes, KS on
    regression values), so a small sample's noisy PSI alone never rolls back.

    Classifiers are compared on predicted labels, not probabilities: two sound models calibrate
    differently (HistGradientBoosting's scores take a few distinct values), and that is not
    the harm this check looks for."""
    from conveyor.data.drift import column_drift

    try:
        entry = column_drift(
            np.asarray([str(v) for v in reference], dtype=object)
            if labels
            else np.asarray(reference, dtype=float),
            np.asarray([str(v) for v in current], dtype=object)
            if labels
            else np.asarray(current, dtype=float),
            name="predictions",
            kind="categorical" if labels else "numeric",
            methods=("chi2", "psi") if labels else ("ks", "psi"),
            alpha=analysis.alpha,
            psi_threshold=analysis.max_prediction_psi or 0.2,
        )
    except Exception:
        return None
    stats = entry["stats"]
    if "psi" not in stats:
        return None
    p_ks = (stats.get("chi2") or stats.get("ks") or {}).get("p_value")
    return float(stats["psi"]["statistic"]), p_ks, bool(entry["drifted"])


def _agreement(stable: Side, candidate: Side) -> tuple[float, int] | None:
    """Share of rows where both versions predicted the same, on requests both answered."""
    common = stable.by_request.keys() & candidate.by_request.keys()
    if not common:
        return None
    same = total = 0
    for rid in common:
        a, b = stable.by_request[rid], candidate.by_request[rid]
        if len(a) != len(b):
            continue
        total += len(a)
        same += sum(x == y for x, y in zip(a, b, strict=True))
    return (same / total, len(common)) if total else None
