"""One function per page: what the page shows, as a JSON-able dict, plus its pictures.

A view returns a :class:`View`: ``data`` is the page's JSON twin byte for byte (the ``.json``
URL serves it), ``charts`` are the SVG pictures only the HTML page carries. Reads go through the
store's own methods, the registry, ``Releases`` and the monitor report where those fit, and
through ``queries`` where a page lists thousands of rows. Nothing here writes; the acts are in
``acts.py``.
"""

from __future__ import annotations

import base64
import functools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.dashboard import charts, queries
from conveyor.dashboard import monitoring as monitoring_reports
from conveyor.dashboard.errors import NotFound
from conveyor.store import events as ev
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry
    from conveyor.store.metadata import Store
    from conveyor.store.stores import Stores

__all__ = ["View", "Context"]

RETRAIN_KINDS = (ev.RETRAIN_STARTED, ev.RETRAIN_FINISHED, ev.RETRAIN_FAILED, ev.RETRAIN_SKIPPED)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything the store writes is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _at(value: datetime) -> str:
    return _utc(value).isoformat(timespec="seconds")


@dataclass
class View:
    """A page: its template, its data (the JSON twin) and its pictures (HTML only)."""

    template: str
    title: str
    data: dict[str, Any]
    charts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What every view reads: the project's config, its open stores and registry."""

    config: ProjectConfig
    stores: Stores
    registry: Registry
    references: dict[tuple[str, int], Any] = field(default_factory=dict)
    reports: monitoring_reports.Reports = field(default_factory=monitoring_reports.Reports)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store(self) -> Store:
        return self.stores.metadata

    def reference(self, model: str, environment: str) -> Any:
        """The monitor's reference of the version ``environment`` serves, built once per
        version (its holdout scored by its model: ~15 ms) and kept, as a version's holdout and
        model never change. None when nothing is served there."""
        from conveyor.monitor.reference import reference_for

        number = self.registry.alias(model, environment)
        if number is None:
            return None
        key = (model, number)
        with self._lock:
            found = self.references.get(key)
        if found is None:
            found = reference_for(
                self.registry,
                self.registry.version(model, number),
                allow_pickle=bool(self.config.registry.allow_pickle),
                trusted_extra=tuple(self.config.model.trusted_types) if self.config.model else (),
            )
            with self._lock:  # the worker thread and the request threads both build them
                if len(self.references) >= 256:
                    self.references.pop(next(iter(self.references)))
                self.references[key] = found
        return found

    def releases(self) -> Any:
        from conveyor.release.releases import Releases

        return Releases(self.config, self.registry)


# -- overview -----------------------------------------------------------------------------------


def overview(ctx: Context) -> View:
    """What each environment serves now, releases in progress, firing alerts, last runs and
    retrainings."""
    split = queries.traffic(ctx.store)
    environments = []
    for a in queries.aliases(ctx.store):
        beside = split.get((a["model"], a["environment"]))
        environments.append({**a, "traffic": beside})
    active = [r.to_dict() for r in ctx.releases().active()]
    alerts = [a for a in queries.alert_states(ctx.store) if a["kind"] == ev.ALERT_FIRED]
    runs = queries.runs_page(
        ctx.store, ctx.config.project, queries.RunFilter(), cursor=None, limit=10
    ).rows
    retrainings = queries.latest_events(ctx.store, RETRAIN_KINDS, limit=10)
    return View(
        "overview.html.j2",
        f"Conveyor: {ctx.config.project}",
        {
            "project": ctx.config.project,
            "environments": environments,
            "releases_in_progress": active,
            "firing_alerts": alerts,
            "last_runs": runs,
            "last_retrainings": retrainings,
        },
    )


# -- runs ---------------------------------------------------------------------------------------


def runs(ctx: Context, filters: queries.RunFilter, cursor: str | None, limit: int) -> View:
    page = queries.runs_page(ctx.store, ctx.config.project, filters, cursor=cursor, limit=limit)
    return View(
        "runs.html.j2",
        "Runs",
        {
            "filters": {
                "status": filters.status,
                "step": filters.step,
                "since": filters.since.date().isoformat() if filters.since else None,
                "until": filters.until.date().isoformat() if filters.until else None,
            },
            "runs": page.rows,
            "next_cursor": page.next_cursor,
            "limit": limit,
            "step_names": queries.step_names(ctx.store),
        },
    )


def run(ctx: Context, run_id: str) -> View:
    """One run: its DAG, metrics as charts over their index, params, artifacts, data."""
    import json

    row = queries.run_row(ctx.store, run_id)
    if row is None:
        raise NotFound(f"No run {run_id!r} in this project's store; /runs lists the runs.")
    steps = queries.run_steps(ctx.store, run_id)
    series = queries.metric_series(ctx.store, run_id)
    # the step's configured params (part of its cache key), then what it logged itself
    params: dict[str, dict[str, Any]] = {s["step"]: dict(s["params"]) for s in steps if s["params"]}
    for p in ctx.store.params(run_id):
        params.setdefault(p.step, {})[p.key] = json.loads(p.value)
    artifacts = [
        {"step": a.step, "name": a.name, "digest": a.digest, "size": a.size}
        for a in ctx.store.logged_artifacts(run_id)
    ]
    outputs = [
        {"step": s["step"], "name": name, **d}
        for s in steps
        for name, d in s["outputs"].items()
        if "digest" in d
    ]
    snapshots = [
        {
            "id": snap.id,
            "source": snap.source,
            "content_hash": snap.content_hash,
            "row_count": snap.row_count,
            "files": len(snap.files or []),
        }
        for snap in ctx.store.run_snapshots(run_id)
    ]
    made = queries.versions_of_run(ctx.store, run_id)
    started = row.get("started_at")
    refused = queries.rejections(
        ctx.store, run_id, datetime.fromisoformat(started) if started else None
    )
    metrics = {
        step: {
            key: {"last": points[-1][1], "count": len(points), "series": points}
            for key, points in keys.items()
        }
        for step, keys in series.items()
    }
    pictures: dict[str, Any] = {"dag": charts.dag(steps), "metrics": []}
    for step, keys in series.items():
        for key, points in keys.items():
            if len(points) > 1:
                pictures["metrics"].append(charts.line_chart(f"{step}: {key}", points))
    return View(
        "run.html.j2",
        f"Run {run_id}",
        {
            **row,
            "steps": steps,
            "metrics": metrics,
            "params": params,
            "artifacts": artifacts,
            "outputs": outputs,
            "snapshots": snapshots,
            "versions": made,
            "refused": [
                {
                    "model": e["entity_id"],
                    "at": e["at"],
                    "failed": e["payload"].get("failed", []),
                    "gates": e["payload"].get("gates", []),
                }
                for e in refused
            ],
        },
        pictures,
    )


def artifact(ctx: Context, run_id: str, digest: str) -> tuple[str, bytes]:
    """The bytes of an artifact this run logged or produced, and a file name for it.

    Only a digest the run's own rows name is read: a request cannot reach any other file.
    """
    if queries.run_row(ctx.store, run_id) is None:
        raise NotFound(f"No run {run_id!r} in this project's store; /runs lists the runs.")
    names = {a.digest: a.name for a in ctx.store.logged_artifacts(run_id)}
    for s in queries.run_steps(ctx.store, run_id):
        for name, d in s["outputs"].items():
            if "digest" in d:
                suffix = f".{d['format']}" if d.get("format") else ""
                names.setdefault(d["digest"], f"{s['step']}.{name}{suffix}")
    if digest not in names:
        raise NotFound(f"Run {run_id} has no artifact {digest!r}; its page lists the ones it has.")
    return names[digest], ctx.stores.artifacts.read_bytes(digest)


# -- models -------------------------------------------------------------------------------------


def models(ctx: Context, model: str | None, cursor: tuple[str, int] | None, limit: int) -> View:
    listed = [{**row, "updated_at": _at(row["updated_at"])} for row in ctx.registry.models()]
    if model and model not in {row["model"] for row in listed}:
        raise NotFound(f"No model {model!r} is registered; /models lists them.")
    page = queries.versions(ctx.store, model=model, cursor=cursor, limit=limit)
    return View(
        "models.html.j2",
        "Models",
        {
            "model": model,
            "models": listed,
            "versions": page.rows,
            "next_cursor": page.next_cursor,
            "limit": limit,
        },
    )


def version(ctx: Context, model: str, number: int) -> View:
    """A version's story: gate verdicts with evidence, metrics, and its lineage from data
    snapshots through the run to the releases and the environments serving it."""
    from conveyor.exceptions import ModelNotFound
    from conveyor.registry.story import version_report

    try:
        v = ctx.registry.version(model, number)
    except ModelNotFound as exc:
        raise NotFound(str(exc)) from None
    full = version_report(ctx.registry, v)
    plots: dict[str, str] = dict(full.get("plots") or {})
    story: dict[str, Any] = {k: value for k, value in full.items() if k != "plots"}
    released = queries.releases_page(
        ctx.store, model=model, version=number, cursor=None, limit=100
    ).rows
    serving = [
        a for a in queries.aliases(ctx.store) if a["model"] == model and a["version"] == number
    ]
    lineage = story.get("lineage") or {}
    data = {
        **story,
        "lineage_chain": {
            "snapshots": lineage.get("snapshots", []),
            "run_id": story.get("run_id"),
            "version": number,
            "releases": released,
            "environments": [a["environment"] for a in serving],
        },
    }
    pictures = {
        "plots": [
            {
                "title": name,
                "src": "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode(),
            }
            for name, svg in sorted(plots.items())
        ]
    }
    return View("version.html.j2", f"{model} version {number}", data, pictures)


# -- releases -----------------------------------------------------------------------------------


def releases(
    ctx: Context,
    *,
    model: str | None,
    environment: str | None,
    state: str | None,
    cursor: str | None,
    limit: int,
) -> View:
    page = queries.releases_page(
        ctx.store,
        model=model,
        environment=environment,
        state=state,
        cursor=cursor,
        limit=limit,
    )
    lanes: dict[str, list[dict[str, Any]]] = {}
    for r in page.rows:
        lanes.setdefault(f"{r['model']}@{r['environment']}", []).append(r)
    now = utcnow()
    return View(
        "releases.html.j2",
        "Releases",
        {
            "filters": {"model": model, "environment": environment, "state": state},
            "releases": page.rows,
            "next_cursor": page.next_cursor,
            "limit": limit,
        },
        {"lanes": [(name, charts.release_timeline(rows, now)) for name, rows in lanes.items()]},
    )


def release(ctx: Context, release_id: str) -> View:
    """A release: its steps and events, traffic weight over time, verdicts with evidence."""
    from conveyor.exceptions import ReleaseError

    manager = ctx.releases()
    try:
        view = manager.get(release_id)
    except ReleaseError as exc:
        raise NotFound(str(exc)) from None
    timeline = [
        {
            "id": e.id,
            "at": _at(e.at),
            "kind": e.kind,
            "actor": e.actor,
            "payload": e.payload or {},
        }
        for e in manager.timeline(release_id)
    ]
    changes = _weights(timeline, view.created_at)
    end = view.finished_at or utcnow()
    return View(
        "release.html.j2",
        f"Release {release_id}",
        {
            **view.to_dict(),
            "plan": view.plan,
            "verdicts": view.verdicts,
            "timeline": timeline,
            "weights": [(at.isoformat(timespec="seconds"), w) for at, w in changes],
            "rolled_back": view.state in ("rolled_back", "aborted"),
            "rolled_back_why": next(
                (
                    e["payload"].get("why")
                    for e in reversed(timeline)
                    if e["kind"] in (ev.RELEASE_ROLLED_BACK, ev.RELEASE_ABORTED)
                ),
                None,
            ),
        },
        {"weight": charts.weight_chart(changes, end)},
    )


def _weights(timeline: list[dict[str, Any]], start: datetime) -> list[tuple[datetime, float]]:
    """The candidate's share after each event: canary weights, 100 when promoted or cut over,
    0 when rolled back or aborted."""
    changes: list[tuple[datetime, float]] = [(_utc(start), 0.0)]
    for e in timeline:
        # events are told to the second, the start to the microsecond: none before the start
        at = max(datetime.fromisoformat(e["at"]), changes[0][0])
        p = e["payload"]
        if e["kind"] == ev.TRAFFIC_CHANGED and p.get("mode") == "canary":
            changes.append((at, float(p.get("weight") or 0.0)))
        elif e["kind"] == ev.RELEASE_PROMOTED:
            changes.append((at, 100.0))
        elif e["kind"] in (ev.RELEASE_ROLLED_BACK, ev.RELEASE_ABORTED):
            changes.append((at, 0.0))
    return changes


# -- monitoring ---------------------------------------------------------------------------------

MONITOR_BUDGET_S = 0.08  # of the list page's time spent computing missing reports in the request
HISTORY_BUDGET_S = 0.05  # of an environment's page, for the closed windows not yet kept


def _observer(ctx: Context, model: str, environment: str) -> Any:
    """``observe`` of one environment against its served version's kept reference."""
    from conveyor.monitor.report import observe

    def run(**kwargs: Any) -> Any:
        return observe(
            ctx.config,
            ctx.registry,
            model=model,
            environment=environment,
            reference=ctx.reference(model, environment),
            **kwargs,
        )

    return run


def _current(ctx: Context, model: str, environment: str) -> Any:
    """A function computing the environment's report over its configured window, ending
    when it runs (the worker may start it a while after it was asked for)."""
    observe = _observer(ctx, model, environment)
    return lambda: monitoring_reports.compute(observe, end=utcnow())


def monitoring(ctx: Context) -> View:
    """Each served environment's last monitoring report with its age: drift per feature,
    prediction drift, live quality where labels came back, errors and latency.

    Reports are kept (``monitoring.Reports``): a fresh one is shown as is, a stale one too
    while the worker computes its successor, a missing one is computed here while
    ``MONITOR_BUDGET_S`` lasts, else by the worker, and the page says so and reloads.
    """
    started = time.perf_counter()
    reports = ctx.reports
    now = _utc(utcnow())
    entries = []
    for a in queries.aliases(ctx.store):
        model, environment = a["model"], a["environment"]
        key = ("now", model, environment, a["version"])
        kept = reports.get(key)
        state = "fresh"
        if kept is None or kept.older_than(reports.max_age_s):
            within = time.perf_counter() - started < MONITOR_BUDGET_S
            if kept is None and within and not reports.pending(key):
                kept = _current(ctx, model, environment)()
                reports.put(key, kept)
            else:
                reports.schedule(key, _current(ctx, model, environment))
                state = "pending" if kept is None else "stale"
        entry: dict[str, Any] = {
            "model": model,
            "environment": environment,
            "version": a["version"],
            "state": state,
        }
        if kept is not None:
            entry["computed_at"] = kept.at.isoformat(timespec="seconds")
            entry["age_s"] = round(kept.age_s(now), 1)
            entry["age"] = monitoring_reports.age_text(kept.age_s(now))
            if kept.report is not None:
                entry["report"] = kept.report
            else:
                entry["problem"] = kept.problem
        entries.append(entry)
    firing = [a for a in queries.alert_states(ctx.store) if a["kind"] == ev.ALERT_FIRED]
    return View(
        "monitoring.html.j2",
        "Monitoring",
        {
            "environments": entries,
            "computing": sum(e["state"] == "pending" for e in entries),
            "max_age_s": reports.max_age_s,
            "firing_alerts": firing,
        },
    )


def monitoring_page(ctx: Context, model: str, environment: str, every_s: float | None) -> View:
    """One environment: its report now with reference and live distributions of every feature
    and of the predictions; the same report over the ``HISTORY`` closed windows of ``every_s``
    seconds before and the one still open (drift statistics, prediction drift, live quality and
    label share, errors and latency over time); and the alerts fired and resolved there.

    Closed windows not kept yet are computed here, newest first, while ``HISTORY_BUDGET_S``
    lasts, the rest by the worker: the page marks them and reloads until they are in."""
    from conveyor.config.monitor import MonitorConfig

    served = next(
        (
            a
            for a in queries.aliases(ctx.store)
            if a["model"] == model and a["environment"] == environment
        ),
        None,
    )
    if served is None:
        raise NotFound(f"{model}@{environment} serves nothing; /monitoring lists what is served.")
    reports = ctx.reports
    now = _utc(utcnow())
    key = ("now", model, environment, served["version"])
    kept = reports.get(key)
    if kept is None or kept.older_than(reports.max_age_s):
        kept = _current(ctx, model, environment)()
        reports.put(key, kept)
    # windows as long as the configured one; five minutes when it counts requests instead
    window = (ctx.config.monitor or MonitorConfig()).window
    every = every_s or window.seconds or 300.0
    observe = _observer(ctx, model, environment)
    started = time.perf_counter()
    points, computing = [], 0
    ends = monitoring_reports.history_ends(now, every)
    for end in reversed(ends):  # the newest first: the budget goes to the recent past
        past_key = ("past", model, environment, served["version"], every, end)
        past = reports.get(past_key)
        if past is None or past.older_than(reports.closed_age_s):
            work = functools.partial(monitoring_reports.compute, observe, end=end, seconds=every)
            within = time.perf_counter() - started < HISTORY_BUDGET_S
            if past is None and within and not reports.pending(past_key):
                past = work()
                reports.put(past_key, past)
            else:
                reports.schedule(past_key, work)
        if past is None:
            computing += 1
            points.append({"end": end.isoformat(timespec="seconds"), "computing": True})
        else:
            points.append(monitoring_reports.series_point(past))
    points.reverse()
    # the window still open: from the last boundary to now, so the windows do not overlap
    open_s = (now - ends[-1]).total_seconds()
    if open_s >= 1.0:
        open_key = ("open", model, environment, served["version"], every)
        part = reports.get(open_key)
        if part is None or part.older_than(reports.max_age_s):
            part = monitoring_reports.compute(observe, end=now, seconds=open_s)
            reports.put(open_key, part)
        points.append(monitoring_reports.series_point(part))
    alerts = queries.alert_events(ctx.store, model, environment, limit=200)
    data: dict[str, Any] = {
        "model": model,
        "environment": environment,
        "version": served["version"],
        "computed_at": kept.at.isoformat(timespec="seconds"),
        "age_s": round(kept.age_s(now), 1),
        "age": monitoring_reports.age_text(kept.age_s(now)),
        "report": kept.report,
        "problem": kept.problem,
        "distributions": kept.distributions or {"features": {}, "predictions": None},
        "every_s": every,
        "history": points,
        "computing": computing,
        "alerts": alerts,
    }
    return View(
        "monitor.html.j2",
        f"Monitoring {model}@{environment}",
        data,
        _monitor_charts(data),
    )


def _monitor_charts(data: dict[str, Any]) -> dict[str, Any]:
    """The environment page's pictures: distributions now, and each series over time."""
    dists = data["distributions"]
    history = data["history"]
    ends = [datetime.fromisoformat(p["end"]) for p in history]

    def series(read: Any) -> list[tuple[datetime, float | None]]:
        return [(at, read(p)) for at, p in zip(ends, history, strict=True)]

    features = sorted({name for p in history for name in p.get("features", {})})
    metrics = sorted({name for p in history for name in p.get("metrics", {})})
    return {
        "features": {
            name: charts.distribution(name, bins) for name, bins in dists["features"].items()
        },
        "predictions": charts.distribution("predictions", dists["predictions"]),
        "drift": {
            name: charts.time_chart(
                f"{name}: {method} over time",
                [(name, series(lambda p, n=name, k=method: _feature_stat(p, n, k)))],
            )
            for name, method in ((n, _method(history, n)) for n in features)
        },
        "prediction_psi": charts.time_chart(
            "prediction drift (PSI) over time",
            [("PSI", series(lambda p: p.get("prediction_psi")))],
        ),
        "quality": charts.time_chart(
            "live quality and label share over time",
            [(m, series(lambda p, k=m: p.get("metrics", {}).get(k))) for m in metrics]
            + [("labelled share", series(lambda p: p.get("labelled_share")))],
        ),
        "errors": charts.time_chart(
            "error rate over time", [("error rate", series(lambda p: p.get("error_rate")))]
        ),
        "latency": charts.time_chart(
            "p99 latency (ms) over time", [("p99 ms", series(lambda p: p.get("p99_ms")))]
        ),
        "traffic": charts.time_chart(
            "served rows per window",
            [("rows", series(lambda p: None if p.get("computing") else float(p.get("rows") or 0)))],
        ),
    }


def _feature_stat(point: dict[str, Any], name: str, method: str) -> float | None:
    value = (point.get("features") or {}).get(name, {}).get("stats", {}).get(method)
    return None if value is None else float(value)


def _method(history: list[dict[str, Any]], name: str) -> str:
    """The statistic that decided a feature's drift in the newest window that had one: the
    chart follows that one statistic through every window, whichever decided each."""
    for p in reversed(history):
        method = (p.get("features") or {}).get(name, {}).get("method")
        if method:
            return str(method)
    return "statistic"


# -- audit log ----------------------------------------------------------------------------------


def events(ctx: Context, filters: queries.EventFilter, cursor: int | None, limit: int) -> View:
    page = queries.events_page(ctx.store, filters, cursor=cursor, limit=limit)
    return View(
        "events.html.j2",
        "Audit log",
        {
            "filters": {
                "kind": filters.kind,
                "entity": filters.entity,
                "entity_id": filters.entity_id,
                "since": filters.since.date().isoformat() if filters.since else None,
                "until": filters.until.date().isoformat() if filters.until else None,
            },
            "events": page.rows,
            "next_cursor": page.next_cursor,
            "limit": limit,
            "kinds": sorted(ev.CATALOGUE),
        },
    )
