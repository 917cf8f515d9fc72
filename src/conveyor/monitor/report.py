"""One look at an environment: its traffic against the served version's reference.

``monitor_report`` reads a window of the request log, compares the served inputs with the
reference feature by feature (``data/drift.drift_report``: each column's statistics computed
once), the served predictions with the reference predictions (labels as categories for a
classifier, values for a regressor), joins the labels sent through feedback to measure live
quality, and adds the error rate and p99 latency. The dict it returns is the contract the
alert rules read (``monitor/alerts.py``), typed as :class:`MonitorReport`; ``prometheus_text``
renders its gauges. Nothing here prints: the CLI does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from conveyor.exceptions import DataError, MonitorError
from conveyor.monitor.reference import Reference, reference_for
from conveyor.monitor.windows import Window, feedback_for, nothing_routed, read_window

if TYPE_CHECKING:
    import pandas

    from conveyor.config import ProjectConfig
    from conveyor.config.monitor import DriftSettings, MonitorConfig, WindowConfig
    from conveyor.data.drift import DriftReport
    from conveyor.registry.registry import Registry, Version
    from conveyor.store.metadata import Store

__all__ = [
    "LiveQuality",
    "MonitorReport",
    "Monitoring",
    "PredictionDrift",
    "WindowSpan",
    "monitor_report",
    "observe",
    "canon",
    "canon_all",
    "prometheus_text",
]

_KINDS = {
    "integer": "numeric",
    "number": "numeric",
    "datetime": "numeric",
    "string": "categorical",
    "boolean": "categorical",
}


class WindowSpan(TypedDict):
    """The span a report covers: the last ``seconds`` or the last ``last`` requests."""

    seconds: float | None
    last: int | None
    start: str  # ISO 8601, UTC
    end: str


class PredictionDrift(TypedDict):
    """The served version's predictions against the reference predictions."""

    psi: float | None
    drifted: bool
    p_value: float | None


class LiveQuality(TypedDict):
    """Metrics on the rows whose labels came back through feedback."""

    labelled: int
    labelled_share: float
    label_delay_s_p50: float | None
    metrics: dict[str, float]  # accuracy, precision, recall, f1; or mae, rmse
    by_version: dict[int, dict[str, float]]  # the same metrics per version, plus "labelled"


class MonitorReport(TypedDict):
    """One environment's report: what alert rules judge, the CLI, the HTML page, the
    controller and the dashboard show, and ``prometheus_text`` exports."""

    model: str
    environment: str
    version: int
    window: WindowSpan
    rows: int
    requests: int
    enough: bool  # at least monitor.min_rows rows: verdicts may be drawn
    error_rate: float
    p99_ms: float | None
    drift: DriftReport | None  # None: no rows in the window
    prediction_drift: PredictionDrift | None
    quality: LiveQuality


@dataclass
class Monitoring:
    """A report and what it was computed from (the HTML page plots these)."""

    report: MonitorReport
    reference: Reference
    window: Window
    version: Version


def monitor_report(
    config: ProjectConfig,
    registry: Registry,
    *,
    model: str | None = None,
    environment: str | None = None,
    window: WindowConfig | Window | None = None,
    now: datetime | None = None,
    reference: Reference | pandas.DataFrame | None = None,
) -> MonitorReport:
    """The monitoring report of one environment (the contract ``monitor/alerts.py`` reads).

    Args:
        config: the project's config; ``config.monitor`` gives the environment, window,
            ``min_rows`` and drift settings (defaults when it has no ``monitor:`` section).
        registry: the project's registry over its open stores.
        model: the model (default: ``model.name`` of conveyor.yaml).
        environment: the environment (default: ``monitor.environment``, ``production``).
        window: a window setting, or a window already read (default: ``monitor.window``).
        now: the window's end (default: the current time).
        reference: the reference rows as a frame, or a reference already built (default:
            the served version's stored holdout).

    Raises:
        MonitorError: no model named, nothing routed to the environment, no reference.
    """
    return observe(
        config,
        registry,
        model=model,
        environment=environment,
        window=window,
        now=now,
        reference=reference,
    ).report


def observe(
    config: ProjectConfig,
    registry: Registry,
    *,
    model: str | None = None,
    environment: str | None = None,
    window: WindowConfig | Window | None = None,
    now: datetime | None = None,
    reference: Reference | pandas.DataFrame | None = None,
) -> Monitoring:
    """``monitor_report`` with the reference and window it used (for ``write_html``).

    Raises:
        MonitorError: as ``monitor_report``.
    """
    from conveyor.config.monitor import MonitorConfig

    settings = config.monitor or MonitorConfig()
    model = model or (config.model.name if config.model is not None else None)
    if not model:
        raise MonitorError(
            "Name the model to monitor (conveyor.yaml has no 'model:' section to take it from)."
        )
    environment = environment or settings.environment
    version = served_version(registry, model, environment)
    if isinstance(reference, Reference):
        if reference.model != model:
            raise MonitorError(
                f"The reference given is of model {reference.model!r}, not {model!r}."
            )
        ref = reference
    else:
        ref = reference_for(
            registry,
            version,
            features=reference,
            allow_pickle=bool(config.registry.allow_pickle),
            trusted_extra=tuple(config.model.trusted_types) if config.model else (),
        )
    if isinstance(window, Window):
        if (window.model, window.environment) != (model, environment):
            raise MonitorError(
                f"The window given is of {window.model}@{window.environment}, not "
                f"{model}@{environment}."
            )
        win = window
    else:
        spec = window or settings.window
        win = read_window(
            registry.store,
            model,
            environment,
            seconds=spec.seconds,
            last=spec.last,
            now=now,
            signature=version.signature,
        )
    report = build_report(win, ref, version, settings, registry.store)
    return Monitoring(report=report, reference=ref, window=win, version=version)


def served_version(registry: Registry, model: str, environment: str) -> Version:
    """The version an environment's alias serves.

    Raises:
        MonitorError: no such model, or nothing routed to the environment.
    """
    from conveyor.exceptions import ModelNotFound

    number = registry.alias(model, environment)
    if number is None:
        with registry.store.session() as s:
            raise MonitorError(nothing_routed(model, environment, s))
    try:
        return registry.version(model, number)
    except ModelNotFound as exc:
        raise MonitorError(str(exc)) from exc


def build_report(
    window: Window,
    reference: Reference,
    version: Version,
    settings: MonitorConfig,
    store: Store,
) -> MonitorReport:
    """The report dict from a window and a reference (``store`` holds the feedback)."""
    import numpy as np

    statuses, latencies = window.statuses, window.latencies_ms
    answered = latencies[statuses < 500]
    return {
        "model": window.model,
        "environment": window.environment,
        "version": version.version,
        "window": {
            "seconds": window.seconds,
            "last": window.last,
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
        },
        "rows": window.rows,
        "requests": window.requests,
        "enough": window.rows >= settings.min_rows,
        "error_rate": float((statuses >= 500).sum() / window.requests) if window.requests else 0.0,
        "p99_ms": float(np.percentile(answered, 99)) if len(answered) else None,
        "drift": feature_drift(window, reference, version, settings.drift),
        "prediction_drift": prediction_drift(window, reference, version, settings.drift),
        "quality": live_quality(store, window, version),
    }


# -- drift -------------------------------------------------------------------------------------


def feature_drift(
    window: Window, reference: Reference, version: Version, settings: DriftSettings
) -> DriftReport | None:
    """``drift_report`` of the served inputs against the reference features (None: no rows)."""
    from conveyor.data.drift import drift_report

    if window.rows == 0:
        return None
    fields = version.signature["inputs"]
    names = [f["name"] for f in fields]
    kinds = {f["name"]: _KINDS[f["type"]] for f in fields if f.get("type") in _KINDS}
    try:
        return drift_report(
            reference.features,
            window.inputs,
            columns=names,
            kinds=kinds,
            methods={"numeric": list(settings.numeric), "categorical": list(settings.categorical)},
            alpha=settings.alpha,
            correction=settings.correction,
            psi_threshold=settings.psi,
            drift_share=settings.share,
        )
    except DataError as exc:
        raise MonitorError(
            f"Cannot compare {window.model}@{window.environment} with its reference: {exc}"
        ) from exc


def prediction_drift(
    window: Window, reference: Reference, version: Version, settings: DriftSettings
) -> PredictionDrift | None:
    """PSI and test of the served version's predictions against the reference predictions.

    A classifier is compared on predicted labels (chi-square and PSI of their shares), a
    regressor on values (KS and PSI); drifted means significant and large, as for features.
    None when the served version answered no row in the window.
    """
    import numpy as np

    from conveyor.data.drift import column_drift

    current = [
        p
        for p, v in zip(window.predictions, window.versions, strict=True)
        if v == version.version and p is not None
    ]
    if not current or len(reference.predictions) == 0:
        return None
    classify = version.task != "regression"
    if classify:
        ref = np.array(canon_all(reference.predictions.tolist()), dtype=object)
        cur = np.array(canon_all(current), dtype=object)
    else:
        try:
            cur = np.asarray(current, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        ref = np.asarray(reference.predictions, dtype=np.float64)
    entry = column_drift(
        ref,
        cur,
        name="predictions",
        kind="categorical" if classify else "numeric",
        methods=("chi2", "psi") if classify else ("ks", "psi"),
        alpha=settings.alpha,
        psi_threshold=settings.psi,
    )
    stats = entry["stats"]
    test = stats.get("chi2") or stats.get("ks")
    p_value = test.get("p_value") if test is not None else None
    psi = stats["psi"]["statistic"] if "psi" in stats else None
    return {
        "psi": float(psi) if psi is not None else None,
        "drifted": bool(entry["drifted"]),
        "p_value": None if p_value is None else float(p_value),
    }


# -- live quality ------------------------------------------------------------------------------


def live_quality(store: Store, window: Window, version: Version) -> LiveQuality:
    """Metrics on the window's rows whose labels came back through feedback, overall and per
    version; a request's labels count only when there is one per row it sent."""
    import numpy as np

    labels, labelled_at = _feedback(store, list(window.served_at))
    truth: list[Any] = []
    predicted: list[Any] = []
    versions: list[int] = []
    used: set[str] = set()
    for rid, pos, ver, pred in zip(
        window.request_ids, window.positions, window.versions, window.predictions, strict=True
    ):
        sent = labels.get(rid)
        if sent is None or pred is None or len(sent) != window.request_rows.get(rid):
            continue
        label = sent[pos]
        if label is None:
            continue
        truth.append(label)
        predicted.append(pred)
        versions.append(ver)
        used.add(rid)
    delays = [(labelled_at[rid] - window.served_at[rid]).total_seconds() for rid in used]
    classes = (version.signature.get("output") or {}).get("classes")
    regression = version.task == "regression"
    metrics = _metrics(truth, predicted, classes, regression)
    by_version: dict[int, dict[str, float]] = {}
    ver_array = np.asarray(versions)
    for ver in sorted(set(versions)):
        picked = np.flatnonzero(ver_array == ver)
        scores = _metrics(
            [truth[i] for i in picked], [predicted[i] for i in picked], classes, regression
        )
        by_version[int(ver)] = {**scores, "labelled": int(len(picked))}
    labelled = len(truth)
    return {
        "labelled": labelled,
        "labelled_share": labelled / window.rows if window.rows else 0.0,
        "label_delay_s_p50": float(np.median(delays)) if delays else None,
        "metrics": metrics,
        "by_version": by_version,
    }


def _feedback(
    store: Store, request_ids: list[str]
) -> tuple[dict[str, list[Any]], dict[str, datetime]]:
    """The latest labels sent for each request, and when they came (the prediction log's
    feedback files, read by ``windows.feedback_for``)."""
    return feedback_for(store, request_ids)


def _metrics(
    truth: list[Any], predicted: list[Any], classes: list[Any] | None, regression: bool
) -> dict[str, float]:
    if regression:
        return _regression(truth, predicted)
    return _classification(truth, predicted, classes)


def _classification(
    truth: list[Any], predicted: list[Any], classes: list[Any] | None
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 as scikit-learn's ``*_score(zero_division=0.0)``
    give them (binary on the second class when the labels are the model's two classes, else
    the macro average over the labels seen), counted with NumPy: importing scikit-learn
    alone cost ``conveyor monitor`` 0.9 s. ``tests/monitor/test_report.py`` compares both."""
    import numpy as np

    y = np.array(canon_all(truth), dtype=object)
    p = np.array(canon_all(predicted), dtype=object)
    if not len(y):
        return {}
    seen = set(y.tolist()) | set(p.tolist())
    known = [canon(c) for c in classes] if classes else []
    if len(known) == 2 and seen <= set(known):
        # the positive class is the second, as predict_proba's column 1 and the evaluation
        labels = [known[1]]
    else:
        labels = sorted(seen)
    hit = y == p
    precision, recall, f1 = [], [], []
    for label in labels:
        said, real = p == label, y == label
        tp = int(np.count_nonzero(said & real))
        fp = int(np.count_nonzero(said)) - tp
        fn = int(np.count_nonzero(real)) - tp
        precision.append(_ratio(tp, tp + fp))
        recall.append(_ratio(tp, tp + fn))
        f1.append(_ratio(2 * tp, 2 * tp + fp + fn))
    return {
        "accuracy": float(np.count_nonzero(hit) / len(y)),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "f1": float(np.mean(f1)),
    }


def _ratio(part: int, whole: int) -> float:
    """``part / whole``, 0.0 for 0 / 0 (scikit-learn's ``zero_division=0.0``)."""
    return part / whole if whole else 0.0


def _regression(truth: list[Any], predicted: list[Any]) -> dict[str, float]:
    """MAE and RMSE of the numeric pairs, as scikit-learn's ``mean_absolute_error`` and
    ``sqrt(mean_squared_error)`` compute them (a mean of float64 errors)."""
    import numpy as np

    pairs = [
        (float(t), float(p))
        for t, p in zip(truth, predicted, strict=True)
        if _is_number(t) and _is_number(p)
    ]
    if not pairs:
        return {}
    y, q = np.array(pairs).T
    error = q - y
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error * error))),
    }


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def canon_all(values: list[Any]) -> list[str]:
    """``canon`` of each value, computed once per distinct value: a million predictions hold
    a handful of labels, and the call per value cost 0.8 s. Values that compare equal get the
    same text (1 == 1.0 == True all give "1"), so one text per dict key is the same answer."""
    known: dict[Any, str] = {}
    out: list[str] = []
    add = out.append
    for value in values:
        try:
            text = known.get(value)
        except TypeError:  # unhashable (a list): no memo
            add(canon(value))
            continue
        if text is None:
            text = known[value] = canon(value)
        add(text)
    return out


def canon(value: Any) -> str:
    """A label as text that agrees across JSON and NumPy: 1, 1.0, True and np.int64(1) -> "1"."""
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


# -- Prometheus --------------------------------------------------------------------------------


def prometheus_text(report: MonitorReport) -> str:
    """The report's gauges in the Prometheus text format (for a textfile collector or a push).

    Gauges: ``conveyor_monitor_rows``, ``conveyor_drift_share``, ``conveyor_feature_drift``,
    ``conveyor_feature_psi``, ``conveyor_prediction_psi``, ``conveyor_live_metric`` and
    ``conveyor_labelled_share``, labelled by model and environment (and feature or metric).
    A value the report does not have (no drift without rows, no PSI without that method) is
    left out rather than written as zero.
    """
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    base = ("model", "environment")
    where = {"model": report["model"], "environment": report["environment"]}

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, base + extra, registry=registry)

    gauge("conveyor_monitor_rows", "Served rows in the monitoring window.").labels(**where).set(
        report["rows"]
    )
    drift = report.get("drift")
    if drift is not None:
        gauge("conveyor_drift_share", "Share of features that drifted.").labels(**where).set(
            drift["share_drifted"]
        )
        drifted = gauge("conveyor_feature_drift", "1 when a feature drifted, else 0.", ("feature",))
        psi = gauge(
            "conveyor_feature_psi", "Population stability index of a feature.", ("feature",)
        )
        for name, entry in drift["columns"].items():
            drifted.labels(**where, feature=name).set(1.0 if entry["drifted"] else 0.0)
            if "psi" in entry["stats"]:
                psi.labels(**where, feature=name).set(entry["stats"]["psi"]["statistic"])
    shift = report.get("prediction_drift")
    if shift is not None and shift["psi"] is not None:
        gauge("conveyor_prediction_psi", "PSI of the served predictions.").labels(**where).set(
            shift["psi"]
        )
    quality = report["quality"]
    if quality["metrics"]:
        live = gauge("conveyor_live_metric", "A metric on rows labelled by feedback.", ("metric",))
        for metric, value in quality["metrics"].items():
            live.labels(**where, metric=metric).set(value)
    gauge("conveyor_labelled_share", "Share of served rows with a label.").labels(**where).set(
        quality["labelled_share"]
    )
    return generate_latest(registry).decode()
