"""`conveyor watch`: the reconcile loop that keeps a good model in production by itself.

Each turn it (1) advances releases (``Releases.step``), (2) every ``monitor_every`` seconds
builds the monitoring report of the watched environment, fires or resolves alerts and writes
the metrics file, (3) looks at the retraining triggers (new data, drift, a quality alert, a
cron schedule) and, when one holds and the guardrails allow it, starts the same CI job as
`conveyor ci` in a child process (:mod:`conveyor.controller.retraining`), and (4) starts the
releases the store calls for: the newest registered version to the first environments, and a
version promoted in an environment to those that come ``after`` it.

A turn never waits for training: a retraining runs beside the loop, and the turn that sees it
end reports it, so a canary is judged on time however long training takes.

One controller per project holds a lease in the store. Every act is an event carrying its
cause, and every decision is re-derived from the store each turn (a release row exists or it
does not; a retrain started or it did not), so the controller can be killed and restarted at
any moment without losing or doubling an action.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast

from sqlalchemy import func, select

from conveyor.controller.lease import ControllerBusy, Lease
from conveyor.controller.metrics import serve_metrics
from conveyor.controller.retraining import Retrainer
from conveyor.exceptions import ConveyorError, ReleaseError, StoreError
from conveyor.store import models as m
from conveyor.store.atomic import write_text
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config.project import ProjectConfig
    from conveyor.monitor.report import MonitorReport
    from conveyor.registry.registry import Registry
    from conveyor.release.strategies import Action, Outcome

__all__ = ["Act", "Controller", "run_controller"]


class Act(TypedDict):
    """One thing the controller did, as ``report`` is told it and `conveyor watch` prints it.

    ``act`` says which; the other keys are those of that kind:

    - ``release``: a release moved (``Releases.step``'s outcome): id, action, why, verdict;
    - ``release_started``: id, environment, version, strategy;
    - ``retrain_started``: causes, pid, log; ``retrain_skipped``: causes, why;
    - ``retrained``: causes, run_id, passed, version, already_registered, failed_gates;
    - ``retrain_failed``: causes, error, exit_code;
    - ``alert``: an alert's change as ``Alerter.process`` wrote it: alert, state, summary,
      kind, entity_id, and how the webhook went;
    - ``waiting``: why (another controller holds the lease).
    """

    act: Literal[
        "release",
        "release_started",
        "retrain_started",
        "retrain_skipped",
        "retrained",
        "retrain_failed",
        "alert",
        "waiting",
    ]
    id: NotRequired[str]
    action: NotRequired[Action]
    why: NotRequired[str]
    verdict: NotRequired[dict[str, Any] | None]
    environment: NotRequired[str]
    version: NotRequired[int | None]
    strategy: NotRequired[str]
    causes: NotRequired[list[str]]
    pid: NotRequired[int | None]
    log: NotRequired[str]
    run_id: NotRequired[str | None]
    passed: NotRequired[bool]
    already_registered: NotRequired[bool]
    failed_gates: NotRequired[list[str]]
    error: NotRequired[str | None]
    exit_code: NotRequired[int | None]
    alert: NotRequired[str]
    state: NotRequired[str]
    summary: NotRequired[str]
    kind: NotRequired[str]
    entity_id: NotRequired[str]


log = logging.getLogger("conveyor.controller")


class Controller:
    """One project's loop; ``turn()`` does one pass, ``run_controller()`` repeats it under the
    lease.

    Args:
        config: the project's configuration.
        registry: the open registry (the caller's: :meth:`close` leaves it open).
        checks: how releases reach the gateway (``GatewayChecks``), or None.
        monitor_every: seconds between monitoring reports.
        report: called with each act as it happens (`conveyor watch` prints it).
        ci_reports: where each retraining writes its CI report and output log.
        stop_grace: seconds :meth:`close` gives a running retraining to stop before killing it.
    """

    def __init__(
        self,
        config: ProjectConfig,
        registry: Registry,
        *,
        checks: Any = None,
        monitor_every: float = 30.0,
        report: Callable[[Act], None] | None = None,
        ci_reports: Path | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        from conveyor.release.releases import Releases

        self.config = config
        self.registry = registry
        self.store = registry.store
        self.releases = Releases(config, registry, checks=checks)
        self.monitor_every = monitor_every
        self._report = report or (lambda _o: None)
        self._last_monitor: datetime | None = None
        self.last_report: MonitorReport | None = None
        self.metrics_text = ""  # the last report in Prometheus text format
        self._alerter: Any = None
        self.retrainer = Retrainer(
            config,
            registry,
            ci_reports=ci_reports or Path(config.root) / ".conveyor" / "reports",
            stop_grace=stop_grace,
        )

    def close(self) -> None:
        """Stop a running retraining and close what the controller opened for itself (the
        registry stays the caller's). The stopped retraining runs again under the next
        controller."""
        self.retrainer.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one turn --------------------------------------------------------------------------

    def turn(self, now: datetime | None = None) -> list[Act]:
        """Releases, monitoring, retraining and new releases, once; returns what happened.

        Never waits for a retraining: it starts one (``retrain_started``) and a later turn
        reports its end (``retrained`` or ``retrain_failed``).
        """
        # a turn at the real time reports a window that ends when it is read, after the
        # kept report's fingerprint is taken (monitor/kept.py), so `conveyor monitor` can use it
        window_end = now
        now = now or utcnow()
        done: list[Act] = []

        def tell(acts: list[Act]) -> None:
            # each part is told as it ends, not with the turn's: the first monitoring report
            # loads the model (importing scikit-learn, seconds), and a release step must not
            # look delayed behind it
            done.extend(acts)
            for act in acts:
                self._report(act)

        outcomes = self.releases.step(now=now)
        tell([_release_act(o) for o in outcomes if o["action"] not in ("wait", "paused")])
        if self.config.monitor is not None and self._due(now):
            tell(self._monitor(now, window_end))
        if self.config.model is not None and self.config.monitor is not None:
            tell(self.retrainer.turn(now, self.last_report))
        if self.config.model is not None and self.config.deploy:
            tell(self._start_releases())
        return done

    def _due(self, now: datetime) -> bool:
        if self._last_monitor is None or (now - self._last_monitor).total_seconds() >= (
            self.monitor_every
        ):
            self._last_monitor = now
            return True
        return False

    # -- monitoring and alerts -------------------------------------------------------------

    def _monitor(self, now: datetime, window_end: datetime | None = None) -> list[Act]:
        from conveyor.monitor.alerts import Alerter, evaluate
        from conveyor.monitor.kept import keep, key_for, take
        from conveyor.monitor.report import monitor_report, prometheus_text

        monitor = self.config.monitor
        model = self.config.model.name if self.config.model else None
        if (
            monitor is None
            or model is None
            or self.registry.alias(model, monitor.environment) is None
        ):
            return []
        # kept for `conveyor monitor`, which prints it while the log has not changed since;
        # the fingerprint is taken before the report reads anything (monitor/kept.py)
        key = key_for(self.config, None, None, None)
        fingerprint = take(self.config, self.store, key) if key is not None else None
        try:
            report = monitor_report(self.config, self.registry, now=window_end)
        except ConveyorError as exc:
            log.warning("monitoring skipped: %s", exc)
            return []
        keep(self.config, self.store, fingerprint, report, by="conveyor watch")
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
        changes = self._alerter.process(evaluate(monitor.alerts, report), report, now=now)
        # an alert's change is its event's payload (a plain dict): its keys are Act's alert keys
        return [cast("Act", {"act": "alert", **c}) for c in changes]

    # -- releases the store calls for ------------------------------------------------------

    def _start_releases(self) -> list[Act]:
        """Start each release the environments' order asks for and no release row records."""
        if self.config.model is None:
            return []
        model = self.config.model.name
        started: list[Act] = []
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
            reason = "controller"
            if self._release_exists(model, candidate, env_name):
                retry = self._retry_reason(model, candidate, env_name, env.retry_inconclusive)
                if retry is None:
                    continue
                reason = f"controller: {retry}"
            try:
                release = self.releases.start(model, candidate, env_name, reason=reason)
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

    def _retry_reason(self, model: str, version: int, environment: str, limit: int) -> str | None:
        """Why ``version`` may be released to ``environment`` again, or None: its last release
        was rolled back on a verdict that re-judging no longer supports, and fewer than
        ``limit`` retries (``retry_inconclusive``) were made."""
        if limit <= 0:
            return None
        with self.store.session() as s:
            rows = s.scalars(
                select(m.Release)
                .where(m.Release.model == model)
                .where(m.Release.environment == environment)
                .where(m.Release.to_version == version)
                .order_by(m.Release.created_at)
            ).all()
            made, last = len(rows) - 1, rows[-1].id if rows else None
        if last is None or made >= limit:
            return None
        allowed, why = self.releases.rejudge(last)
        if not allowed:
            return None
        return f"retry {made + 1} of {limit}: {why}"

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


def _release_act(outcome: Outcome) -> Act:
    """A release's outcome told as the controller's act."""
    act: Act = {"act": "release", "id": outcome["id"], "action": outcome["action"]}
    if "why" in outcome:
        act["why"] = outcome["why"]
    if "verdict" in outcome:
        act["verdict"] = outcome["verdict"]
    return act


def run_controller(
    config: ProjectConfig,
    *,
    checks: Any = None,
    interval: float = 1.0,
    monitor_every: float = 30.0,
    once: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[Act], None] | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Turn every ``interval`` seconds until stopped; returns the turns run.

    With ``once``, one turn, and then more only while a retraining it started runs (so that
    `conveyor watch --once` reports how it ended instead of stopping it). Stopping stops a
    running retraining: the next controller runs it again.

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

        def keep_alive() -> None:  # a slow turn (a large report) must not let the lease expire
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
                if once and not controller.retrainer.running:
                    return turns
                if stop.wait(interval):
                    return turns
        finally:
            controller.close()
            if http is not None:
                http.shutdown()
                http.server_close()
            done.set()
            heart.join(5)
            lease.release()
