"""What each environment serves, followed from the store without dropping a request.

The store is the truth: an alias (``production`` → version 3) says what an environment should
serve. A ``Watcher`` thread polls it every ``poll_seconds``; a version not yet loaded is loaded,
its hash verified and warmed off the event loop, and only then does ``Router.apply`` switch the
routes, in one assignment on the loop's thread. A request that already holds the old route
finishes on it. A version that fails to load is reported once (event and metric) and never
receives traffic; the environment keeps its previous version. A load whose file read timed
out (a FIFO in place of the file, a hung mount) is such a failure too, but it also makes the
gateway not ready: the store it follows is not answering, even if an old version still serves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from conveyor.exceptions import ArtifactTimeout
from conveyor.gateway.batching import Batcher
from conveyor.gateway.runtime import Served
from conveyor.store import models as m

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = [
    "Route",
    "Router",
    "Split",
    "Watcher",
    "read_desired",
    "sticky_bucket",
    "sticky_shortfall",
]

log = logging.getLogger("conveyor.gateway")

RETRY_FAILED_SECONDS = 60.0


@dataclass(frozen=True)
class Split:
    """What a ``traffic`` row asks beside the alias: a canary share, a shadow, a warm version."""

    mode: str  # canary | shadow | warm
    version: int
    weight: float = 0.0  # percent of requests (canary)
    sticky: str | None = None


@dataclass(frozen=True)
class Route:
    """An environment's traffic for one model: the stable version, and a canary or a shadow."""

    model: str
    environment: str
    batcher: Batcher
    candidate: Batcher | None = None
    weight: float = 0.0
    shadow: Batcher | None = None
    sticky: str | None = None

    @property
    def served(self) -> Served:
        return self.batcher.served

    def pick(self, key: str | None) -> Batcher:
        """The batcher for one request: the canary for ``weight`` percent of requests (the same
        ones for the same ``key``), the stable version otherwise."""
        if self.candidate is None:
            return self.batcher
        if key is not None:
            bucket = sticky_bucket(key, self.model, self.candidate.served.version)
        else:
            bucket = random.random() * 100.0
        return self.candidate if bucket < self.weight else self.batcher


def sticky_bucket(key: str, model: str, version: int) -> float:
    """Where a sticky key falls in [0, 100): the canary takes the keys below its weight.

    The hash is salted with the candidate (``<model>@<version>``), so each release splits the
    callers afresh: the same few keys are not the guinea pigs of every canary, and a field whose
    few values all miss one canary's share need not miss the next.
    """
    salt = zlib.crc32(f"{model}@{version}".encode())
    return (zlib.crc32(key.encode(), salt) % 10_000) / 100.0


def sticky_shortfall(
    field: str, values: list[str], weight: float, model: str, version: int
) -> str | None:
    """Why a sticky canary over a field with these known values routes no caller to the
    candidate, or None when at least one value reaches it (or the values are not known).

    Each value goes wholly to one version, so with k values the candidate's share is 0 or at
    least 1/k of the callers, whatever the weight; with few values and a small weight all of
    them can fall on the stable side, and the canary is judged on no traffic at all.
    """
    if not values or weight <= 0:
        return None
    hits = [v for v in values if sticky_bucket(v, model, version) < weight]
    if hits:
        return None
    return (
        f"The sticky canary of {model} v{version} at {weight:g}% sends no caller to the "
        f"candidate: its sticky field {field!r} has {len(values)} known values "
        f"({', '.join(map(repr, values[:5]))}{', ...' if len(values) > 5 else ''}) and none "
        "falls in the canary's share. Choose a sticky field with many values (a customer id), "
        f"or a weight of at least {100 / len(values):.0f}%, or no sticky field."
    )


@dataclass
class Router:
    """The routing table, read by requests and replaced whole by ``apply`` (loop thread only)."""

    make_batcher: Callable[[Served], Batcher]
    on_switch: Callable[[str, str, int, int | None], None] | None = None
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    batchers: dict[tuple[str, int], Batcher] = field(default_factory=dict)
    desired: dict[tuple[str, str], int] = field(default_factory=dict)
    splits: dict[tuple[str, str], Split] = field(default_factory=dict)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    timed_out: frozenset[tuple[str, int]] = frozenset()
    synced: bool = False
    loaded_keys: frozenset[tuple[str, int]] = frozenset()

    def route(self, model: str, environment: str) -> Route | None:
        return self.routes.get((model, environment))

    def _check_sticky(self, route: Route) -> None:
        """Warn when the candidate's signature lists the sticky field's values and none of them
        reaches the candidate (a new route is checked once, when it is applied)."""
        served = route.candidate.served if route.candidate is not None else None
        if served is None or route.sticky is None:
            return
        fields = {f.get("name"): f for f in served.signature.get("inputs", [])}
        values = [str(v) for v in (fields.get(route.sticky) or {}).get("categories") or []]
        why = sticky_shortfall(route.sticky, values, route.weight, route.model, served.version)
        if why is not None:
            log.warning("%s (environment %s)", why, route.environment)

    def models(self) -> list[str]:
        return sorted({model for model, _env in self.desired} | {m for m, _ in self.routes})

    def apply(
        self,
        desired: dict[tuple[str, str], int],
        loaded: dict[tuple[str, int], Served],
        failed: dict[tuple[str, int], str],
        splits: dict[tuple[str, str], Split] | None = None,
        timed_out: frozenset[tuple[str, int]] = frozenset(),
    ) -> None:
        """Switch to ``desired`` where its versions are loaded; keep old routes elsewhere.

        ``timed_out`` names the failed versions whose file read did not finish in time.

        A split whose version is not loaded is left out: its traffic stays on the stable
        version until the candidate is ready, never on a version that cannot answer.
        """
        splits = splits or {}
        for key, served in loaded.items():
            if key not in self.batchers:
                self.batchers[key] = self.make_batcher(served)
        routes: dict[tuple[str, str], Route] = {}
        for (model, env), version in desired.items():
            batcher = self.batchers.get((model, version))
            old = self.routes.get((model, env))
            if batcher is None:
                if old is not None:
                    routes[(model, env)] = old
                continue
            split = splits.get((model, env))
            extra = self.batchers.get((model, split.version)) if split else None
            route = Route(
                model,
                env,
                batcher,
                candidate=extra if split and split.mode == "canary" else None,
                weight=split.weight if split and split.mode == "canary" else 0.0,
                shadow=extra if split and split.mode == "shadow" else None,
                sticky=split.sticky if split else None,
            )
            if old is not None and old == route:
                routes[(model, env)] = old
                continue
            routes[(model, env)] = route
            if route.candidate is not None and route.sticky is not None:
                self._check_sticky(route)
            if self.on_switch is not None and (old is None or old.batcher is not batcher):
                self.on_switch(model, env, version, old.served.version if old else None)
        self.routes = routes
        self.desired = dict(desired)
        self.splits = dict(splits)
        self.failed = dict(failed)
        self.timed_out = frozenset(k for k in timed_out if k in failed)
        keep = {(r.model, r.served.version) for r in routes.values()}
        keep |= {(model, s.version) for (model, _env), s in splits.items()}
        for key in [k for k in self.batchers if k not in keep]:
            del self.batchers[key]  # queued requests still hold it and finish on it
        self.loaded_keys = frozenset(self.batchers)
        self.synced = True

    def ready(self) -> tuple[bool, list[str]]:
        """Ready when every environment the store names has a loaded version to answer it,
        and no version it asks for (alias or split) failed because its read timed out."""
        if not self.synced:
            return False, ["the gateway has not read the store yet"]
        if not self.desired:
            return False, [
                "no model is routed: point an environment at a version first "
                "(conveyor models alias VERSION production)"
            ]
        missing = [
            f"{model}@{env} (version {version}"
            + (
                f" failed to load: {self.failed[(model, version)]})"
                if (model, version) in self.failed
                else " is loading)"
            )
            for (model, env), version in sorted(self.desired.items())
            if (model, env) not in self.routes
        ]
        asked = {(model, env, "", v) for (model, env), v in self.desired.items()}
        asked |= {(model, env, f"{s.mode} ", s.version) for (model, env), s in self.splits.items()}
        missing += [
            f"{model}@{env} ({what}version {version} could not be loaded, its read timed out: "
            f"{self.failed[(model, version)]})"
            for model, env, what, version in sorted(asked)
            if (model, version) in self.timed_out and (model, env) in self.routes
        ]
        return not missing, missing


def read_desired(
    store: Store, project: str
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], Split]]:
    """(model, environment) → the alias's version, and the traffic rows beside the aliases."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(m.Alias.model, m.Alias.alias, m.Alias.version)
            .join(
                m.ModelVersion,
                (m.ModelVersion.model == m.Alias.model)
                & (m.ModelVersion.version == m.Alias.version),
            )
            .where(m.ModelVersion.project == project)
        ).all()
        desired = {(model, alias): int(version) for model, alias, version in rows}
        splits = {
            (t.model, t.environment): Split(t.mode, int(t.version), float(t.weight), t.sticky)
            for t in conn.execute(select(m.Traffic)).all()
            if (t.model, t.environment) in desired
        }
    return desired, splits


class Watcher:
    """The thread that keeps a ``Router`` in step with the store."""

    def __init__(
        self,
        *,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        read: Callable[[], tuple[dict[tuple[str, str], int], dict[tuple[str, str], Split]]],
        load: Callable[[str, int], Served],
        report_failure: Callable[[str, int, str], None],
        poll_seconds: float,
        stuck_after: float | None = None,
    ) -> None:
        """``stuck_after``: seconds after which a load still running is reported by ``stuck``."""
        self.router = router
        self.loop = loop
        self._read = read
        self._load = load
        self._report = report_failure
        self.poll_seconds = poll_seconds
        self.stuck_after = stuck_after
        self._failed: dict[tuple[str, int], tuple[str, float]] = {}
        self._timed_out: set[tuple[str, int]] = set()
        self._loading: tuple[str, int, float] | None = None  # set by the thread, read by others
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.polls = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def stuck(self) -> list[str]:
        """The load under way, if it has run longer than ``stuck_after`` (it holds the watcher:
        nothing else is followed until it returns)."""
        loading = self._loading  # one read: the watcher thread replaces it whole
        if loading is None or self.stuck_after is None:
            return []
        model, version, started = loading
        took = time.monotonic() - started
        if took <= self.stuck_after:
            return []
        return [
            f"the load of {model} version {version} is stuck: running for {took:.0f} s, past "
            f"the load timeout of {self.stuck_after:g} s (serve.load_timeout_s); no alias move "
            "is followed until it returns"
        ]

    def wake(self) -> None:
        """Poll now (an admin asked for a reload)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
                self.last_error = None
            except Exception as exc:  # the store is unreachable: keep serving what we have
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("cannot read the store; serving the last known routes: %s", exc)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def sync_once(self) -> None:
        """Read the store, load what is new, and hand the result to the event loop."""
        desired, splits = self._read()
        self.polls += 1
        have = self.router.loaded_keys
        loaded: dict[tuple[str, int], Served] = {}
        now = time.monotonic()
        wanted = {(model, v) for (model, _env), v in desired.items()}
        wanted |= {(model, s.version) for (model, _env), s in splits.items()}
        for model, version in sorted(wanted):
            key = (model, version)
            if key in have:
                continue
            if key in self._failed and now - self._failed[key][1] < RETRY_FAILED_SECONDS:
                continue
            self._loading = (model, version, time.monotonic())
            try:
                loaded[key] = self._load(model, version)
                self._failed.pop(key, None)
                self._timed_out.discard(key)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                first = key not in self._failed
                self._failed[key] = (reason, now)
                if _timed_out(exc):
                    self._timed_out.add(key)
                else:
                    self._timed_out.discard(key)
                if first:
                    log.error("model %r version %d cannot be served: %s", model, version, reason)
                    self._report(model, version, reason)
            finally:
                self._loading = None
        for key in [k for k in self._failed if k not in wanted]:
            del self._failed[key]  # no longer asked for: no longer a failure to report
        self._timed_out &= set(self._failed)
        failed = {k: v[0] for k, v in self._failed.items()}
        timed_out = frozenset(self._timed_out)
        if (
            desired != self.router.desired
            or splits != self.router.splits
            or loaded
            or failed != self.router.failed
            or timed_out != self.router.timed_out
            or not (self.router.synced)
        ):
            done = threading.Event()

            def apply() -> None:
                try:
                    self.router.apply(desired, loaded, failed, splits, timed_out)
                finally:
                    done.set()

            self.loop.call_soon_threadsafe(apply)
            done.wait(10)  # the next poll must see what this one loaded


def _timed_out(exc: BaseException) -> bool:
    """Whether a read timeout caused the failure (the registry wraps it in its own error)."""
    seen: BaseException | None = exc
    for _ in range(10):  # a cause chain is short; a cycle must not loop
        if seen is None:
            return False
        if isinstance(seen, ArtifactTimeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
