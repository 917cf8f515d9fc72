"""One function per page: what the page shows, as a JSON-able dict, plus its pictures.

A view returns a :class:`View`: ``data`` is the page's JSON twin byte for byte (the ``.json``
URL serves it), ``charts`` are the SVG pictures only the HTML page carries. Reads go through the
store's own methods, the registry, ``Releases`` and the monitor report where those fit, and
through ``queries`` where a page lists thousands of rows. Nothing here writes; the acts are in
``acts.py``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.dashboard import charts, queries
from conveyor.dashboard.errors import NotFound
from conveyor.store import events as ev
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

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
    stores: Any
    registry: Any
    references: dict[tuple[str, int], Any] = field(default_factory=dict)

    @property
    def store(self) -> Any:
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
        if key not in self.references:
            if len(self.references) >= 256:
                self.references.pop(next(iter(self.references)))
            self.references[key] = reference_for(
                self.registry,
                self.registry.version(model, number),
                allow_pickle=bool(self.config.registry.allow_pickle),
                trusted_extra=tuple(self.config.model.trusted_types) if self.config.model else (),
            )
        return self.references[key]

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
    story = version_report(ctx.registry, v)
    plots = story.pop("plots", {})
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
        },
        {"weight": charts.weight_chart(changes, end)},
    )


def _weights(timeline: list[dict[str, Any]], start: datetime) -> list[tuple[datetime, float]]:
    """The candidate's share after each event: canary weights, 100 when promoted or cut over,
    0 when rolled back or aborted."""
    changes: list[tuple[datetime, float]] = [(_utc(start), 0.0)]
    for e in timeline:
        at = datetime.fromisoformat(e["at"])
        p = e["payload"]
        if e["kind"] == ev.TRAFFIC_CHANGED and p.get("mode") == "canary":
            changes.append((at, float(p.get("weight") or 0.0)))
        elif e["kind"] == ev.RELEASE_PROMOTED:
            changes.append((at, 100.0))
        elif e["kind"] in (ev.RELEASE_ROLLED_BACK, ev.RELEASE_ABORTED):
            changes.append((at, 0.0))
    return changes


# -- monitoring ---------------------------------------------------------------------------------


def monitoring(ctx: Context) -> View:
    """Each served environment's monitoring report (the monitor's own contract): drift per
    feature, prediction drift, live quality where labels came back, errors and latency."""
    from conveyor.exceptions import ConveyorError
    from conveyor.monitor.report import monitor_report

    reports = []
    for a in queries.aliases(ctx.store):
        entry: dict[str, Any] = {"model": a["model"], "environment": a["environment"]}
        try:
            entry["report"] = monitor_report(
                ctx.config,
                ctx.registry,
                model=a["model"],
                environment=a["environment"],
                reference=ctx.reference(a["model"], a["environment"]),
            )
        except ConveyorError as exc:
            entry["problem"] = str(exc)
        reports.append(entry)
    return View("monitoring.html.j2", "Monitoring", {"environments": reports})


def monitoring_page(ctx: Context, model: str, environment: str) -> tuple[str, dict[str, Any]]:
    """The monitor's own HTML page for one environment (``conveyor monitor --html``), with
    its per-feature histograms, and the report it shows."""
    from conveyor.exceptions import ConveyorError
    from conveyor.monitor.html import render_html
    from conveyor.monitor.report import observe

    if not any(
        a["model"] == model and a["environment"] == environment for a in queries.aliases(ctx.store)
    ):
        raise NotFound(f"{model}@{environment} serves nothing; /monitoring lists what is served.")
    try:
        seen = observe(
            ctx.config,
            ctx.registry,
            model=model,
            environment=environment,
            reference=ctx.reference(model, environment),
        )
    except ConveyorError as exc:
        raise NotFound(f"No monitoring report for {model}@{environment}: {exc}") from None
    return render_html(seen.report, seen.reference, seen.window), seen.report


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
