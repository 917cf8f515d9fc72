"""What each environment serves, followed from the store without dropping a request.

The store is the truth: an alias (``production`` → version 3) says what an environment should
serve. A ``Watcher`` thread polls it every ``poll_seconds``; a version not yet loaded is loaded,
its hash verified and warmed off the event loop, and only then does ``Router.apply`` switch the
routes, in one assignment on the loop's thread. A request that already holds the old route
finishes on it. A version that fails to load is reported once (event and metric) and never
receives traffic; the environment keeps its previous version.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from conveyor.gateway.batching import Batcher
from conveyor.gateway.runtime import Served
from conveyor.store import models as m

__all__ = ["Route", "Router", "Watcher", "read_desired"]

log = logging.getLogger("conveyor.gateway")

RETRY_FAILED_SECONDS = 60.0


@dataclass(frozen=True)
class Route:
    """An environment's traffic for one model: the version that answers it."""

    model: str
    environment: str
    batcher: Batcher

    @property
    def served(self) -> Served:
        return self.batcher.served


@dataclass
class Router:
    """The routing table, read by requests and replaced whole by ``apply`` (loop thread only)."""

    make_batcher: Callable[[Served], Batcher]
    on_switch: Callable[[str, str, int, int | None], None] | None = None
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    batchers: dict[tuple[str, int], Batcher] = field(default_factory=dict)
    desired: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    synced: bool = False
    loaded_keys: frozenset[tuple[str, int]] = frozenset()

    def route(self, model: str, environment: str) -> Route | None:
        return self.routes.get((model, environment))

    def models(self) -> list[str]:
        return sorted({model for model, _env in self.desired} | {m for m, _ in self.routes})

    def apply(
        self,
        desired: dict[tuple[str, str], int],
        loaded: dict[tuple[str, int], Served],
        failed: dict[tuple[str, int], str],
    ) -> None:
        """Switch to ``desired`` where its versions are loaded; keep old routes elsewhere."""
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
            if old is not None and old.batcher is batcher:
                routes[(model, env)] = old
                continue
            routes[(model, env)] = Route(model, env, batcher)
            if self.on_switch is not None:
                self.on_switch(model, env, version, old.served.version if old else None)
        self.routes = routes
        self.desired = dict(desired)
        self.failed = dict(failed)
        keep = {(r.model, r.served.version) for r in routes.values()}
        for key in [k for k in self.batchers if k not in keep]:
            del self.batchers[key]  # queued requests still hold it and finish on it
        self.loaded_keys = frozenset(self.batchers)
        self.synced = True

    def ready(self) -> tuple[bool, list[str]]:
        """Ready when every environment the store names has a loaded version to answer it."""
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
        return not missing, missing


def read_desired(store: Any, project: str) -> dict[tuple[str, str], int]:
    """(model, environment) → version, from the aliases of this project's models."""
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
    return {(model, alias): int(version) for model, alias, version in rows}


class Watcher:
    """The thread that keeps a ``Router`` in step with the store."""

    def __init__(
        self,
        *,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        read: Callable[[], dict[tuple[str, str], int]],
        load: Callable[[str, int], Served],
        report_failure: Callable[[str, int, str], None],
        poll_seconds: float,
    ) -> None:
        self.router = router
        self.loop = loop
        self._read = read
        self._load = load
        self._report = report_failure
        self.poll_seconds = poll_seconds
        self._failed: dict[tuple[str, int], tuple[str, float]] = {}
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
        desired = self._read()
        self.polls += 1
        have = self.router.loaded_keys
        loaded: dict[tuple[str, int], Served] = {}
        now = time.monotonic()
        for model, version in sorted({(model, v) for (model, _env), v in desired.items()}):
            key = (model, version)
            if key in have:
                continue
            if key in self._failed and now - self._failed[key][1] < RETRY_FAILED_SECONDS:
                continue
            try:
                loaded[key] = self._load(model, version)
                self._failed.pop(key, None)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                first = key not in self._failed
                self._failed[key] = (reason, now)
                if first:
                    log.error("model %r version %d cannot be served: %s", model, version, reason)
                    self._report(model, version, reason)
        failed = {k: v[0] for k, v in self._failed.items()}
        if (
            desired != self.router.desired
            or loaded
            or failed != self.router.failed
            or not (self.router.synced)
        ):
            done = threading.Event()

            def apply() -> None:
                try:
                    self.router.apply(desired, loaded, failed)
                finally:
                    done.set()

            self.loop.call_soon_threadsafe(apply)
            done.wait(10)  # the next poll must see what this one loaded
