"""`conveyor watch`: the reconcile loop that keeps a good model in production by itself.

Each turn it (1) advances releases (``Releases.step``), (2) every ``monitor_every`` seconds
builds the monitoring report of the watched environment, fires or resolves alerts and writes
the metrics file, (3) looks at the retraining triggers (new data, drift, a quality alert, a
cron schedule), and when one holds and the guardrails allow it (cooldown, a minimum of new
rows, a maximum of runs per day) runs the same CI job as `conveyor ci`, and (4) starts the
releases the store calls for: the newest registered version to the first environments, and a
version promoted in an environment to those that come ``after`` it.

One controller per project holds a lease in the store. Every act is an event carrying its
cause, and every decision is re-derived from the store each turn (a release row exists or it
does not; a retrain started or it did not), so the controller can be killed and restarted at
any moment without losing or doubling an action.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from conveyor.exceptions import ConveyorError, ReleaseError, StoreError
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.atomic import write_text
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow

__all__ = ["Controller", "ControllerBusy", "Lease", "run_controller"]

log = logging.getLogger("conveyor.controller")


class ControllerBusy(ReleaseError):
    """Another controller holds this project's lease."""


class Lease:
    """A named, expiring lock in the metadata store."""

    def __init__(self, store: Any, name: str, *, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"

    def acquire(self) -> None:
        """Take the lease, or renew it if ours.

        Raises:
            ControllerBusy: someone else holds it and it has not expired.
        """
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        try:
            with self.store.session() as s:
                row = s.get(m.Lease, self.name, with_for_update=True)
                if row is None:
                    s.add(m.Lease(name=self.name, holder=self.holder, expires_at=until))
                    return
                expires = as_utc(row.expires_at)
                if row.holder != self.holder and expires > now and not _dead(row.holder):
                    raise ControllerBusy(
                        f"Another controller ({row.holder}) runs this project until "
                        f"{expires:%H:%M:%S} UTC unless it renews; stop it first, or wait."
                    )
                row.holder, row.expires_at = self.holder, until
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # two took a free lease at once
                raise ControllerBusy("Another controller took the lease just now.") from None
            raise

    def release(self) -> None:
        with self.store.session() as s:
            row = s.get(m.Lease, self.name)
            if row is not None and row.holder == self.holder:
                s.delete(row)


def _dead(holder: str) -> bool:
    """Whether a lease holder is a process of this machine that no longer exists (killed)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Controller:
    """One project's loop; ``turn()`` does one pass, ``run()`` repeats it under the lease."""

    def __init__(
        self,
        config: Any,
        registry: Any,
        *,
        checks: Any = None,
        monitor_every: float = 30.0,
        report: Callable[[dict], None] | None = None,
        ci_reports: Path | None = None,
    ) -> None:
        from conveyor.release.releases import Releases

        self.config = config
        self.registry = registry
        self.store = registry.store
        self.releases = Releases(config, registry, checks=checks)
        self.monitor_every = monitor_every
        self._report = report or (lambda _o: None)
        self._last_monitor: datetime | None = None
        self.last_report: dict | None = None
        self.metrics_text = ""  # the last report in Prometheus text format
        self._alerter: Any = None
        self.ci_reports = ci_reports or Path(config.root) / ".conveyor" / "reports"
        self._context: Any = None  # the pipeline's stores, for fingerprinting the sources

    def close(self) -> None:
        """Close what the controller opened for itself (the registry stays the caller's)."""
        if self._context is not None:
            self._context.close()
            self._context = None

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one turn --------------------------------------------------------------------------

    def turn(self, now: datetime | None = None) -> list[dict]:
        """Releases, monitoring, triggers and new releases, once; returns what happened."""
        now = now or utcnow()
        done: list[dict] = []
        for outcome in self.releases.step(now=now):
            if outcome.get("action") not in ("wait", "paused"):
                done.append({"act": "release", **outcome})
        if self.config.monitor is not None and self._due(now):
            done += self._monitor(now)
        if self.config.model is not None and self.config.monitor is not None:
            done += self._retrain(now)
        if self.config.model is not None and self.config.deploy:
            done += self._start_releases()
        for item in done:
            self._report(item)
        return done

    def _due(self, now: datetime) -> bool:
        if self._last_monitor is None or (now - self._last_monitor).total_seconds() >= (
            self.monitor_every
        ):
            self._last_monitor = now
            return True
        return False

    # -- monitoring and alerts -------------------------------------------------------------

    def _monitor(self, now: datetime) -> list[dict]:
        from conveyor.monitor.alerts import Alerter, evaluate
        from conveyor.monitor.report import monitor_report, prometheus_text

        monitor = self.config.monitor
        model = self.config.model.name if self.config.model else None
        if model is None or self.registry.alias(model, monitor.environment) is None:
            return []
        try:
            report = monitor_report(self.config, self.registry, now=now)
        except ConveyorError as exc:
            log.warning("monitoring skipped: %s", exc)
            return []
        self.last_report = report
        self.metrics_text = prometheus_text(report)
        write_text(Path(self.config.root) / ".conveyor" / "monitor.prom", self.metrics_text)
        if not monitor.alerts:
            return []
        if self._alerter is None:
            self._alerter = Alerter(
                self.store,
                monitor.alerts,
                project=self.config.project,
                model=model,
                environment=monitor.environment,
            )
        changes = self._alerter.process(evaluate(monitor.alerts, report), report)
        return [{"act": "alert", **c} for c in changes]

    # -- retraining ------------------------------------------------------------------------

    def _retrain(self, now: datetime) -> list[dict]:
        retrain = self.config.monitor.retrain
        if not retrain.triggers:
            return []
        causes, hashes, new_rows = self._causes(now)
        if not causes:
            return []
        held = self._guardrail(now, causes, new_rows)
        if held is not None:
            return self._skipped(causes, held)
        return self._run_ci(causes, hashes)

    def _causes(self, now: datetime) -> tuple[list[str], dict[str, str], int | None]:
        retrain = self.config.monitor.retrain
        causes: list[str] = []
        hashes, new_rows = self._source_hashes(), None
        last = self._last_attempt()
        last_hashes = (last.payload or {}).get("sources", {}) if last is not None else {}
        if "new_data" in retrain.triggers:
            trained = self._trained_hashes()
            changed = [n for n, h in hashes.items() if trained.get(n) not in (None, h)]
            if changed and hashes != last_hashes:
                causes.append("new_data: " + ", ".join(changed))
                new_rows = self._new_rows(changed)
        report = self.last_report
        if report is not None and report.get("enough"):
            drift = report.get("drift") or {}
            if "drift" in retrain.triggers and drift.get("drifted_overall"):
                share = drift.get("share_drifted", 0.0)
                causes.append(f"drift: {share:.0%} of features ({', '.join(drift['drifted'])})")
            if "quality" in retrain.triggers and self._quality_alert_firing():
                causes.append("quality: a live-metric alert fires")
        for item in retrain.triggers:
            if isinstance(item, dict) and "schedule" in item:
                # the schedule counts from the last retraining that ran to its end
                from croniter import croniter

                since = self._schedule_base(last)
                due = croniter(item["schedule"], since).get_next(datetime)
                if due <= now:
                    causes.append(f"schedule: {item['schedule']} (due {due:%Y-%m-%d %H:%M})")
        return causes, hashes, new_rows

    def _last_attempt(self) -> m.Event | None:
        """The last retraining that ran to an end (finished or failed).

        A retraining whose controller was killed mid-way has a ``retrain_started`` event and no
        end: it neither starts the cooldown nor hides its new data, so the next controller runs
        it again (its run is recorded as interrupted). It still counts toward the daily maximum,
        which stops a crash loop.
        """
        with self.store.session() as s:
            events = s.scalars(
                select(m.Event)
                .where(m.Event.entity_id == self.config.project)
                .where(
                    m.Event.kind.in_(
                        (
                            ev.RETRAIN_STARTED,
                            ev.RETRAIN_FINISHED,
                            ev.RETRAIN_FAILED,
                        )
                    )
                )
                .order_by(m.Event.id.desc())
                .limit(50)
            ).all()
        ended = False
        for event in events:  # newest first
            if event.kind != ev.RETRAIN_STARTED:
                ended = True
            elif ended:
                return event
        return None

    def _schedule_base(self, last: m.Event | None) -> datetime:
        """A schedule counts from the last retraining, else from when the serving version was
        registered: starting the controller never fires a schedule missed before its time."""
        if last is not None:
            return as_utc(last.at)
        model, env = self.config.model.name, self.config.monitor.environment
        if self.registry.alias(model, env) is not None:
            return as_utc(self.registry.version(model, env).created_at)
        return utcnow()

    def _guardrail(self, now: datetime, causes: list[str], new_rows: int | None) -> str | None:
        retrain = self.config.monitor.retrain
        last = self._last_attempt()
        if last is not None:
            waited = (now - as_utc(last.at)).total_seconds()
            if waited < retrain.cooldown:
                return f"cooldown: last retraining {waited:.0f}s ago, wait {retrain.cooldown:.0f}s"
        with self.store.session() as s:
            runs = s.scalar(
                select(func.count(m.Event.id))
                .where(m.Event.kind == ev.RETRAIN_STARTED)
                .where(m.Event.entity_id == self.config.project)
                .where(m.Event.at >= now - timedelta(days=1))
            )
        if runs >= retrain.max_runs_per_day:
            return f"max_runs_per_day: {runs} retrainings in the last 24 h"
        only_new_data = all(c.startswith("new_data") for c in causes)
        if only_new_data and new_rows is not None and new_rows < retrain.min_new_rows:
            return f"min_new_rows: {new_rows} new rows, need {retrain.min_new_rows}"
        return None

    def _skipped(self, causes: list[str], why: str) -> list[dict]:
        last = self._last_event(ev.RETRAIN_SKIPPED)
        payload = {"causes": causes, "why": why.split(":")[0]}
        if last is not None and {k: (last.payload or {}).get(k) for k in payload} == payload:
            return []  # the same reason as last time: recorded once
        self._event(ev.RETRAIN_SKIPPED, {**payload, "detail": why})
        return [{"act": "retrain_skipped", "causes": causes, "why": why}]

    def _run_ci(self, causes: list[str], hashes: dict[str, str]) -> list[dict]:
        from conveyor.actions.ci import run_ci

        self._event(ev.RETRAIN_STARTED, {"causes": causes, "sources": hashes})
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        try:
            outcome = run_ci(self.config, report_path=self.ci_reports / f"ci-{stamp}.md")
        except ConveyorError as exc:
            self._event(ev.RETRAIN_FAILED, {"causes": causes, "error": str(exc)})
            return [{"act": "retrain_failed", "causes": causes, "error": str(exc)}]
        result = {
            "causes": causes,
            "run_id": outcome.run_id,
            "passed": outcome.passed,
            "version": outcome.version,
            "already_registered": outcome.already_registered,
            "failed_gates": [g["name"] for g in outcome.failed_gates],
        }
        self._event(ev.RETRAIN_FINISHED, result)
        return [{"act": "retrained", **result}]

    def _source_hashes(self) -> dict[str, str]:
        from conveyor.pipeline.plan import Context, snapshot_sources

        if self._context is None:  # opened once: stores and stat cache, not every turn
            self._context = Context(self.config)
        snaps, _ = snapshot_sources(self._context, list(self.config.data))
        return {name: snap["content_hash"] for name, snap in snaps.items()}

    def _trained_hashes(self) -> dict[str, str]:
        model = self.config.model.name
        env = self.config.monitor.environment
        if self.registry.alias(model, env) is None:
            return {}
        version = self.registry.version(model, env)
        return {
            s["source"]: s["content_hash"] for s in (version.lineage or {}).get("snapshots", [])
        }

    def _new_rows(self, sources: list[str]) -> int | None:
        from conveyor.gates.data_gates import load_source

        model = self.config.model.name
        version = self.registry.version(model, self.config.monitor.environment)
        before = {
            s["source"]: s.get("row_count") or 0
            for s in (version.lineage or {}).get("snapshots", [])
        }
        total = 0
        for name in sources:
            try:
                total += len(load_source(self.config, name)) - int(before.get(name, 0))
            except ConveyorError:
                return None
        return total

    def _quality_alert_firing(self) -> bool:
        rules = [a for a in self.config.monitor.alerts if a.when.metric is not None]
        model = self.config.model.name
        env = self.config.monitor.environment
        for rule in rules:
            events = self.store.events(
                entity="alert", entity_id=f"{model}@{env}:{rule.name}", limit=1
            )
            if events and events[-1].kind == ev.ALERT_FIRED:
                return True
        return False

    # -- releases the store calls for ------------------------------------------------------

    def _start_releases(self) -> list[dict]:
        """Start each release the environments' order asks for and no release row records."""
        model = self.config.model.name
        started = []
        with self.store.session() as s:
            latest = s.scalar(
                select(func.max(m.ModelVersion.version))
                .where(m.ModelVersion.model == model)
                .where(m.ModelVersion.status == "registered")
            )
        if latest is None:
            return []
        first = self.config.monitor.retrain.deploy_to if self.config.monitor else None
        for env_name, env in self.config.deploy.items():
            if env.after is not None:
                candidate = self._promoted_in(model, env.after)
            elif first is None or env_name == first:
                candidate = latest
            else:
                continue
            if candidate is None:
                continue
            serving = self.registry.alias(model, env_name)
            if serving is not None and serving >= candidate:
                continue
            if self._release_exists(model, candidate, env_name):
                continue
            try:
                release = self.releases.start(model, candidate, env_name, reason="controller")
            except ReleaseError as exc:  # another release of this environment is active
                log.info("release of %s v%d to %s waits: %s", model, candidate, env_name, exc)
                continue
            started.append(
                {
                    "act": "release_started",
                    "id": release.id,
                    "environment": env_name,
                    "version": candidate,
                    "strategy": release.strategy,
                }
            )
        return started

    def _promoted_in(self, model: str, environment: str) -> int | None:
        with self.store.session() as s:
            return s.scalar(
                select(func.max(m.Release.to_version))
                .where(m.Release.model == model)
                .where(m.Release.environment == environment)
                .where(m.Release.state == "promoted")
            )

    def _release_exists(self, model: str, version: int, environment: str) -> bool:
        with self.store.session() as s:
            return (
                s.scalar(
                    select(m.Release.id)
                    .where(m.Release.model == model)
                    .where(m.Release.environment == environment)
                    .where(m.Release.to_version == version)
                    .limit(1)
                )
                is not None
            )

    # -- events ----------------------------------------------------------------------------

    def _event(self, kind: str, payload: dict) -> None:
        with self.store.session() as s:
            self.store.add_event(s, kind, "project", self.config.project, payload)

    def _last_event(self, kind: str) -> m.Event | None:
        with self.store.session() as s:
            return s.scalar(
                select(m.Event)
                .where(m.Event.kind == kind)
                .where(m.Event.entity_id == self.config.project)
                .order_by(m.Event.id.desc())
                .limit(1)
            )


def serve_metrics(controller: Controller, host: str, port: int) -> Any:
    """Serve the controller's last monitoring figures at ``http://HOST:PORT/metrics`` (a thread),
    so Prometheus scrapes what the alert rules and the Grafana dashboard read."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "Only /metrics is served here.")
                return
            body = controller.metrics_text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server


def run_controller(
    config: Any,
    *,
    checks: Any = None,
    interval: float = 1.0,
    monitor_every: float = 30.0,
    once: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[dict], None] | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Turn every ``interval`` seconds until stopped; returns the turns run.

    Raises:
        ControllerBusy: another controller runs this project.
    """
    from conveyor.actions.models import open_registry

    stop = stop or threading.Event()
    turns = 0
    with open_registry(config) as registry:
        lease = Lease(registry.store, f"controller:{config.project}", ttl=max(15.0, 5 * interval))
        while True:  # another controller (or one killed on another machine) holds it: wait
            try:
                lease.acquire()
                break
            except ControllerBusy as exc:
                if once:
                    raise
                if report is not None:
                    report({"act": "waiting", "why": str(exc)})
                if stop.wait(min(5.0, lease.ttl / 3)):
                    return turns
        lost = threading.Event()
        done = threading.Event()

        def keep_alive() -> None:  # a long retraining must not let the lease expire
            while not done.wait(lease.ttl / 3):
                try:
                    lease.acquire()
                except ControllerBusy:
                    lost.set()
                    return
                except StoreError as exc:
                    log.warning("cannot renew the controller lease: %s", exc)

        heart = threading.Thread(target=keep_alive, name="conveyor-lease", daemon=True)
        heart.start()
        controller = Controller(
            config, registry, checks=checks, monitor_every=monitor_every, report=report
        )
        http = serve_metrics(controller, *metrics) if metrics is not None else None
        try:
            while True:
                if lost.is_set():
                    raise ControllerBusy("Another controller took over this project's lease.")
                try:
                    controller.turn()
                except (StoreError, ReleaseError) as exc:  # try again next turn
                    log.warning("controller turn failed: %s", exc)
                turns += 1
                if once or stop.wait(interval):
                    return turns
        finally:
            controller.close()
            if http is not None:
                http.shutdown()
                http.server_close()
            done.set()
            heart.join(5)
            lease.release()
