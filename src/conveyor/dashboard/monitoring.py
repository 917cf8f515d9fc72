"""The monitoring pages' reports, computed once and kept, so a page never waits on thirty.

A monitoring report costs 5-15 ms per environment even on an empty log (the served version,
the window, the feedback join) and far more with traffic, so the list page of thirty
environments cannot compute them per request. ``Reports`` keeps each environment's last report
with the time it was computed (the end of its window), keyed by model, environment and the
served version (a new alias is a new report). The list page shows what is kept with its age:
a report younger than ``max_age_s`` as is, an older one as is while one worker thread computes
its successor, and a missing one computed in the request while the page's time budget lasts,
else by the worker (the page says so and reloads itself). One environment's page computes its
report in the request when the kept one is stale, and its history: the same report over the
windows before (``every`` seconds each, closed windows kept for ``closed_age_s``, as late
labels may still change their live quality; those not kept yet computed in the request while
its budget lasts, the rest by the worker).

Distributions of reference and live values are reduced to bins here (shared edges between both
sides' 1st and 99th percentiles, or the commonest categories), so the JSON twin carries what
the pictures draw, and a kept report holds no data frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from conveyor.monitor.report import Monitoring

__all__ = [
    "Kept",
    "Reports",
    "age_text",
    "compute",
    "distributions",
    "history_ends",
    "series_point",
]

log = logging.getLogger("conveyor.dashboard")

BINS = 24
HISTORY = 12  # closed windows before the open one on an environment's page


@dataclass(frozen=True)
class Kept:
    """A computed report (or why there is none): its window ends at ``at``; ``made`` is the
    monotonic clock when it was computed (a closed window's age is not its end's)."""

    at: datetime
    report: Mapping[str, Any] | None = None
    distributions: dict[str, Any] | None = None
    problem: str | None = None
    made: float = field(default_factory=time.monotonic)

    def age_s(self, now: datetime) -> float:
        """Seconds since the window's end."""
        return max((now - self.at).total_seconds(), 0.0)

    def older_than(self, seconds: float) -> bool:
        """Computed more than ``seconds`` ago."""
        return time.monotonic() - self.made > seconds


Key = tuple[Any, ...]


class Reports:
    """Kept reports, and one worker thread that computes the ones a page asked for.

    Args:
        max_age_s: a report older than this is recomputed (the controller's own monitoring
            turn is 30 s by default).
        closed_age_s: how long a closed window of an environment's history is kept.
        size: reports kept at most; the least recently used go first.
    """

    def __init__(
        self, *, max_age_s: float = 30.0, closed_age_s: float = 600.0, size: int = 4096
    ) -> None:
        self.max_age_s, self.closed_age_s, self.size = max_age_s, closed_age_s, size
        self._kept: OrderedDict[Key, Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: set[Key] = set()
        self._worker: ThreadPoolExecutor | None = None

    def get(self, key: Key) -> Kept | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: Key, kept: Kept) -> None:
        with self._lock:
            self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def pending(self, key: Key) -> bool:
        with self._lock:
            return key in self._pending

    def schedule(self, key: Key, work: Callable[[], Kept]) -> None:
        """Compute ``key`` on the worker thread unless it is already queued."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="dashboard-monitor")
            worker = self._worker

        def run() -> None:
            try:
                kept = work()
            except Exception as exc:  # kept as a problem: else the page would wait forever
                log.exception("monitoring report %s failed", key)
                kept = Kept(
                    at=datetime.now(UTC),
                    problem=f"The report could not be computed ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); the dashboard's log has the traceback.",
                )
            try:
                self.put(key, kept)
            finally:
                with self._lock:
                    self._pending.discard(key)

        worker.submit(run)

    def wait(self, timeout_s: float = 60.0) -> None:
        """Until the worker has nothing queued (tests and benchmarks read a settled page)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return
            time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)


# -- computing ---------------------------------------------------------------------------------


def compute(
    observe: Callable[..., Monitoring], *, end: datetime, seconds: float | None = None
) -> Kept:
    """One report through ``observe`` (``monitor.report.observe`` with the environment bound),
    its distributions reduced to bins, or the problem that stopped it."""
    from conveyor.exceptions import ConveyorError

    try:
        if seconds is None:
            seen = observe(now=end)
        else:
            from conveyor.config.monitor import WindowConfig

            seen = observe(now=end, window=WindowConfig(seconds=seconds))
    except ConveyorError as exc:
        return Kept(at=end, problem=str(exc))
    return Kept(at=end, report=seen.report, distributions=distributions(seen))


def history_ends(now: datetime, every_s: float, count: int = HISTORY) -> list[datetime]:
    """The ends of the ``count`` closed windows of ``every_s`` seconds before ``now``, oldest
    first, on boundaries counted from the epoch so that they repeat from one request to the
    next and can be kept."""
    edge = math.floor(now.timestamp() / every_s) * every_s
    return [datetime.fromtimestamp(edge - k * every_s, UTC) for k in range(count - 1, -1, -1)]


def series_point(kept: Kept) -> dict[str, Any]:
    """What an environment's history charts read from one window's report: traffic, errors,
    latency, prediction drift, live quality and each feature's deciding statistic."""
    point: dict[str, Any] = {"end": kept.at.isoformat(timespec="seconds")}
    r = kept.report
    if r is None:
        return {**point, "rows": 0, "problem": kept.problem}
    quality = r.get("quality") or {}
    metrics = quality.get("metrics") or {}
    shift = r.get("prediction_drift") or {}
    features: dict[str, Any] = {}
    for name, c in ((r.get("drift") or {}).get("columns") or {}).items():
        stats = c.get("stats") or {}
        features[name] = {
            "method": c.get("method"),
            "drifted": bool(c.get("drifted")),
            "stats": {k: v.get("statistic") for k, v in stats.items() if isinstance(v, dict)},
        }
    return {
        **point,
        "rows": r["rows"],
        "requests": r["requests"],
        "error_rate": r["error_rate"] if r["requests"] else None,
        "p99_ms": r["p99_ms"],
        "prediction_psi": shift.get("psi"),
        "prediction_drifted": shift.get("drifted"),
        "labelled_share": quality.get("labelled_share") if r["rows"] else None,
        "metrics": metrics,
        "features": features,
    }


# -- distributions -----------------------------------------------------------------------------


def distributions(seen: Monitoring) -> dict[str, Any]:
    """Each feature's reference and live distribution as bins (and the predictions'), for the
    histograms of an environment's page."""
    from conveyor.monitor.report import canon

    report, reference, window = seen.report, seen.reference, seen.window
    out: dict[str, Any] = {"features": {}, "predictions": None}
    drift = report.get("drift")
    if drift is None:
        return out
    for name, entry in drift["columns"].items():
        if name in reference.features.columns and name in window.inputs.columns:
            out["features"][name] = _bins(
                reference.features[name],
                window.inputs[name],
                categorical=entry.get("kind") != "numeric",
            )
    if report.get("prediction_drift") is not None:
        import pandas as pd

        served = [
            p
            for p, v in zip(window.predictions, window.versions, strict=True)
            if p is not None and v == report.get("version")
        ]
        ref = reference.predictions.tolist()
        categorical = reference.task != "regression"
        if categorical:  # 1, 1.0 and True name one class, as the report counts them
            ref, served = [canon(v) for v in ref], [canon(v) for v in served]
        out["predictions"] = _bins(
            pd.Series(ref, dtype=object), pd.Series(served, dtype=object), categorical=categorical
        )
    return out


def _bins(
    reference: pandas.Series, live: pandas.Series, *, categorical: bool
) -> dict[str, Any] | None:
    if categorical:
        return _categories(reference, live)
    return _histogram(reference, live)


def _numbers(series: pandas.Series) -> Any:
    import numpy as np
    import pandas as pd
    from pandas.api import types

    if types.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dtype, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        values = series.dropna().to_numpy(dtype="M8[ns]").view("int64").astype(np.float64)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def _histogram(reference: pandas.Series, live: pandas.Series) -> dict[str, Any] | None:
    """Shares of each side in ``BINS`` shared bins between both sides' 1st and 99th
    percentiles (values beyond fall in the end bins)."""
    import numpy as np

    ref, cur = _numbers(reference), _numbers(live)
    if len(ref) == 0 and len(cur) == 0:
        return None
    both = np.concatenate([ref, cur])
    lo, hi = (float(v) for v in np.percentile(both, [1, 99]))
    if not hi > lo:
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    shares = []
    for side in (ref, cur):
        counts, _ = np.histogram(np.clip(side, lo, hi), bins=edges)
        shares.append([float(c) / max(len(side), 1) for c in counts])
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "reference": shares[0],
        "live": shares[1],
        "n_reference": int(len(ref)),
        "n_live": int(len(cur)),
    }


def _categories(reference: pandas.Series, live: pandas.Series) -> dict[str, Any] | None:
    """Each side's share of the commonest categories; the rest summed as ``(other)``."""
    from conveyor.monitor.html import category_shares

    table = category_shares(reference, live)
    if table is None:
        return None
    return {
        "kind": "categorical",
        "categories": [str(c) for c in table.index],
        "reference": [float(v) for v in table["ref"]],
        "live": [float(v) for v in table["cur"]],
        "n_reference": int(reference.notna().sum()),
        "n_live": int(live.notna().sum()),
    }


def age_text(seconds: float) -> str:
    """How old a report is, for people: 4 s, 3 min, 2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
