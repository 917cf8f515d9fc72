"""The catalogue of event kinds: every row the audit log can hold, declared in one place.

The ``events`` table is read by people (``conveyor events``), by the controller (its retraining
guardrails), by releases (a gateway's load failure, the alias history a rollback walks back) and
by alerting (the last fired/resolved event is an alert's state). A kind spelled two ways would
silently split that history, so each kind is a constant here with the entity it is written
against, when it is written and what its payload carries, and :meth:`Store.add_event` refuses a
kind that is not declared. ``docs/architecture.md`` carries :func:`markdown_table` verbatim (a
test compares them; ``python -m conveyor.store.events`` prints it).

Kept free of heavy imports: the fast path writes its events with these constants too.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.exceptions import StoreError


@dataclass(frozen=True)
class EventKind:
    """One kind of audit-log row.

    Attributes:
        kind: the ``events.kind`` value, ``family.what``.
        entity: the ``events.entity`` every event of this kind is written against; the
            ``events.entity_id`` is then a run id, a snapshot id, a model name, etc.
        when: what happened, for whoever reads the log.
        payload: the keys of the JSON payload.
    """

    kind: str
    entity: str
    when: str
    payload: tuple[str, ...]


#: Every kind the store may write, by kind.
CATALOGUE: dict[str, EventKind] = {}


def _declare(kind: str, entity: str, when: str, *payload: str) -> str:
    if kind in CATALOGUE:
        raise ValueError(f"Event kind {kind!r} is declared twice in conveyor.store.events.")
    CATALOGUE[kind] = EventKind(kind, entity, when, payload)
    return kind


# -- runs and steps (entity_id: the run id) ---------------------------------------------------

RUN_STARTED = _declare("run.started", "run", "a pipeline run begins", "steps")
RUN_SUCCEEDED = _declare("run.succeeded", "run", "every step of a run ran or was cached")
RUN_FAILED = _declare("run.failed", "run", "a run ended with a failed or blocked step", "error")
RUN_INTERRUPTED = _declare(
    "run.interrupted",
    "run",
    "a run was stopped by a signal (error), or found left running by a dead process (reason)",
    "error",
    "reason",
)
RUN_DELETED = _declare("run.deleted", "run", "`conveyor gc` pruned an old run", "reason")
STEP_STARTED = _declare("step.started", "run", "a step was handed to an executor", "step", "reason")
STEP_RAN = _declare(
    "step.ran", "run", "a step ran and its outputs were stored", "step", "cache_key"
)
STEP_CACHED = _declare(
    "step.cached", "run", "a step's outputs were taken from the cache", "step", "cache_key"
)
STEP_FAILED = _declare(
    "step.failed", "run", "a step raised or exited non-zero", "step", "cache_key", "error"
)
STEP_BLOCKED = _declare(
    "step.blocked", "run", "a step did not run because an upstream step failed", "step", "cache_key"
)

# -- data snapshots (entity_id: source:content_hash) ------------------------------------------

SNAPSHOT_CREATED = _declare(
    "snapshot.created", "snapshot", "a run read a source state not seen before", "run"
)
SNAPSHOT_PROFILED = _declare(
    "snapshot.profiled", "snapshot", "the background profiler stored a snapshot's profile", "rows"
)
SNAPSHOT_PROFILE_FAILED = _declare(
    "snapshot.profile_failed", "snapshot", "the background profiler could not profile", "error"
)

# -- models and what environments serve (entity_id: the model name) ---------------------------

MODEL_REGISTERED = _declare(
    "model.registered",
    "model",
    "a candidate passed every gate and became a new version",
    "version",
    "run_id",
    "digest",
    "metrics",
)
CANDIDATE_REJECTED = _declare(
    "candidate.rejected",
    "model",
    "`conveyor ci` refused a candidate: a blocking gate failed",
    "run_id",
    "failed",
    "gates",
)
ALIAS_MOVED = _declare(
    "alias.moved",
    "model",
    "an alias now points at another version",
    "alias",
    "from",
    "to",
    "reason",
)
ALIAS_REMOVED = _declare(
    "alias.removed",
    "model",
    "an alias was unset (a first release rolled back)",
    "alias",
    "from",
    "reason",
)
GATEWAY_LOAD_FAILED = _declare(
    "gateway.load_failed",
    "model",
    "a gateway could not load a version (entity_id MODEL:VERSION); it keeps the old one",
    "model",
    "version",
    "gateway",
    "error",
)
ENVIRONMENT_ROLLED_BACK = _declare(
    "environment.rolled_back",
    "model",
    "`conveyor rollback` outside a release moved an environment to its previous version",
    "environment",
    "from",
    "to",
    "why",
)

# -- releases (entity_id: the release id; every payload also has model and environment) -------

RELEASE_STARTED = _declare(
    "release.started",
    "release",
    "a release of a version to an environment began (note: released directly when nothing "
    "served it yet)",
    "model",
    "environment",
    "from",
    "to",
    "strategy",
    "reason",
    "note",
)
TRAFFIC_CHANGED = _declare(
    "traffic.changed",
    "release",
    "the split beside the alias changed: a canary weight, a shadow, a warm version, or none",
    "model",
    "environment",
    "mode",
    "version",
    "weight",
)
RELEASE_STEPPED = _declare(
    "release.stepped",
    "release",
    "the analysis passed a step and the release moved to the next",
    "model",
    "environment",
    "from_step",
    "why",
    "verdict",
    "evidence",
)
RELEASE_ANALYSIS = _declare(
    "release.analysis",
    "release",
    "the verdict that ended a release (promote, roll back, or a shadow's comparison)",
    "model",
    "environment",
    "why",
    "verdict",
    "evidence",
)
RELEASE_PROMOTED = _declare(
    "release.promoted",
    "release",
    "the new version serves the whole environment",
    "model",
    "environment",
    "why",
    "step",
)
RELEASE_ROLLED_BACK = _declare(
    "release.rolled_back",
    "release",
    "the environment went back to the version it served before the release",
    "model",
    "environment",
    "why",
    "step",
)
RELEASE_COMPLETED = _declare(
    "release.completed",
    "release",
    "a shadow comparison ended; nothing was promoted",
    "model",
    "environment",
    "why",
    "step",
)
RELEASE_PAUSED = _declare(
    "release.paused", "release", "a release was paused by hand", "model", "environment", "why"
)
RELEASE_RESUMED = _declare(
    "release.resumed",
    "release",
    "a paused release was resumed by hand; its step's clock restarts",
    "model",
    "environment",
    "why",
)
RELEASE_ABORTED = _declare(
    "release.aborted",
    "release",
    "a release was aborted by hand (after its release.rolled_back)",
    "model",
    "environment",
    "why",
)

# -- monitoring (entity_id: MODEL@ENVIRONMENT:RULE) -------------------------------------------

_ALERT_PAYLOAD = (
    "alert",
    "state",
    "severity",
    "model",
    "environment",
    "version",
    "value",
    "bound",
    "summary",
    "at",
    "project",
    "delivered",
    "attempts",
    "status",
    "error",
)
ALERT_FIRED = _declare(
    "alert.fired",
    "alert",
    "an alert rule started to hold (with how its webhook delivery went)",
    *_ALERT_PAYLOAD,
)
ALERT_RESOLVED = _declare(
    "alert.resolved",
    "alert",
    "a firing alert rule stopped holding (with how its webhook delivery went)",
    *_ALERT_PAYLOAD,
)
ALERT_PENDING = _declare(
    "alert.pending",
    "alert",
    "an alert rule with for/resolve_for started (holds) or stopped holding: the alert fires or "
    "resolves once that has lasted so long (state pending), unless it flips back first "
    "(state cancelled)",
    "alert",
    "state",
    "holds",
    "since",
    "value",
    "bound",
    "summary",
)

# -- the controller (entity_id: the project) --------------------------------------------------

RETRAIN_STARTED = _declare(
    "controller.retrain_started",
    "project",
    "the controller started `conveyor ci` in a child process for new data, drift, a schedule "
    "or a quality alert (one without an end was cut short: it runs again)",
    "causes",
    "sources",
    "code",
    "log",
)
RETRAIN_FINISHED = _declare(
    "controller.retrain_finished",
    "project",
    "the controller's `conveyor ci` ended, passed or not",
    "causes",
    "run_id",
    "passed",
    "version",
    "already_registered",
    "failed_gates",
)
RETRAIN_FAILED = _declare(
    "controller.retrain_failed",
    "project",
    "the controller's `conveyor ci` raised before judging a candidate, or its process died "
    "before recording an end (exit_code)",
    "causes",
    "error",
    "exit_code",
)
RETRAIN_SKIPPED = _declare(
    "controller.retrain_skipped",
    "project",
    "a cause to retrain was held back by a guardrail: nothing_new, cooldown, "
    "max_runs_per_day, min_new_rows (recorded once per reason)",
    "causes",
    "why",
    "detail",
)

#: The event a finished run writes, by the run's status.
RUN_ENDED: dict[str, str] = {
    "succeeded": RUN_SUCCEEDED,
    "failed": RUN_FAILED,
    "interrupted": RUN_INTERRUPTED,
}
#: The event a finished step writes, by the step's status.
STEP_ENDED: dict[str, str] = {
    "ran": STEP_RAN,
    "cached": STEP_CACHED,
    "failed": STEP_FAILED,
    "blocked": STEP_BLOCKED,
}


def run_ended(status: str) -> str:
    """The event of a run that ended with ``status``.

    Raises:
        StoreError: no run ends with that status.
    """
    return _ended(RUN_ENDED, "A run", status)


def step_ended(status: str) -> str:
    """The event of a step that ended with ``status``.

    Raises:
        StoreError: no step ends with that status.
    """
    return _ended(STEP_ENDED, "A step", status)


def _ended(kinds: dict[str, str], what: str, status: str) -> str:
    kind = kinds.get(status)
    if kind is None:
        raise StoreError(
            f"{what} ends as {' or '.join(map(repr, kinds))}, not {status!r}; no event of the "
            "catalogue (conveyor/store/events.py) records that."
        )
    return kind


def check(kind: str, entity: str) -> None:
    """Refuse an event the catalogue does not declare, or one against the wrong entity.

    Raises:
        StoreError: ``kind`` is not in :data:`CATALOGUE`, or is declared for another entity.
    """
    spec = CATALOGUE.get(kind)
    if spec is None:
        raise StoreError(
            f"Unknown event kind {kind!r}: every kind the audit log holds is declared in the "
            "catalogue conveyor/store/events.py (CATALOGUE); add it there with when it is "
            "written and its payload, or use one of its constants."
        )
    if spec.entity != entity:
        raise StoreError(
            f"Event kind {kind!r} is written against entity {spec.entity!r} (see "
            f"conveyor/store/events.py), not {entity!r}."
        )


def markdown_table() -> str:
    """The catalogue as the Markdown table that docs/architecture.md carries."""
    lines = ["| kind | entity | when | payload |", "| --- | --- | --- | --- |"]
    for spec in CATALOGUE.values():
        payload = ", ".join(f"`{key}`" for key in spec.payload) or "(none)"
        when = spec.when.replace("|", "\\|")
        lines.append(f"| `{spec.kind}` | {spec.entity} | {when} | {payload} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
