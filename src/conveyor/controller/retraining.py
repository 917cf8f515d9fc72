"""When the controller retrains by itself, when it holds back, and the job it keeps an eye on.

A trigger (new data, drift, a quality alert, a cron schedule) names a cause; the guardrails
then decide, in this order:

- ``nothing_new``: the sources and the code are those of the last retraining that ran to an
  end, so another would train on what was already trained on. Whatever the trigger, nothing
  runs until the data or the code changes (drift that persists does not retrain the same data
  over and over).
- ``cooldown``: the last retraining ended less than ``cooldown`` ago. It counts from the END,
  so a retraining longer than the cooldown is not followed at once by another.
- ``max_runs_per_day``: retrainings started in the last 24 hours, ended or not (a crash loop
  stops here).
- ``min_new_rows``: new data alone, with too few new rows.

A hold is recorded once per reason (a ``controller.retrain_skipped`` event) until the next
retraining starts. Everything is derived from the ``controller.*`` events of the project each
turn, so a restarted controller decides as the last one would have.

The retraining itself runs in a child process (:mod:`conveyor.controller.job`), one per project
at a time; :meth:`Retrainer.turn` starts it and, on a later turn, reports how it ended.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select

from conveyor.controller.job import RetrainJob, describe_exit
from conveyor.exceptions import ConveyorError
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config.project import ProjectConfig
    from conveyor.controller.loop import Act
    from conveyor.monitor.report import MonitorReport
    from conveyor.pipeline.plan import Context
    from conveyor.registry.registry import Registry

__all__ = ["History", "Retrainer"]

log = logging.getLogger("conveyor.controller")

_KINDS = (ev.RETRAIN_STARTED, ev.RETRAIN_FINISHED, ev.RETRAIN_FAILED, ev.RETRAIN_SKIPPED)
_ENDS = (ev.RETRAIN_FINISHED, ev.RETRAIN_FAILED)
_HISTORY = 200  # events read back: far more than a day's retrainings and holds


@dataclass(frozen=True)
class History:
    """A project's recent retraining events (started, ended, skipped), oldest first."""

    events: list[m.Event]

    def last_ended(self) -> tuple[m.Event, m.Event] | None:
        """The start and end events of the last retraining that ran to an end.

        A retraining cut short (its controller killed) has a start and no end: it is skipped
        here, so it neither starts the cooldown nor hides its data, and runs again.
        """
        start: m.Event | None = None
        pair = None
        for event in self.events:
            if event.kind == ev.RETRAIN_STARTED:
                start = event
            elif event.kind in _ENDS and start is not None:
                pair, start = (start, event), None
        return pair

    def skipped_since_start(self) -> list[m.Event]:
        """The holds recorded since the last retraining started."""
        held = []
        for event in reversed(self.events):
            if event.kind == ev.RETRAIN_STARTED:
                break
            if event.kind == ev.RETRAIN_SKIPPED:
                held.append(event)
        return held


class Retrainer:
    """The retraining part of one controller: triggers, guardrails and the running job.

    Args:
        config: the project's configuration (with ``model`` and ``monitor`` sections).
        registry: the open registry; its store holds the events read and written here.
        ci_reports: the folder for each retraining's CI report and output log.
        stop_grace: seconds :meth:`close` gives a running retraining to stop before killing it.
    """

    def __init__(
        self,
        config: ProjectConfig,
        registry: Registry,
        *,
        ci_reports: Path,
        stop_grace: float = 10.0,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = registry.store
        self.ci_reports = ci_reports
        self.stop_grace = stop_grace
        self.job: RetrainJob | None = None
        self._context: Context | None = None  # the pipeline's stores, for fingerprinting

    @property
    def running(self) -> bool:
        """Whether a retraining started by this controller has not been seen to end."""
        return self.job is not None

    def close(self) -> None:
        """Stop a running retraining (it runs again under the next controller) and close the
        pipeline's stores."""
        if self.job is not None:
            status = self.job.stop(self.stop_grace)
            log.info("retraining (pid %d) stopped: %s", self.job.pid, describe_exit(status))
            self.job = None
        if self._context is not None:
            self._context.close()
            self._context = None

    def turn(self, now: datetime, report: MonitorReport | None) -> list[Act]:
        """Report a retraining that ended, or start one if a trigger holds and nothing holds it
        back; never waits for one.

        Args:
            now: the turn's time.
            report: the controller's last monitoring report (for the drift trigger), or None.

        Returns:
            The acts: ``retrain_started``, ``retrained``, ``retrain_failed`` or
            ``retrain_skipped``.
        """
        if self.job is not None:
            return self._collect(self.job)
        retrain = self.config.monitor.retrain  # type: ignore[union-attr]
        if not retrain.triggers:
            return []
        history = self._history()
        hashes = self.source_hashes()
        causes, new_rows = self._causes(now, report, history, hashes)
        if not causes:
            return []
        code = self.code_fingerprint()
        held = self._guardrail(now, causes, new_rows, history, hashes, code)
        if held is not None:
            return self._skipped(causes, held, history)
        return self._start(causes, hashes, code)

    # -- triggers --------------------------------------------------------------------------

    def _causes(
        self,
        now: datetime,
        report: MonitorReport | None,
        history: History,
        hashes: dict[str, str],
    ) -> tuple[list[str], int | None]:
        retrain = self.config.monitor.retrain  # type: ignore[union-attr]
        causes: list[str] = []
        new_rows = None
        last = history.last_ended()
        last_hashes = (last[0].payload or {}).get("sources", {}) if last is not None else {}
        if "new_data" in retrain.triggers:
            trained = self._trained_hashes()
            changed = [n for n, h in hashes.items() if trained.get(n) not in (None, h)]
            if changed and hashes != last_hashes:
                causes.append("new_data: " + ", ".join(changed))
                new_rows = self._new_rows(changed)
        if report is not None and report.get("enough"):
            drift = report.get("drift")
            if "drift" in retrain.triggers and drift is not None and drift["drifted_overall"]:
                share = drift["share_drifted"]
                causes.append(f"drift: {share:.0%} of features ({', '.join(drift['drifted'])})")
            if "quality" in retrain.triggers and self._quality_alert_firing():
                causes.append("quality: a live-metric alert fires")
        for item in retrain.triggers:
            if isinstance(item, dict) and "schedule" in item:
                from croniter import croniter

                since = self._schedule_base(last)
                due = croniter(item["schedule"], since).get_next(datetime)
                if due <= now:
                    causes.append(f"schedule: {item['schedule']} (due {due:%Y-%m-%d %H:%M})")
        return causes, new_rows

    def _schedule_base(self, last: tuple[m.Event, m.Event] | None) -> datetime:
        """A schedule counts from the end of the last retraining, else from when the serving
        version was registered: starting the controller never fires a schedule missed before
        its time."""
        if last is not None:
            return _at(last[1])
        model, env = self._model_env()
        if self.registry.alias(model, env) is not None:
            created = as_utc(self.registry.version(model, env).created_at)
            if created is not None:
                return created
        return utcnow()

    # -- guardrails ------------------------------------------------------------------------

    def _guardrail(
        self,
        now: datetime,
        causes: list[str],
        new_rows: int | None,
        history: History,
        hashes: dict[str, str],
        code: str,
    ) -> str | None:
        retrain = self.config.monitor.retrain  # type: ignore[union-attr]
        last = history.last_ended()
        if last is not None:
            started, ended = last
            payload = started.payload or {}
            if payload.get("sources") == hashes and payload.get("code") == code:
                return (
                    "nothing_new: the sources and the code are those of the last retraining "
                    f"(ended {_at(ended):%Y-%m-%d %H:%M:%S} UTC)"
                )
            waited = (now - _at(ended)).total_seconds()
            if waited < retrain.cooldown:
                return (
                    f"cooldown: the last retraining ended {waited:.0f}s ago, "
                    f"wait {retrain.cooldown:.0f}s"
                )
        with self.store.session() as s:
            runs = s.scalar(
                select(func.count(m.Event.id))
                .where(m.Event.kind == ev.RETRAIN_STARTED)
                .where(m.Event.entity_id == self.config.project)
                .where(m.Event.at >= now - timedelta(days=1))
            )
        if (runs or 0) >= retrain.max_runs_per_day:
            return f"max_runs_per_day: {runs} retrainings in the last 24 h"
        only_new_data = all(c.startswith("new_data") for c in causes)
        if only_new_data and new_rows is not None and new_rows < retrain.min_new_rows:
            return f"min_new_rows: {new_rows} new rows, need {retrain.min_new_rows}"
        return None

    def _skipped(self, causes: list[str], why: str, history: History) -> list[Act]:
        """Record a hold once per reason until the next retraining starts.

        Causes count by their kind (``drift``, not the share that drifts this turn), and
        ``nothing_new`` once whatever the causes: it holds until the data or the code changes.
        """
        reason = why.split(":")[0]
        kinds = sorted({c.split(":")[0] for c in causes})
        for event in history.skipped_since_start():
            payload = event.payload or {}
            if payload.get("why") != reason:
                continue
            seen = sorted({str(c).split(":")[0] for c in payload.get("causes") or []})
            if reason == "nothing_new" or seen == kinds:
                return []
        self._event(ev.RETRAIN_SKIPPED, {"causes": causes, "why": reason, "detail": why})
        return [{"act": "retrain_skipped", "causes": causes, "why": why}]

    # -- the job ---------------------------------------------------------------------------

    def _start(self, causes: list[str], hashes: dict[str, str], code: str) -> list[Act]:
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        report = self.ci_reports / f"ci-{stamp}.md"
        output = self.ci_reports / f"ci-{stamp}.log"
        self._event(
            ev.RETRAIN_STARTED,
            {"causes": causes, "sources": hashes, "code": code, "log": str(output)},
        )
        start_id = self._last_id(ev.RETRAIN_STARTED)
        try:
            self.job = RetrainJob.start(
                self.config.file, causes=causes, start_id=start_id, report=report, log=output
            )
        except OSError as exc:
            error = f"Cannot start the retraining process: {exc}."
            self._event(ev.RETRAIN_FAILED, {"causes": causes, "error": error, "exit_code": None})
            return [{"act": "retrain_failed", "causes": causes, "error": error}]
        log.info("retraining started (pid %d): %s", self.job.pid, "; ".join(causes))
        return [
            {"act": "retrain_started", "causes": causes, "pid": self.job.pid, "log": str(output)}
        ]

    def _collect(self, job: RetrainJob) -> list[Act]:
        """The act for a retraining that ended since the last turn; nothing while it runs."""
        status = job.poll()
        if status is None:
            return []
        self.job = None
        with self.store.session() as s:
            end = s.scalar(
                select(m.Event)
                .where(m.Event.entity_id == self.config.project)
                .where(m.Event.kind.in_(_ENDS))
                .where(m.Event.id > job.start_id)
                .order_by(m.Event.id)
                .limit(1)
            )
        if end is None:  # it died before recording an end (OOM killer, a crash, kill -9)
            error = (
                f"The retraining process ended with {describe_exit(status)} before recording "
                f"how it went; its output is in {job.log}."
            )
            self._event(
                ev.RETRAIN_FAILED, {"causes": job.causes, "error": error, "exit_code": status}
            )
            return [
                {"act": "retrain_failed", "causes": job.causes, "error": error, "exit_code": status}
            ]
        act = "retrained" if end.kind == ev.RETRAIN_FINISHED else "retrain_failed"
        # the end event's payload is what the job recorded (controller/job.py): Act's keys
        return [cast("Act", {"act": act, **(end.payload or {})})]

    # -- fingerprints ----------------------------------------------------------------------

    def _ctx(self) -> Context:
        from conveyor.pipeline.plan import Context

        if self._context is None:  # opened once: stores and stat cache, not every turn
            self._context = Context(self.config)
        return self._context

    def source_hashes(self) -> dict[str, str]:
        """Each source's content hash now (cheap: the stat cache skips unchanged files)."""
        from conveyor.pipeline.plan import snapshot_sources

        snaps, _ = snapshot_sources(self._ctx(), list(self.config.data))
        return {name: snap["content_hash"] for name, snap in snaps.items()}

    def code_fingerprint(self) -> str:
        """One hash of what a retraining runs besides the data: the validated configuration,
        each step's code (the project modules it reaches, as its cache key hashes them, or a
        command and its dependencies) and the environment lock."""
        from conveyor.pipeline.keys import canonical, digest_of

        ctx = self._ctx()
        steps: dict[str, Any] = {}
        for name, step in self.config.pipeline.items():
            if step.cmd is not None:
                steps[name] = {"cmd": step.cmd, "deps": self._dep_hashes(step.deps)}
            elif step.run is not None:
                steps[name] = ctx.code.closure(step.run.split(":", 1)[0])
        settings = hashlib.sha256(
            canonical(self.config.model_dump(mode="json")).encode()
        ).hexdigest()
        return digest_of({"config": settings, "steps": steps, "env": ctx.env.hash})

    def _dep_hashes(self, deps: list[str]) -> dict[str, Any]:
        ctx = self._ctx()
        out: dict[str, Any] = {}
        for dep in deps:
            path = ctx.root / dep
            if path.is_file():
                out[dep] = ctx.hasher.hash(path)
            elif path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file())
                hashes = ctx.hasher.hash_many(files)
                out[dep] = {p.relative_to(path).as_posix(): hashes[p] for p in files}
            else:
                out[dep] = None
        return out

    def _trained_hashes(self) -> dict[str, str]:
        model, env = self._model_env()
        if self.registry.alias(model, env) is None:
            return {}
        version = self.registry.version(model, env)
        return {
            s["source"]: s["content_hash"] for s in (version.lineage or {}).get("snapshots", [])
        }

    def _new_rows(self, sources: list[str]) -> int | None:
        from conveyor.gates.data_gates import load_source

        model, env = self._model_env()
        version = self.registry.version(model, env)
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
        from conveyor.monitor.alerts import Alerter

        model, env = self._model_env()
        rules = [a for a in self.config.monitor.alerts if a.when.metric is not None]  # type: ignore[union-attr]
        alerter = Alerter(
            self.store, rules, project=self.config.project, model=model, environment=env
        )
        return any(alerter.firing(rule.name) for rule in rules)

    # -- events ----------------------------------------------------------------------------

    def _model_env(self) -> tuple[str, str]:
        return self.config.model.name, self.config.monitor.environment  # type: ignore[union-attr]

    def _history(self) -> History:
        with self.store.session() as s:
            events = s.scalars(
                select(m.Event)
                .where(m.Event.entity == "project")
                .where(m.Event.entity_id == self.config.project)
                .where(m.Event.kind.in_(_KINDS))
                .order_by(m.Event.id.desc())
                .limit(_HISTORY)
            ).all()
        return History(list(reversed(events)))

    def _last_id(self, kind: str) -> int:
        with self.store.session() as s:
            found = s.scalar(
                select(func.max(m.Event.id))
                .where(m.Event.kind == kind)
                .where(m.Event.entity_id == self.config.project)
            )
        return int(found or 0)

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        with self.store.session() as s:
            self.store.add_event(s, kind, "project", self.config.project, payload)


def _at(event: m.Event) -> datetime:
    at = as_utc(event.at)
    if at is None:  # the column is NOT NULL; a row without a time is a broken store
        raise ConveyorError(f"The event {event.id} has no time; the store is damaged.")
    return at
