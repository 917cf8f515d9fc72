"""Prometheus metrics of the gateway: requests, errors and latency per model, version and
environment; batch sizes and queue time per version; what is loaded and what failed to load.

Each gateway owns a registry (not the process-global one), so tests can run several in one
process. With several workers, ``conveyor serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` aggregates every worker's files.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_QUEUE = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
disable_created_metrics()  # the *_created series double the scrape for nothing a chart uses

_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class GatewayMetrics:
    """The metric families, with label children cached: a request costs a dict lookup each."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = None if self._multiproc else self.registry
        labels = ("model", "version", "environment")
        self.requests = Counter(
            "conveyor_requests",
            "Prediction requests answered, by HTTP status.",
            (*labels, "status"),
            registry=reg,
        )
        self.latency = Histogram(
            "conveyor_request_duration_seconds",
            "Time from the request's arrival to its answer.",
            labels,
            buckets=_LATENCY,
            registry=reg,
        )
        self.rows = Counter("conveyor_rows", "Rows predicted.", labels, registry=reg)
        self.batch = Histogram(
            "conveyor_batch_rows",
            "Rows per predict call (micro-batches).",
            ("model", "version"),
            buckets=_BATCH,
            registry=reg,
        )
        self.queue = Histogram(
            "conveyor_queue_seconds",
            "Time the oldest request of a batch waited before its predict call.",
            ("model", "version"),
            buckets=_QUEUE,
            registry=reg,
        )
        self.shed = Counter(
            "conveyor_shed_requests",
            "Requests refused with 503: the queue was full.",
            registry=reg,
        )
        self.loaded = Gauge(
            "conveyor_model_loaded",
            "1 for each version this gateway holds loaded.",
            ("model", "version", "runtime"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.routed = Gauge(
            "conveyor_route_version",
            "The version each environment's traffic goes to.",
            ("model", "environment"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.load_failures = Counter(
            "conveyor_model_load_failures",
            "Versions that failed to load (they never receive traffic).",
            ("model", "version"),
            registry=reg,
        )
        self.shadow = Counter(
            "conveyor_shadow_requests",
            "Requests mirrored to a shadow version, by its HTTP status (answered no one).",
            (*labels, "status"),
            registry=reg,
        )
        self.shadow_dropped = Counter(
            "conveyor_shadow_dropped",
            "Mirrored requests skipped because the shadow's queue was full.",
            registry=reg,
        )
        self.log_dropped = Counter(
            "conveyor_request_log_dropped",
            "Request-log rows dropped because the buffer was full.",
            registry=reg,
        )
        self._children: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self._batch_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_request(
        self,
        model: str,
        version: int,
        env: str,
        status: int,
        seconds: float,
        rows: int,
        role: str = "serve",
    ) -> None:
        """One answered request (any status); a shadow's copy is counted apart."""
        if role == "shadow":
            self.shadow.labels(model, str(version), env, str(status)).inc()
            return
        key = (model, version, env, status)
        child = self._children.get(key)
        if child is None:
            v = str(version)
            child = (
                self.requests.labels(model, v, env, str(status)),
                self.latency.labels(model, v, env),
                self.rows.labels(model, v, env),
            )
            self._children[key] = child
        child[0].inc()
        child[1].observe(seconds)
        if rows:
            child[2].inc(rows)

    def batch_observer(self, model: str, version: int) -> Any:
        """A callback for a ``Batcher``: (rows in the batch, seconds queued)."""
        v = str(version)
        batch = self.batch.labels(model, v)
        queue = self.queue.labels(model, v)

        def observe(rows: int, waited: float) -> None:
            batch.observe(rows)
            queue.observe(waited)

        return observe

    def exposition(self) -> bytes:
        """The text format, every worker's figures when several share the multiprocess dir."""
        if self._multiproc:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
