"""Live analysis of a release: the candidate against the stable version, on the same traffic.

``collect`` reads both versions' rows of the prediction log over a window (since the step began),
only the routed roles (``serve``: the answer a caller got through the environment's routing;
``shadow``: a mirrored copy), never requests pinned to a version or sent as smoke, test or admin
calls, and the labels that arrived for them. ``judge`` runs every check of
:mod:`conveyor.release.live_checks` and returns ``promote`` (every check holds on enough data),
``wait`` (not enough data yet, or over a bound but not yet shown) or ``rollback`` (a check's
test rejects and its effect crosses the bound), with each check's evidence.

**Error rate of the verdict.** The judge is asked again and again while data arrives, and
several checks each get a chance to fail. Each check's p-value is always valid (it may be
looked at after every request, :mod:`conveyor.evaluate.sequential`), and the checks share the
release's ``alpha`` by Bonferroni: each configured check gets ``alpha / (checks x stages)``. So
a candidate as good as the stable version is rolled back, over the whole window and every look
in it, with probability at most ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.config.deploy import AnalysisConfig
from conveyor.release import live_checks
from conveyor.store.predictionlog.query import latest_labels, log_of, read_requests

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = ["ROUTED_ROLES", "Side", "Verdict", "collect", "judge"]

# The request-log roles that are an environment's routed traffic. Pinned requests
# (``?version=``), smoke, test and admin calls are logged under roles of their own and are
# never analysed: they are not a sample of the callers' requests.
ROUTED_ROLES = ("serve", "shadow")


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
    by_request: dict[str, list[Any]] = field(default_factory=dict)  # predictions per request
    status: dict[str, int] = field(default_factory=dict)  # HTTP status per request
    truth: dict[str, list[Any]] = field(default_factory=dict)  # labels per request, once known
    # (prediction, label) rows, grown by label() between looks rather than recounted at each
    _labelled: list[tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)

    def add(
        self,
        request_id: str,
        status: int,
        latency_ms: float,
        predictions: list[Any] | None = None,
        *,
        classes: bool = False,
    ) -> None:
        """Count one answer: its status, its latency (unless a 5xx) and its predictions."""
        self.requests += 1
        if request_id in self.truth or request_id in self.status:
            self._labelled = None  # a label came first, or an answer is replaced: recount
        self.status[request_id] = status
        if status >= 500:
            self.errors += 1
            return
        self.latencies.append(latency_ms)
        if status != 200 or predictions is None:
            return
        self.classes = self.classes or classes
        self.scores.extend(predictions)
        self.by_request[request_id] = predictions

    def label(self, request_id: str, labels: list[Any]) -> None:
        """The ground truth of one request, one label per row, as feedback sent it."""
        if request_id in self.truth:
            self._labelled = None  # the latest feedback wins: recount
        self.truth[request_id] = labels
        predictions = self.by_request.get(request_id)
        if self._labelled is not None and predictions is not None:
            if len(predictions) == len(labels):
                self._labelled.extend(zip(predictions, labels, strict=True))

    def labelled(self) -> list[tuple[Any, Any]]:
        """(prediction, label) per row of every answered request whose labels arrived."""
        if self._labelled is not None:  # kept up to date by add() and label()
            return self._labelled
        rows: list[tuple[Any, Any]] = []
        for rid, truth in self.truth.items():
            predictions = self.by_request.get(rid)
            if predictions is not None and len(predictions) == len(truth):
                rows.extend(zip(predictions, truth, strict=True))
        self._labelled = rows
        return rows

    @property
    def labels(self) -> list[tuple[Any, Any]]:
        return self.labelled()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        """The 99th percentile, once there are 100 latencies (below that it is the maximum)."""
        if len(self.latencies) < 100:
            return None
        return float(np.percentile(self.latencies, 99))

    @property
    def accuracy(self) -> float | None:
        rows = self.labelled()
        if not rows:
            return None
        return float(np.mean([p == y for p, y in rows]))

    def summary(self) -> dict[str, Any]:
        rows = self.labelled()
        accuracy = float(np.mean([p == y for p, y in rows])) if rows else None
        return {
            "version": self.version,
            "role": self.role,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "median_ms": round(float(np.median(self.latencies)), 3) if self.latencies else None,
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "labelled_rows": len(rows),
            "accuracy": None if accuracy is None else round(accuracy, 4),
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
    store: Store,
    model: str,
    environment: str,
    since: datetime,
    sides: list[tuple[int, str]],
) -> dict[tuple[int, str], Side]:
    """Read the window's request-log rows (and their labels) for each (version, role).

    Only the routed roles are read, and only those asked for: a row pinned to a version, or
    logged as a smoke, test or admin call, never reaches a verdict.

    Raises:
        ValueError: a side names a role that is not routed traffic (see ``ROUTED_ROLES``).
    """
    roles = sorted({r for _v, r in sides})
    unrouted = [r for r in roles if r not in ROUTED_ROLES]
    if unrouted:
        raise ValueError(
            f"Role {unrouted[0]!r} is not routed traffic; a release is judged on "
            f"{' and '.join(ROUTED_ROLES)} rows only."
        )
    out = {key: Side(version=key[0], role=key[1]) for key in sides}
    versions = sorted({v for v, _r in sides})
    files = log_of(store)
    table = read_requests(
        files,
        model,
        environment,
        since=since,
        versions=versions,
        roles=roles,
        columns=(
            "request_id",
            "row",
            "version",
            "role",
            "status",
            "latency_ms",
            "prediction",
            "probabilities",
        ),
    )
    names = table.column_names
    ids = table.column("request_id").to_pylist()
    rows = table.column("row").to_pylist()
    vers = table.column("version").to_pylist()
    role_of = table.column("role").to_pylist()
    status_of = table.column("status").to_pylist()
    latency = table.column("latency_ms").to_pylist()
    predicted = table.column("prediction").to_pylist()
    classes = (
        table.column("probabilities").is_valid().to_pylist()
        if "probabilities" in names
        else [False] * len(ids)
    )
    served = sorted({rid for rid, status in zip(ids, status_of, strict=True) if status == 200})
    labels = latest_labels(files, served, since)[0] if served else {}
    n = len(ids)
    i = 0
    while i < n:
        end = i + 1
        while end < n and rows[end] != 0 and ids[end] == ids[i]:
            end += 1
        rid, status = ids[i], int(status_of[i])
        side = out.get((int(vers[i]), role_of[i]))
        if side is not None:
            latency_ms = float(latency[i])
            values = predicted[i:end]
            if status != 200 or any(v is None for v in values):
                side.add(rid, status, latency_ms)  # an answer without predictions to compare
            else:
                side.add(rid, status, latency_ms, values, classes=bool(classes[i]))
                truth = labels.get(rid)
                if truth is not None:
                    side.label(rid, truth)
        i = end
    return out


def judge(
    stable: Side,
    candidate: Side,
    analysis: AnalysisConfig,
    paired: Side | None = None,
    *,
    stages: int = 1,
) -> Verdict:
    """Compare the candidate with the stable version under the environment's bounds.

    ``paired`` holds the other version's answers to the candidate's own requests (the stable
    version mirrored during a canary); without it, ``stable`` itself (a shadow's copies are of
    the stable version's requests). ``stages`` is how many windows of one release are judged
    apart (a canary's steps): each gets its share of ``alpha``.
    """
    alpha = float(analysis.alpha)
    other = paired if paired is not None else stable
    n = candidate.requests
    enough = n >= analysis.min_requests
    tolerance = analysis.max_latency_shift_ms
    tested = [
        True,  # error rate
        tolerance is not None,
        analysis.max_p99_ratio is not None,
        analysis.max_p99_ms is not None,
        analysis.max_prediction_psi is not None,
        analysis.min_agreement is not None,
        analysis.max_accuracy_drop is not None,
    ]
    each = alpha / (sum(tested) * max(stages, 1))  # Bonferroni over checks and stages

    pairs = live_checks.pair(candidate, other)
    checks: list[dict[str, Any]] = [
        live_checks.error_check(
            stable, candidate, other, pairs, analysis.max_error_rate, each, analysis.min_requests
        )
    ]
    if tolerance is not None:
        checks.append(live_checks.latency_check(stable, candidate, float(tolerance), each))
    if analysis.max_p99_ratio is not None:
        checks.append(
            live_checks.p99_ratio_check(
                stable, candidate, analysis.max_p99_ratio, analysis.p99_slack_ms, each
            )
        )
    if analysis.max_p99_ms is not None:
        checks.append(live_checks.p99_bound_check(candidate, analysis.max_p99_ms, each))
    if analysis.max_prediction_psi is not None and candidate.scores and other.scores:
        checks.append(
            live_checks.shift_check(
                stable,
                candidate,
                pairs,
                stable.classes or candidate.classes,
                analysis.max_prediction_psi,
                each,
                analysis.min_requests,
            )
        )
    agreement = live_checks.agreement_check(
        pairs, analysis.min_agreement, each, analysis.min_requests
    )
    if agreement is not None:
        checks.append(agreement)
    accuracy = live_checks.accuracy_check(
        stable, candidate, other, analysis.max_accuracy_drop, each, analysis.min_labels
    )
    if accuracy is not None:
        checks.append(accuracy)
    for check in checks:
        if isinstance(check.get("p_value"), float):
            check["p_value"] = float(f"{check['p_value']:.3g}")
            check["alpha"] = float(f"{check['alpha']:.3g}")

    results = [c.get("result") for c in checks]
    if "fail" in results:
        decision = "rollback"
    elif not enough or "wait" in results:
        decision = "wait"
    else:
        decision = "promote"
    if decision == "rollback":
        summary = "failed: " + "; ".join(
            f"{c['name']} {c['value']} (bound {c['bound']}; {c['test'].split(',')[0]} "
            f"p={c['p_value']:.2g} <= {c['alpha']:.2g})"
            for c in checks
            if c.get("result") == "fail"
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
