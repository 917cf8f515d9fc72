"""Releases: move an environment from version A to B under a strategy, judged live, finished
promoted or rolled back; every change of traffic written with its event in one transaction.

What the gateways serve is the alias (all traffic, the stable version) plus at most one
``traffic`` row per environment: a canary's share, a shadow's mirror, or a version kept warm
for an instant rollback. A release changes both only here, through ``_apply``, and always
together with the release row and an event, so no traffic state exists that no event records
and a controller killed at any point resumes from the store.

``Releases.step()`` is the one function that advances releases: ``conveyor release step`` (a CI
job) and ``conveyor watch`` (the controller loop) both call it.
"""

from __future__ import annotations

import builtins
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from conveyor.config.deploy import EnvironmentConfig
from conveyor.exceptions import ReleaseError, StoreError
from conveyor.release.analysis import Verdict
from conveyor.release.strategies import Action, Outcome, Split, strategy_for
from conveyor.release.views import ACTIVE, ReleaseView
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.config.deploy import AnalysisConfig
    from conveyor.registry.registry import Registry

__all__ = ["ACTIVE", "Outcome", "ReleaseView", "Releases", "RolledBack"]

_KEEP_VERDICTS = 50


class RolledBack(TypedDict):
    """What ``Releases.rollback`` did: the release it rolled back (None: only the alias
    moved back) and the version the environment serves now (None: nothing)."""

    release: str | None
    model: str
    environment: str
    version: int | None


def _view(row: m.Release) -> ReleaseView:
    return ReleaseView(
        id=row.id,
        model=row.model,
        environment=row.environment,
        from_version=row.from_version,
        to_version=row.to_version,
        strategy=row.strategy,
        state=row.state,
        step=row.step,
        step_started_at=as_utc(row.step_started_at),
        plan=row.plan,
        verdicts=list(row.verdicts or []),
        reason=row.reason,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        finished_at=as_utc(row.finished_at),
    )


class Releases:
    """Start, advance, pause, resume, promote, abort and roll back releases over one store."""

    def __init__(self, config: ProjectConfig, registry: Registry, *, checks: Any = None) -> None:
        self.config = config
        self.registry = registry
        self.store = registry.store
        self._checks = checks  # callable(release) -> (ok, evidence) for smoke and tests

    # -- reading ---------------------------------------------------------------------------

    def get(self, release_id: str) -> ReleaseView:
        """Raises: ReleaseError: no release has that id."""
        with self.store.session() as s:
            row = s.get(m.Release, release_id)
            if row is None:
                raise ReleaseError(f"No release {release_id!r}; `conveyor releases` lists them.")
            return _view(row)

    def list(self, *, model: str | None = None, limit: int = 50) -> list[ReleaseView]:
        with self.store.session() as s:
            q = select(m.Release).order_by(m.Release.created_at.desc()).limit(limit)
            if model:
                q = q.where(m.Release.model == model)
            return [_view(r) for r in s.scalars(q)]

    def active(self) -> builtins.list[ReleaseView]:
        with self.store.session() as s:
            q = select(m.Release).where(m.Release.state.in_(ACTIVE)).order_by(m.Release.created_at)
            return [_view(r) for r in s.scalars(q)]

    def timeline(self, release_id: str) -> builtins.list[m.Event]:
        self.get(release_id)
        return self.store.events(entity="release", entity_id=release_id, limit=10_000)

    def environment(self, name: str) -> EnvironmentConfig:
        """The environment's settings; an environment not in ``deploy:`` is released directly."""
        return self.config.deploy.get(name) or EnvironmentConfig()

    # -- starting --------------------------------------------------------------------------

    def start(
        self,
        model: str,
        version: int,
        environment: str,
        *,
        reason: str = "",
        shadow_for: float | None = None,
    ) -> ReleaseView:
        """Begin moving ``environment`` to ``version`` under the environment's strategy.

        ``shadow_for`` (seconds) asks instead for a shadow comparison of that length, whatever
        the environment's strategy: the version answers no one, so it need not have passed the
        environment's ``after`` first, and it ends ``completed`` with its verdict, the alias
        unchanged (unless the environment itself is a shadow with ``promote: true``).

        Raises:
            ReleaseError: another release of this environment is active, the version already
                serves it, or it has not passed the environment it must pass first.
            ModelNotFound: no such version.
        """
        env = self.environment(environment)
        if shadow_for is not None:
            if shadow_for <= 0:
                raise ReleaseError("A shadow comparison needs a duration above zero.")
            env = env.model_copy(
                update={"strategy": "shadow", "steps": [], "duration": shadow_for, "promote": False}
            )
        self.registry.version(model, version)  # raises ModelNotFound
        if (
            shadow_for is None
            and env.after is not None
            and not self._passed(model, version, env.after)
        ):
            raise ReleaseError(
                f"{model} version {version} has not passed {env.after!r} yet; deploy it there "
                f"first (conveyor deploy {model} {version} --to {env.after}), then here."
            )
        now = utcnow()
        rid = f"r{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
        try:
            with self.store.session() as s:
                stable = s.get(m.Alias, (model, environment))
                before = stable.version if stable is not None else None
                if before == version:
                    raise ReleaseError(
                        f"{model}@{environment} already serves version {version}; nothing to do."
                    )
                strategy = env.strategy if before is not None else "direct"
                row = m.Release(
                    id=rid,
                    model=model,
                    environment=environment,
                    from_version=before,
                    to_version=version,
                    strategy=strategy,
                    state="running",
                    step=0,
                    step_started_at=now,
                    plan=env.model_dump(by_alias=True),
                    verdicts=[],
                    reason=reason or None,
                    active=f"{model}@{environment}",
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()  # the unique `active` refuses a second release here
                payload = {
                    "model": model,
                    "environment": environment,
                    "from": before,
                    "to": version,
                    "strategy": strategy,
                    "reason": reason,
                }
                if strategy != env.strategy:
                    payload["note"] = f"nothing serves {environment} yet: released directly"
                self._event(s, row, ev.RELEASE_STARTED, payload)
                self._enter_step(s, row, 0)
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                running = self._active_for(model, environment)
                which = f" ({running.id}, {running.state})" if running else ""
                raise ReleaseError(
                    f"A release of {model}@{environment} is already active{which}; finish it "
                    "first (conveyor release abort ID, or promote/rollback)."
                ) from None
            raise
        return self.get(rid)

    def _passed(self, model: str, version: int, environment: str) -> bool:
        with self.store.session() as s:
            done = s.scalar(
                select(m.Release.id)
                .where(m.Release.model == model)
                .where(m.Release.environment == environment)
                .where(m.Release.to_version == version)
                .where(m.Release.state == "promoted")
                .limit(1)
            )
        return done is not None

    def _active_for(self, model: str, environment: str) -> ReleaseView | None:
        with self.store.session() as s:
            row = s.scalar(select(m.Release).where(m.Release.active == f"{model}@{environment}"))
            return _view(row) if row is not None else None

    # -- the traffic each step means -------------------------------------------------------

    def _enter_step(self, s: Any, row: m.Release, step: int) -> None:
        """Set the traffic of ``step`` (and the alias where the step moves it)."""
        row.step = step
        row.step_started_at = row.updated_at = utcnow()
        strategy_for(row.strategy).enter_step(self, s, row, step)

    # -- what strategies act through (strategies.Host) -------------------------------------

    def move_alias(self, s: Any, row: m.Release, version: int) -> None:
        """Point the environment's alias at ``version`` as part of release ``row``."""
        self.registry.move_alias(s, row.model, row.environment, version, reason=f"release {row.id}")

    def run_checks(self, view: ReleaseView) -> tuple[bool | None, dict[str, Any]] | None:
        """Smoke requests and integration tests against the gateway; None without one."""
        if self._checks is None:
            return None
        ok, evidence = self._checks(view)
        return ok, evidence

    def analysis_for(self, view: ReleaseView) -> AnalysisConfig:
        """The bounds the release was started with (its plan), else the environment's."""
        from conveyor.config.deploy import AnalysisConfig

        if view.plan.get("analysis"):
            return AnalysisConfig.model_validate(view.plan["analysis"])
        return self.environment(view.environment).analysis

    def set_traffic(self, s: Any, row: m.Release, split: Split) -> None:
        """Write the environment's one traffic row (None: the alias alone), with its event."""
        current = s.get(m.Traffic, (row.model, row.environment))
        if split is None:
            if current is not None:  # nothing beside the alias already: nothing to record
                s.delete(current)
                self._event(
                    s, row, ev.TRAFFIC_CHANGED, {"mode": None, "version": None, "weight": 0}
                )
            return
        mode, version, weight = split
        if current is None:
            current = m.Traffic(model=row.model, environment=row.environment)
            s.add(current)
        current.version, current.mode, current.weight = version, mode, weight
        current.sticky = row.plan.get("sticky")
        current.release_id = row.id
        current.updated_at = utcnow()
        self._event(
            s, row, ev.TRAFFIC_CHANGED, {"mode": mode, "version": version, "weight": weight}
        )

    def finish(self, s: Any, row: m.Release, state: str, why: str) -> None:
        """End release ``row`` in ``state`` (it is no longer the environment's active one)."""
        row.state = state
        row.active = None
        row.finished_at = row.updated_at = utcnow()
        kind = {
            "promoted": ev.RELEASE_PROMOTED,
            "rolled_back": ev.RELEASE_ROLLED_BACK,
            "completed": ev.RELEASE_COMPLETED,
        }[state]
        self._event(s, row, kind, {"why": why, "step": row.step})

    def _event(self, s: Any, row: m.Release, kind: str, payload: dict[str, Any]) -> None:
        self.store.add_event(
            s,
            kind,
            "release",
            row.id,
            {"model": row.model, "environment": row.environment, **payload},
        )

    # -- advancing -------------------------------------------------------------------------

    def step(
        self, release_id: str | None = None, *, now: datetime | None = None
    ) -> builtins.list[Outcome]:
        """Advance every active release (or one) as far as its analysis allows right now.

        Returns one outcome per release looked at: its id, what happened, and the verdict.
        """
        targets = [self.get(release_id)] if release_id else self.active()
        return [self._advance(r, now or utcnow()) for r in targets if r.active]

    def _advance(self, view: ReleaseView, now: datetime) -> Outcome:
        if view.state == "paused":
            return {"id": view.id, "action": "paused"}
        failure = self._load_failure(view)
        if failure is not None:  # a replica cannot load B: it keeps serving A; hold here
            self.pause(view.id, failure)
            return {"id": view.id, "action": "paused", "why": failure}
        return strategy_for(view.strategy).advance(self, view, now)

    def _load_failure(self, view: ReleaseView) -> str | None:
        """Why a gateway could not load the candidate since the release began, if one could not."""
        with self.store.session() as s:
            resumed = s.scalar(  # a resume says the failure was dealt with: look after it
                select(func.max(m.Event.at))
                .where(m.Event.kind == ev.RELEASE_RESUMED)
                .where(m.Event.entity_id == view.id)
            )
            since = max(view.created_at, as_utc(resumed)) if resumed else view.created_at
            event = s.scalar(
                select(m.Event)
                .where(m.Event.kind == ev.GATEWAY_LOAD_FAILED)
                .where(m.Event.entity_id == f"{view.model}:{view.to_version}")
                .where(m.Event.at > since)
                .order_by(m.Event.id.desc())
                .limit(1)
            )
        if event is None:
            return None
        payload = event.payload or {}
        return (
            f"gateway {payload.get('gateway', '?')} cannot load version {view.to_version} "
            f"({payload.get('error', 'no reason given')}); it keeps serving version "
            f"{view.from_version}. Fix the version, then abort or resume."
        )

    def note(self, view: ReleaseView, action: Action, verdict: Verdict) -> Outcome:
        """Keep the latest verdict on the release (not an event: nothing changed)."""
        with self.store.session() as s:
            row = s.get(m.Release, view.id)
            if row is not None and row.state in ACTIVE:
                row.verdicts = [
                    *list(row.verdicts or [])[-_KEEP_VERDICTS + 1 :],
                    {"at": utcnow().isoformat(), **verdict.to_dict()},
                ]
                row.updated_at = utcnow()
        return {"id": view.id, "action": action, "verdict": verdict.to_dict()}

    def transition(
        self,
        view: ReleaseView,
        action: Action,
        why: str,
        verdict: Verdict | None,
        evidence: dict | None = None,
    ) -> Outcome:
        with self.store.session() as s:
            row = s.get(m.Release, view.id)
            if row is None or row.state not in ACTIVE or row.step != view.step:
                return {"id": view.id, "action": "skipped", "why": "changed meanwhile"}
            if verdict is not None:
                row.verdicts = [
                    *list(row.verdicts or [])[-_KEEP_VERDICTS + 1 :],
                    {"at": utcnow().isoformat(), **verdict.to_dict()},
                ]
            detail = {
                "why": why,
                "verdict": verdict.to_dict() if verdict else None,
                "evidence": evidence,
            }
            if action == "next":
                self._event(s, row, ev.RELEASE_STEPPED, {"from_step": row.step, **detail})
                self._enter_step(s, row, row.step + 1)
            elif action == "promoted":
                self._promote(s, row, why, detail)
            elif action == "rolled_back":
                self._rollback_row(s, row, why, detail)
            elif action == "completed":
                self.set_traffic(s, row, None)
                self._event(s, row, ev.RELEASE_ANALYSIS, detail)
                self.finish(s, row, "completed", why)
        return {
            "id": view.id,
            "action": action,
            "why": why,
            "verdict": verdict.to_dict() if verdict else None,
        }

    def _promote(self, s: Any, row: m.Release, why: str, detail: dict | None = None) -> None:
        alias = s.get(m.Alias, (row.model, row.environment))
        if alias is None or alias.version != row.to_version:
            self.registry.move_alias(
                s, row.model, row.environment, row.to_version, reason=f"release {row.id}"
            )
        self.set_traffic(s, row, None)
        if detail:
            self._event(s, row, ev.RELEASE_ANALYSIS, detail)
        self.finish(s, row, "promoted", why)

    def _rollback_row(self, s: Any, row: m.Release, why: str, detail: dict | None = None) -> None:
        alias = s.get(m.Alias, (row.model, row.environment))
        if row.from_version is not None and (alias is None or alias.version != row.from_version):
            self.registry.move_alias(
                s,
                row.model,
                row.environment,
                row.from_version,
                reason=f"rollback of release {row.id}",
            )
        elif row.from_version is None and alias is not None:
            self.registry.unset_alias(
                s, row.model, row.environment, reason=f"rollback of release {row.id}"
            )
        self.set_traffic(s, row, None)
        if detail:
            self._event(s, row, ev.RELEASE_ANALYSIS, detail)
        self.finish(s, row, "rolled_back", why)

    # -- retrying a rollback the evidence no longer supports -------------------------------

    def rejudge(self, release_id: str) -> tuple[bool, str]:
        """Judge a rolled-back release's last step again, on the labels and rows known now.

        A live verdict can roll a release back on evidence that later proves inconclusive: the
        first labels to arrive were wrong and were corrected, or were an unlucky subset. The
        rollback's recorded verdict (its ``release.analysis`` event) names the checks that
        failed; the same strategy's judge over the same window, read again, either still shows
        a failing check or shows none. Only a rollback by a live verdict can be re-judged: one
        by hand, by an abort, or by smoke requests and tests rests on nothing to re-read.

        Returns:
            (allowed, why): whether a retry is justified, and a sentence saying why or why not.

        Raises:
            ReleaseError: no release has that id.
        """
        view = self.get(release_id)
        if view.state != "rolled_back":
            return False, f"release {view.id} is {view.state}, not rolled back"
        recorded = self._rollback_verdict(view)
        if recorded is None:
            return False, f"release {view.id} was not rolled back by a live verdict"
        failed = [c["name"] for c in recorded.get("checks", []) if c.get("result") == "fail"]
        now = strategy_for(view.strategy).judged(self, view, view.step_started_at)
        still = [c["name"] for c in now.checks if c.get("result") == "fail"]
        if still:
            return False, f"re-judged, {', '.join(still)} still fails"
        return True, (
            f"release {view.id} was rolled back on {', '.join(failed) or 'its verdict'}; "
            f"re-judged on step {view.step}'s window no check fails ({now.summary})"
        )

    def retry_allowed(self, release_id: str) -> bool:
        """Whether rolled-back release ``release_id`` rested only on evidence now inconclusive
        (:meth:`rejudge`)."""
        return self.rejudge(release_id)[0]

    def _rollback_verdict(self, view: ReleaseView) -> dict[str, Any] | None:
        with self.store.session() as s:
            event = s.scalar(
                select(m.Event)
                .where(m.Event.kind == ev.RELEASE_ANALYSIS)
                .where(m.Event.entity == "release")
                .where(m.Event.entity_id == view.id)
                .order_by(m.Event.id.desc())
                .limit(1)
            )
            payload = dict(event.payload or {}) if event is not None else {}
        verdict = payload.get("verdict")
        if not verdict or verdict.get("decision") != "rollback":
            return None
        return dict(verdict)

    # -- by hand ---------------------------------------------------------------------------

    def pause(self, release_id: str, reason: str = "") -> ReleaseView:
        return self._hand(release_id, "pause", reason)

    def resume(self, release_id: str, reason: str = "") -> ReleaseView:
        return self._hand(release_id, "resume", reason)

    def promote(self, release_id: str, reason: str = "") -> ReleaseView:
        return self._hand(release_id, "promote", reason)

    def abort(self, release_id: str, reason: str = "") -> ReleaseView:
        return self._hand(release_id, "abort", reason)

    def _hand(self, release_id: str, what: str, reason: str) -> ReleaseView:
        with self.store.session() as s:
            row = s.get(m.Release, release_id)
            if row is None:
                raise ReleaseError(f"No release {release_id!r}; `conveyor releases` lists them.")
            if row.state not in ACTIVE:
                raise ReleaseError(f"Release {release_id} is {row.state}; it cannot {what}.")
            why = reason or f"{what} by hand"
            if what == "pause":
                if row.state == "paused":
                    raise ReleaseError(f"Release {release_id} is already paused.")
                row.state, row.updated_at = "paused", utcnow()
                self._event(s, row, ev.RELEASE_PAUSED, {"why": why})
            elif what == "resume":
                if row.state != "paused":
                    raise ReleaseError(f"Release {release_id} is not paused.")
                row.state, row.updated_at = "running", utcnow()
                # the step's clock restarts: its duration is of observed traffic
                row.step_started_at = utcnow()
                self._event(s, row, ev.RELEASE_RESUMED, {"why": why})
            elif what == "promote":
                self._promote(s, row, why)
            else:  # abort: back to A, like a rollback, but by decision rather than evidence
                self._rollback_row(s, row, why)
                row.state = "aborted"
                self._event(s, row, ev.RELEASE_ABORTED, {"why": why})
        return self.get(release_id)

    def rollback(self, model: str, environment: str, *, reason: str = "") -> RolledBack:
        """Put ``environment`` back on its previous version, alias and traffic together.

        An active release is rolled back (A was serving, or is kept warm); otherwise the alias
        returns to the version it pointed at before its last move.

        Raises:
            ReleaseError: nothing to roll back to.
        """
        why = reason or "rollback by hand"
        with self.store.session() as s:
            row = s.scalar(select(m.Release).where(m.Release.active == f"{model}@{environment}"))
            if row is not None:
                self._rollback_row(s, row, why)
                return {
                    "release": row.id,
                    "model": model,
                    "environment": environment,
                    "version": row.from_version,
                }
            alias = s.get(m.Alias, (model, environment))
            if alias is None:
                raise ReleaseError(f"{model}@{environment} serves nothing; nothing to roll back.")
            previous = self._previous(s, model, environment, alias.version)
            if previous is None:
                raise ReleaseError(
                    f"{model}@{environment} has served only version {alias.version}; there is no "
                    "earlier version to roll back to."
                )
            self.registry.move_alias(s, model, environment, previous, reason=why)
            traffic = s.get(m.Traffic, (model, environment))
            if traffic is not None:
                s.delete(traffic)
            self.store.add_event(
                s,
                ev.ENVIRONMENT_ROLLED_BACK,
                "model",
                model,
                {"environment": environment, "from": alias.version, "to": previous, "why": why},
            )
            return {
                "release": None,
                "model": model,
                "environment": environment,
                "version": previous,
            }

    def _previous(self, s: Any, model: str, environment: str, current: int) -> int | None:
        events = s.scalars(
            select(m.Event)
            .where(m.Event.kind == ev.ALIAS_MOVED)
            .where(m.Event.entity == "model")
            .where(m.Event.entity_id == model)
            .order_by(m.Event.id.desc())
            .limit(500)
        )
        for event in events:
            payload = event.payload or {}
            if payload.get("alias") == environment and payload.get("to") == current:
                before = payload.get("from")
                if before is not None and before != current:
                    return int(before)
        return None
