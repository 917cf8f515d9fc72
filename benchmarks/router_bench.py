"""The gateway's dispatch cost per route kind, in-process: no sockets, no uvicorn, one core.

    .venv/bin/python benchmarks/router_bench.py                 # ~1 minute
    .venv/bin/python benchmarks/router_bench.py --app /tmp/old_app.py   # before and after

Calls the ASGI app directly with a minimal scope, ``receive`` and ``send`` for each kind of
route (a fixed path, a model's predict path with a tiny model, a pattern path, a v2 path, a
404) and prints the median nanoseconds per dispatch over many batches. ``--app`` also loads
the ``Gateway`` class of another ``app.py`` (e.g. ``git show REV:src/conveyor/gateway/app.py >
/tmp/old_app.py``) and alternates the two apps' batches, so the router before and after a
change is compared at the same moments of a shared machine; that file still imports the rest
of ``conveyor.gateway`` from this working tree. The request
log is off (``sample: 0``) so its writer thread does not share the core with the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from suite.machine import commit, describe_machine, load_average, quiet_feature_names

TOKEN = "router-bench-token-0123456789"
FIELDS = ["a", "b", "c", "d"]
ROW = b'{"instances": [[0.1, -0.2, 0.3, 1.5]]}'


def gateway_class(app_file: Path | None) -> Any:
    """``Gateway`` from this tree, or from another ``app.py`` loaded as its own module."""
    if app_file is None:
        from conveyor.gateway.app import Gateway

        return Gateway
    spec = importlib.util.spec_from_file_location("router_bench_app", app_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"Cannot load {app_file} as a module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules["router_bench_app"] = module
    spec.loader.exec_module(module)
    return module.Gateway


def project(root: Path) -> Any:
    """A project with one tiny classifier (4 numbers, logistic regression) in production."""
    from sklearn.linear_model import LogisticRegression

    from conveyor.actions.models import register_fitted
    from conveyor.config import load_config

    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(
        "project: bench\n"
        f"store:\n  url: sqlite:///{root / 'conveyor.db'}\n  artifacts: {root / 'artifacts'}\n"
        "serve:\n  poll_seconds: 5\n  log: {sample: 0.0}\n"
    )
    config = load_config(root / "conveyor.yaml")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, len(FIELDS))), columns=FIELDS)
    y = (X["a"] + X["b"] > 0).astype(int)
    model = LogisticRegression().fit(X[:300], y[:300])
    register_fitted(
        config, model, X[300:], name="tiny", task="classification", aliases=("production",)
    )
    return config


def scope(method: str, path: str, body: bytes = b"", query: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {TOKEN}".encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers,
    }


CASES: list[tuple[str, str, str, bytes, int]] = [
    # (label, method, path, body, expected status)
    ("GET /healthz", "GET", "/healthz", b"", 200),
    ("GET /readyz", "GET", "/readyz", b"", 200),
    ("POST /v1/models/tiny/predict", "POST", "/v1/models/tiny/predict", ROW, 200),
    ("GET /v1/models/tiny/versions", "GET", "/v1/models/tiny/versions", b"", 200),
    ("GET /v1/models/tiny", "GET", "/v1/models/tiny", b"", 200),
    ("GET /v2/health/live", "GET", "/v2/health/live", b"", 200),
    ("GET /v2/models/tiny/ready", "GET", "/v2/models/tiny/ready", b"", 200),
    ("GET /no/such/path (404)", "GET", "/no/such/path", b"", 404),
    ("DELETE /healthz (405)", "DELETE", "/healthz", b"", 405),
]


async def measure(apps: dict[str, Any], batches: int, per_batch: int) -> dict[str, dict]:
    """Median ns per dispatch, per route and app; the apps' batches alternate, so a busy
    moment of the machine costs both the same."""
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    results: dict[str, dict[str, float]] = {}
    for label, method, path, body, want in CASES:
        request = {"type": "http.request", "body": body, "more_body": False}

        async def receive(request: dict[str, Any] = request) -> dict[str, Any]:
            return request

        s = scope(method, path, body)
        n = per_batch // 10 if body else per_batch  # predict runs the model: fewer per batch
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for name, app in apps.items():
            statuses.clear()
            await app(s, receive, send)
            if statuses != [want]:
                raise SystemExit(f"{name}: {label} answered {statuses}, expected {want}")
        for _ in range(batches):
            for name, app in apps.items():
                started = time.perf_counter_ns()
                for _ in range(n):
                    await app(s, receive, send)
                samples[name].append((time.perf_counter_ns() - started) / n)
        results[label] = {name: statistics.median(values) for name, values in samples.items()}
    return results


async def run(
    app_files: dict[str, Path | None], batches: int, per_batch: int
) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        config = project(Path(tmp) / "p")
        apps = {name: gateway_class(f)(config, token=TOKEN) for name, f in app_files.items()}
        for app in apps.values():
            await app.startup()
        try:
            for name, app in apps.items():
                if not await app.wait_ready(60):
                    raise SystemExit(f"{name}: the tiny model did not load within 60 s")
            with quiet_feature_names():
                return await measure(apps, batches, per_batch)
        finally:
            for app in apps.values():
                await app.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--app", type=Path, help="another app.py to measure beside this tree's (the old code)"
    )
    parser.add_argument("--batches", type=int, default=31, help="timed batches per route (31)")
    parser.add_argument("--per-batch", type=int, default=2000, help="dispatches per batch (2000)")
    args = parser.parse_args(argv)
    files: dict[str, Path | None] = {"this tree": None}
    if args.app is not None:
        files = {"--app": args.app, "this tree": None}
    results = asyncio.run(run(files, args.batches, args.per_batch))
    named = ", ".join(f"{k} = {v or 'conveyor.gateway.app'}" for k, v in files.items())
    print(f"# router_bench: {named}")
    print(f"# {describe_machine()}; load {load_average()}; commit {commit()}")
    print(f"# median µs per dispatch over {args.batches} alternating batches; predict batches 1/10")
    width = max(map(len, results))
    print(f"{'route':<{width}}  " + "  ".join(f"{name:>10}" for name in files))
    for label, by_app in results.items():
        print(f"{label:<{width}}  " + "  ".join(f"{by_app[name] / 1000:10.2f}" for name in files))


if __name__ == "__main__":
    main()
