"""The release strategies, one small class each: what traffic a step means, how a running
release is advanced, what share the candidate gets, and how its window is judged.

:class:`~conveyor.release.releases.Releases` owns the store: it opens the transaction, writes
the release row, traffic and events together. A strategy only decides, and acts through the
few operations of :class:`Host`, so a strategy never writes a traffic row that no event records.

    direct      the alias moves at once; smoke/tests (if any) promote or roll back
    canary      the candidate gets each step's weight, judged on each step's window
    shadow      the candidate answers copies only; compared, then promoted or completed
    blue-green  warmed beside the stable version, switched at once, the old one kept warm
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NotRequired, Protocol, TypedDict

from conveyor.exceptions import ReleaseError
from conveyor.release.analysis import Side, Verdict, collect, judge

if TYPE_CHECKING:
    from conveyor.config.deploy import AnalysisConfig, EnvironmentConfig
    from conveyor.release.releases import ReleaseView
    from conveyor.store import models as m
    from conveyor.store.metadata import Store

__all__ = ["STRATEGIES", "Action", "Host", "Outcome", "Strategy", "strategy_for"]

# (mode, version, weight) of the environment's one traffic row, or None for the alias alone
Split = tuple[str, int, float] | None

#: What one look at a release did: it waits, is paused, moved to its next step, ended
#: (promoted, rolled back, completed: a shadow judged and put away), or was skipped because
#: another process changed it meanwhile.
Action = Literal["wait", "paused", "next", "promoted", "rolled_back", "completed", "skipped"]


class Outcome(TypedDict):
    """What advancing one release did: ``Releases.step`` returns one per release looked at,
    the controller tells it as a ``release`` act, `conveyor release step` prints it."""

    id: str
    action: Action
    why: NotRequired[str]
    verdict: NotRequired[dict[str, Any] | None]  # ``Verdict.to_dict()`` of a live judgement


class Host(Protocol):
    """What a strategy may do to a release: the operations :class:`Releases` provides."""

    store: Store

    def move_alias(self, s: Any, row: m.Release, version: int) -> None: ...

    def set_traffic(self, s: Any, row: m.Release, split: Split) -> None: ...

    def finish(self, s: Any, row: m.Release, state: str, why: str) -> None: ...

    def run_checks(self, view: ReleaseView) -> tuple[bool | None, dict[str, Any]] | None: ...

    def analysis_for(self, view: ReleaseView) -> AnalysisConfig: ...

    def environment(self, name: str) -> EnvironmentConfig: ...

    def transition(
        self,
        view: ReleaseView,
        action: Action,
        why: str,
        verdict: Verdict | None,
        evidence: dict[str, Any] | None = None,
    ) -> Outcome: ...

    def note(self, view: ReleaseView, action: Action, verdict: Verdict) -> Outcome: ...


def needs_checks(plan: dict[str, Any]) -> bool:
    """Whether the environment asks for smoke requests or integration tests."""
    return bool(plan.get("smoke") or plan.get("tests"))


class Strategy(ABC):
    """The base: a strategy judged live on its steps' windows (canary, shadow override)."""

    name: ClassVar[str]

    @abstractmethod
    def enter_step(self, host: Host, s: Any, row: m.Release, step: int) -> None:
        """Set the traffic (and the alias where it moves) that ``step`` means."""

    def weight(self, view: ReleaseView) -> float:
        """The candidate's share of requests, in percent, while the release is active."""
        return 0.0

    @abstractmethod
    def advance(self, host: Host, view: ReleaseView, now: datetime) -> Outcome:
        """Move a running release on as far as its evidence allows right now."""

    def judged(self, host: Host, view: ReleaseView, since: datetime) -> Verdict:
        """The live verdict on the window that began at ``since``: the candidate as served
        against the stable version, paired with the stable version mirrored on its requests."""
        a, b = _versions(view)
        sides = collect(
            host.store,
            view.model,
            view.environment,
            since,
            [(a, "serve"), (b, "serve"), (a, "shadow")],
        )
        stages = max(1, len(view.plan.get("steps") or []))  # each step's window is judged
        return judge(
            sides[(a, "serve")],
            sides[(b, "serve")],
            host.analysis_for(view),
            sides[(a, "shadow")],
            stages=stages,
        )


def _versions(view: ReleaseView) -> tuple[int, int]:
    if view.from_version is None:  # only releases that replace a version are judged against it
        raise ReleaseError(
            f"Release {view.id} has no version it replaces, so there is nothing to judge "
            "it against; release it with the direct strategy."
        )
    return view.from_version, view.to_version


class Direct(Strategy):
    """The alias moves at once; the environment's checks, if any, decide promote or rollback."""

    name = "direct"

    def enter_step(self, host: Host, s: Any, row: m.Release, step: int) -> None:
        host.move_alias(s, row, row.to_version)
        host.set_traffic(s, row, None)
        if not needs_checks(row.plan):
            host.finish(s, row, "promoted", "released directly")

    def advance(self, host: Host, view: ReleaseView, now: datetime) -> Outcome:
        result = host.run_checks(view)
        if result is None:
            return {"id": view.id, "action": "wait", "why": "checks need a gateway to run against"}
        ok, evidence = result
        if ok is None:  # the gateway does not serve it yet: judge later
            return {"id": view.id, "action": "wait", "why": evidence.get("summary", "")}
        state: Action = "promoted" if ok else "rolled_back"
        return host.transition(view, state, evidence.get("summary", ""), None, evidence)


class Canary(Strategy):
    """Each step gives the candidate its weight for its time, judged on that step's window."""

    name = "canary"

    def enter_step(self, host: Host, s: Any, row: m.Release, step: int) -> None:
        weight = row.plan["steps"][step]["weight"]
        host.set_traffic(s, row, ("canary", row.to_version, weight))

    def weight(self, view: ReleaseView) -> float:
        steps = view.plan.get("steps") or []
        return float(steps[min(view.step, len(steps) - 1)]["weight"]) if steps else 0.0

    def advance(self, host: Host, view: ReleaseView, now: datetime) -> Outcome:
        verdict = self.judged(host, view, view.step_started_at)
        if verdict.decision == "rollback":
            return host.transition(view, "rolled_back", verdict.summary, verdict)
        elapsed = (now - view.step_started_at).total_seconds()
        steps = view.plan["steps"]
        if elapsed < steps[view.step]["for"] or verdict.decision == "wait":
            return host.note(view, "wait", verdict)
        if view.step + 1 < len(steps):
            return host.transition(view, "next", verdict.summary, verdict)
        return host.transition(view, "promoted", verdict.summary, verdict)


class Shadow(Strategy):
    """The candidate answers mirrored copies only; with ``promote: false`` it is a comparison,
    whose verdict is its result (``completed``), the alias unchanged."""

    name = "shadow"

    def enter_step(self, host: Host, s: Any, row: m.Release, step: int) -> None:
        host.set_traffic(s, row, ("shadow", row.to_version, 0.0))

    def advance(self, host: Host, view: ReleaseView, now: datetime) -> Outcome:
        verdict = self.judged(host, view, view.step_started_at)
        comparison = not view.plan.get("promote", False)
        if verdict.decision == "rollback":
            # a comparison moved no traffic: finding the candidate worse is its result
            action: Action = "completed" if comparison else "rolled_back"
            return host.transition(view, action, verdict.summary, verdict)
        elapsed = (now - view.step_started_at).total_seconds()
        if elapsed < view.plan["duration"] or verdict.decision == "wait":
            return host.note(view, "wait", verdict)
        action = "completed" if comparison else "promoted"
        return host.transition(view, action, verdict.summary, verdict)

    def judged(self, host: Host, view: ReleaseView, since: datetime) -> Verdict:
        """B answered copies of A's requests; A's own answers pair with them."""
        a, b = _versions(view)
        sides = collect(
            host.store, view.model, view.environment, since, [(a, "serve"), (b, "shadow")]
        )
        return judge(sides[(a, "serve")], sides[(b, "shadow")], host.analysis_for(view))


class BlueGreen(Strategy):
    """Step 0 warms B beside A (checks run then); step 1 switches all traffic to B and keeps A
    loaded for an instant rollback until ``keep_warm`` has passed."""

    name = "blue-green"

    def enter_step(self, host: Host, s: Any, row: m.Release, step: int) -> None:
        if step == 0:  # B loaded and warmed beside A, answering no one yet
            host.set_traffic(s, row, ("warm", row.to_version, 0.0))
            return
        # all traffic to B at once; A stays loaded for an instant rollback
        host.move_alias(s, row, row.to_version)
        if row.from_version is None:  # a release from nothing is always direct (start())
            raise ReleaseError(f"Release {row.id} is blue-green with no version to keep.")
        host.set_traffic(s, row, ("warm", row.from_version, 0.0))

    def weight(self, view: ReleaseView) -> float:
        return 100.0 if view.step >= 1 else 0.0

    def advance(self, host: Host, view: ReleaseView, now: datetime) -> Outcome:
        elapsed = (now - view.step_started_at).total_seconds()
        if view.step == 0:
            result = host.run_checks(view) if needs_checks(view.plan) else None
            if result is not None:
                ok, evidence = result
                if ok is None:
                    return {"id": view.id, "action": "wait", "why": evidence["summary"]}
                if not ok:
                    return host.transition(view, "rolled_back", evidence["summary"], None, evidence)
            if elapsed < view.plan.get("duration", 0.0):
                return {"id": view.id, "action": "wait", "why": "warming before the switch"}
            return host.transition(view, "next", "switched all traffic", None)
        # after the switch: B alone serves; A is kept warm until keep_warm has passed
        analysis = host.environment(view.environment).analysis
        side = self.switched(host, view, view.step_started_at)
        if side.requests >= analysis.min_requests and side.error_rate > analysis.max_error_rate:
            why = (
                f"error rate {side.error_rate:.4f} over {analysis.max_error_rate} on "
                f"{side.requests} requests after the switch"
            )
            return host.transition(view, "rolled_back", why, None, {"candidate": side.summary()})
        if elapsed < view.plan.get("keep_warm", 600.0):
            return {"id": view.id, "action": "wait", "why": "keeping the old version warm"}
        return host.transition(
            view, "promoted", "kept warm long enough; old version unloaded", None
        )

    def switched(self, host: Host, view: ReleaseView, since: datetime) -> Side:
        """B's own answers after the switch (A serves no one then, so there is nothing to pair)."""
        return collect(
            host.store, view.model, view.environment, since, [(view.to_version, "serve")]
        )[(view.to_version, "serve")]


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Direct, Canary, Shadow, BlueGreen)
}


def strategy_for(name: str) -> Strategy:
    """The strategy a release row names.

    Raises:
        ReleaseError: no strategy has that name (a row written by a newer version).
    """
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ReleaseError(
            f"Unknown release strategy {name!r}; expected one of {', '.join(STRATEGIES)}."
        ) from None
