"""The prediction log's figures: bytes per request, write rate, a monitoring report and a canary
step's analysis over a million logged requests, and DuckDB against PyArrow on the same window.

Run with ``.venv/bin/python benchmarks/prediction_log_bench.py [--quick] [--json] [--results
benchmarks/results]``; ``--quick`` uses 200,000 rows instead of 1,000,000 (about two minutes),
``--json`` prints one JSON object, ``--results`` also writes prediction_log.json and .md there.
``run(quick)`` returns the same object (``log_bytes_per_request``, ``rows_per_second_write``,
``monitor_seconds_1m``, ``monitor_peak_rss_mb``, ``analysis_seconds_1m``).
``benchmarks/scale_bench.py`` calls the functions below (``log_bytes_per_request``,
``rows_per_second_write``, ``monitor_seconds_1m``, ``analysis_seconds_1m``,
``engine_comparison``); each returns plain numbers, and the heavy ones run in a child process so
that their peak RSS is their own.

- ``log_bytes_per_request``: the gateway benchmark's model (``HistGradientBoostingClassifier`` on
  ``make_classification(n_features=20)``, benchmarks/suite/serving.py) answering one-row
  requests; the request log's real writer (``RequestLog.record`` then ``flush``) writes the
  files; bytes on disk / requests. Two traffics: the gateway benchmark's (wrk cycling through
  512 bodies, so values repeat) and every row distinct (held-out rows, no repeats: the worst
  case for compression).
- ``rows_per_second_write``: requests per second through ``flush()`` (JSON parse, signature
  check, Parquet encode, write), the writer thread's sustained rate on this machine.
- ``monitor_seconds_1m``: ``observe()`` (window read, drift of 25 features, prediction drift,
  live quality, errors and p99) over 1,000,000 logged requests of a 25-feature model; time, CPU
  time (all threads) and the child's peak RSS.
- ``analysis_seconds_1m``: ``collect()`` + ``judge()`` of a canary step (the last 2 minutes,
  ~2,000 requests per side) with 1,000,000 rows in the day's log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOALS = {
    "log_bytes_per_request": 150,
    "rows_per_second_write": 20_000,
    "monitor_seconds_1m": 2.0,
    "monitor_peak_rss_mb": 1024,
    "analysis_seconds_1m": 0.1,
}


# -- bytes and write rate ----------------------------------------------------------------------


def _gateway_model() -> tuple[Any, Any]:
    from benchmarks.suite import serving

    data = serving.make_dataset()
    return serving.fit_model(data), data


def _signature(columns: list[str]) -> dict[str, Any]:
    return {
        "inputs": [{"name": c, "type": "number", "nullable": False} for c in columns],
        "output": {"task": "classification", "classes": [0, 1], "returns": "probability"},
    }


def _record_traffic(
    root: str, rows: Any, model: Any, requests: int, cycle: int | None, columns: list[str]
) -> tuple[int, float, float, int]:
    """Log ``requests`` one-row requests through RequestLog; returns (bytes, flush seconds,
    flush CPU seconds, files)."""
    import orjson

    from conveyor.gateway.requestlog import RequestLog

    n = len(rows) if cycle is None else min(cycle, len(rows))
    labels = model.predict(rows[:n]).tolist()
    probs = model.predict_proba(rows[:n]).tolist()
    bodies = [orjson.dumps([rows[i].tolist()]).decode() for i in range(n)]
    answers = [
        orjson.dumps({"predictions": [labels[i]], "probabilities": [probs[i]]}).decode()
        for i in range(n)
    ]
    sig = _signature(columns)
    log = RequestLog(
        object(), gateway="bench", flush_rows=100_000, max_buffer=requests + 1, log_url=root
    )
    log.max_buffer_bytes = 1 << 40
    log._signatures[("bench", 1)] = sig
    seconds = 0.0
    cpu = 0.0
    done = 0
    while done < requests:
        batch = min(100_000, requests - done)
        for k in range(done, done + batch):
            i = k % n
            log.record(
                f"{k:032x}", "bench", 1, "production", "serve", 200, 1.0 + (k % 7) * 0.1,
                1, bodies[i], answers[i],
            )  # fmt: skip
        started, cpu_started = time.perf_counter(), time.process_time()
        log.flush()
        seconds += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        done += batch
    size = sum(p.stat().st_size for p in Path(root).rglob("*.parquet"))
    files = len(list(Path(root).rglob("*.parquet")))
    return size, seconds, cpu, files


def log_bytes_per_request(requests: int = 200_000) -> dict[str, Any]:
    """Bytes on disk per logged one-row request of the gateway benchmark's 20-feature model,
    with the benchmark's traffic (512 bodies cycled) and with every row distinct; and the
    writer's rate."""
    model, data = _gateway_model()
    columns = data.columns
    out: dict[str, Any] = {"requests": requests}
    for label, cycle in (("gateway_bench_traffic", 512), ("distinct_rows", None)):
        root = tempfile.mkdtemp(prefix="plog-bytes-")
        try:
            rows = data.x_test if cycle else _distinct(data, requests)
            size, seconds, cpu, files = _record_traffic(root, rows, model, requests, cycle, columns)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        out[label] = {
            "bytes_per_request": round(size / requests, 1),
            "rows_per_second_write": round(requests / seconds),
            "rows_per_cpu_second_write": round(requests / cpu),
            "files": files,
        }
    out["log_bytes_per_request"] = out["gateway_bench_traffic"]["bytes_per_request"]
    out["rows_per_second_write"] = min(
        out["gateway_bench_traffic"]["rows_per_second_write"],
        out["distinct_rows"]["rows_per_second_write"],
    )
    return out


def _distinct(data: Any, n: int) -> Any:
    import numpy as np

    rows = np.concatenate([data.x_test, data.x_train])
    if len(rows) >= n:
        return rows[:n]
    rng = np.random.default_rng(0)  # more distinct rows like the data: resampled with noise
    extra = rows[rng.integers(0, len(rows), n - len(rows))]
    return np.concatenate([rows, extra + rng.normal(0, 0.01, extra.shape)])


def rows_per_second_write(requests: int = 200_000) -> float:
    return float(log_bytes_per_request(requests)["rows_per_second_write"])


# -- a million-row log of a 25-feature model -----------------------------------------------------


def build_project(work: Path, rows: int) -> dict[str, Any]:
    """A project with a 25-feature classifier in production and ``rows`` one-row requests of
    it logged over the hour before now (the last 2 minutes also answered by a canary, v2)."""
    import numpy as np
    import orjson
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from conveyor.actions.models import open_registry, register_fitted
    from conveyor.config import load_config
    from conveyor.gateway.logtables import write_requests
    from conveyor.store.predictionlog.query import log_of

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "conveyor.yaml").write_text("project: bench\n")
    config = load_config(work / "conveyor.yaml")
    x, y = make_classification(n_samples=20_000, n_features=25, random_state=0)
    columns = [f"f{i}" for i in range(25)]
    frame = pd.DataFrame(x, columns=columns)
    model = LogisticRegression(max_iter=200).fit(frame[:10_000], y[:10_000])
    for version in (1, 2):
        register_fitted(
            config, model, frame[10_000:], name="bench", task="classification",
            aliases=("production",) if version == 1 else (), onnx=False,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    now = time.time()
    started = time.perf_counter()
    with open_registry(config) as registry:
        files = log_of(registry.store)
        sig = registry.version("bench", 1).signature
        chunk = 100_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            block = x[rng.integers(0, len(x), n)] + rng.normal(0, 0.05, (n, 25))
            block[:, 0] += 0.3  # some drift to find
            preds = (block[:, 0] > 0).astype(int).tolist()
            at = now - 3600 + (np.arange(start, start + n) + 0.5) * (3600 / rows)
            entries = []
            for i in range(n):
                late = at[i] > now - 120
                version = 2 if late and i % 2 else 1
                entries.append(
                    (
                        f"r{start + i:012d}", float(at[i]), "bench", version, "production",
                        "serve", 500 if i % 1000 == 0 else 200, 2.0 + (i % 13) * 0.1, 1,
                        orjson.dumps([block[i].tolist()]).decode(),
                        orjson.dumps({"predictions": [preds[i]]}).decode(),
                    )
                )  # fmt: skip
            by_version: dict[int, list[Any]] = {}
            for e in entries:
                by_version.setdefault(e[3], []).append(e)
            for group in by_version.values():
                write_requests(files, group, lambda m, v: sig, "bench")
    return {
        "project": str(work),
        "rows": rows,
        "build_seconds": round(time.perf_counter() - started, 1),
        "log_mb": round(
            sum(p.stat().st_size for p in (work / ".conveyor").rglob("*.parquet")) / 1e6, 1
        ),
    }


def _child(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


_PEAK = """
def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
def _peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_MONITOR = (
    _PEAK
    + """
import json, os, sys, time
from datetime import datetime
sys.path.insert(0, {repo!r})
from conveyor.actions.models import open_registry
from conveyor.config import load_config
from conveyor.monitor.report import observe
config = load_config({project!r} + "/conveyor.yaml")
now = datetime.fromisoformat({now!r})
with open_registry(config) as registry:
    # the modules the report imports, outside its time (a `conveyor monitor` pays them once);
    # nothing else: scikit-learn and skops are not the report's (skops.io alone imports torch
    # through scikit-learn's array-API shims: 229 MB of the 497 MB this child used to hold)
    import pandas, pyarrow, pyarrow.compute, duckdb, scipy.stats
    from conveyor.config.monitor import WindowConfig
    loaded = {{m.split(".")[0] for m in sys.modules}}
    _reset_peak()
    before = _peak_mb()
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    seen = observe(config, registry, model="bench", window=WindowConfig(seconds=7200), now=now)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    imported = sorted({{m.split(".")[0] for m in sys.modules}} - loaded)
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _peak_mb(),
                  "rows": seen.window.rows, "rss_before_mb": before, "load_1m": load,
                  "imported_during": imported}}))
"""
)

_ANALYSIS = """
import json, sys, time
from datetime import UTC, datetime, timedelta
sys.path.insert(0, {repo!r})
from conveyor.actions.models import open_registry
from conveyor.config import load_config
from conveyor.config.deploy import AnalysisConfig
from conveyor.release.analysis import collect, judge
config = load_config({project!r} + "/conveyor.yaml")
with open_registry(config) as registry:
    since = datetime.now(UTC) - timedelta(seconds=120)
    sides = [(1, "serve"), (2, "serve"), (1, "shadow")]
    collect(registry.store, "bench", "production", since, sides)  # warm: imports, connection
    times = []
    for _ in range(5):
        started = time.perf_counter()
        got = collect(registry.store, "bench", "production", since, sides)
        verdict = judge(got[1, "serve"], got[2, "serve"], AnalysisConfig())
        times.append(time.perf_counter() - started)
print(json.dumps({{"seconds": sorted(times)[2], "candidate_requests": got[2, "serve"].requests,
                  "decision": verdict.decision}}))
"""

_ENGINES = (
    _PEAK
    + """
import json, sys, time
from datetime import UTC, datetime, timedelta
sys.path.insert(0, {repo!r})
engine = {engine!r}
import pyarrow as pa, pyarrow.dataset as ds, duckdb
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import log_url
from conveyor.store.predictionlog.query import read_requests, request_files
files = LogFiles(log_url({project!r} + "/.conveyor/artifacts"))
names = [f"f{{i}}" for i in range(25)]
since = datetime.now(UTC) - timedelta(hours=2)
_reset_peak()
before = _peak_mb()
started = time.perf_counter()
if engine == "duckdb":
    table = read_requests(files, "bench", "production", since=since, roles=["serve"], inputs=names)
else:
    paths = request_files(files, "bench", "production", since, None)
    dataset = ds.dataset(paths, format="parquet")
    cols = ["request_id", "row", "rows", "at", "version", "role", "status", "latency_ms",
            "prediction", "raw_inputs"] + ["in." + n for n in names]
    start = pa.scalar(since, pa.timestamp("us", tz="UTC"))
    filt = (ds.field("role") == "serve") & (ds.field("at") >= start)
    table = dataset.to_table(columns=cols, filter=filt)
    table = table.sort_by([("at", "ascending"), ("request_id", "ascending")])
frame = table.to_pandas()
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "peak_rss_mb": _peak_mb(), "rows": table.num_rows,
                  "rss_before_mb": before}}))
"""
)


def monitor_seconds_1m(project: str, now: str | None = None) -> dict[str, Any]:
    """``observe()`` over the project's whole log: seconds, CPU seconds (all threads) and the
    child's peak RSS (MB), with the load average when it started and the top-level modules
    the report imported that the child had not (none expected).

    The window is the two hours before ``now`` (ISO 8601; default: when the newest log file
    was written), so that a project built earlier gives the same window, of every row it
    logged, at any later time: the log spans the hour before its build.
    """
    if now is None:
        from datetime import UTC, datetime

        newest = max(p.stat().st_mtime for p in Path(project, ".conveyor").rglob("*.parquet"))
        now = datetime.fromtimestamp(newest + 1, UTC).isoformat()
    return _child(_MONITOR.format(repo=str(REPO), project=project, now=now))


def analysis_seconds_1m(project: str) -> dict[str, Any]:
    """A canary step's ``collect()`` + ``judge()`` (median of 5) with the project's log."""
    return _child(_ANALYSIS.format(repo=str(REPO), project=project))


def engine_comparison(project: str) -> dict[str, Any]:
    """The monitoring window's read (filters, 25 typed inputs, sorted, to pandas) on DuckDB and
    on PyArrow datasets, each in its own process."""
    return {
        engine: _child(_ENGINES.format(repo=str(REPO), project=project, engine=engine))
        for engine in ("duckdb", "pyarrow")
    }


def run(quick: bool, project: str | None = None) -> dict[str, Any]:
    """Every figure; ``project`` reuses a log that ``build_project`` made (its size counts)."""
    rows = 200_000 if quick else 1_000_000
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
        "rows": rows,
    }
    results["bytes"] = log_bytes_per_request(50_000 if quick else 200_000)
    results["log_bytes_per_request"] = results["bytes"]["log_bytes_per_request"]
    results["rows_per_second_write"] = results["bytes"]["rows_per_second_write"]
    work = Path(tempfile.mkdtemp(prefix="plog-1m-"))
    try:
        if project is None:
            results["log"] = build_project(work / "project", rows)
            project = results["log"]["project"]
            # the first report of a version scores its holdout (scikit-learn imported, the
            # model loaded) and keeps the answers on disk; every later one reads them
            results["monitor_first"] = monitor_seconds_1m(project)
        else:
            parquet = list(Path(project, ".conveyor").rglob("*.parquet"))
            results["log"] = {
                "project": project,
                "reused": True,
                "log_mb": round(sum(p.stat().st_size for p in parquet) / 1e6, 1),
            }
        monitor = monitor_seconds_1m(project)
        results["monitor"] = monitor
        results["monitor_seconds_1m"] = round(monitor["seconds"], 3)
        results["monitor_peak_rss_mb"] = round(monitor["peak_rss_mb"], 1)
        analysis = analysis_seconds_1m(project)
        results["analysis"] = analysis
        results["analysis_seconds_1m"] = round(analysis["seconds"], 4)
        results["engines"] = engine_comparison(project)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_1m_after"] = round(os.getloadavg()[0], 2)
    results["goals"] = GOALS
    return results


def markdown(r: dict[str, Any]) -> str:
    b = r["bytes"]
    lines = [
        f"# Prediction log ({r['rows']:,} rows; {r['machine']['cpus']} CPUs, load "
        f"{r['machine']['load_1m']} -> {r['machine']['load_1m_after']})",
        "",
        "| figure | measured | goal |",
        "|---|---|---|",
        f"| bytes per request, gateway benchmark traffic | "
        f"{b['gateway_bench_traffic']['bytes_per_request']} | <= 150 |",
        f"| bytes per request, every row distinct | {b['distinct_rows']['bytes_per_request']} | "
        "(worst case) |",
        f"| writer rows/s (flush: parse, check, encode, write) | {r['rows_per_second_write']:,} | "
        ">= 20,000 |",
        f"| writer rows per CPU second (all threads), distinct rows | "
        f"{b['distinct_rows']['rows_per_cpu_second_write']:,} | |",
        f"| monitoring report over the window, s | {r['monitor_seconds_1m']} | <= 2 |",
        f"| its CPU seconds (all threads: the load does not inflate them as much) | "
        f"{r['monitor'].get('cpu_seconds', float('nan')):.2f} | |",
        f"| its peak RSS, MB (RSS before it: {r['monitor']['rss_before_mb']:.0f}) | "
        f"{r['monitor_peak_rss_mb']} | <= 1024 |",
        f"| the report's load average when it started | {r['monitor'].get('load_1m', 0):.2f} | |",
        f"| modules the report imported (the child had the report's own) | "
        f"{', '.join(r['monitor'].get('imported_during', [])) or 'none'} | |",
    ]
    if "monitor_first" in r:
        first = r["monitor_first"]
        lines.append(
            f"| first report of the version (scores the holdout, keeps it), s / CPU s / MB | "
            f"{first['seconds']:.2f} / {first['cpu_seconds']:.2f} / {first['peak_rss_mb']:.0f} | |"
        )
    lines += [
        f"| canary step analysis, s | {r['analysis_seconds_1m']} | <= 0.1 |",
        "",
        "| window read (filters, 25 inputs, sorted, to pandas) | seconds | peak RSS MB |",
        "|---|---|---|",
    ]
    for engine, got in r["engines"].items():
        lines.append(f"| {engine} | {got['seconds']:.3f} | {got['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--project", help="reuse the log of a project build_project made")
    parser.add_argument(
        "--results", type=Path, help="also write prediction_log.json and .md in this folder"
    )
    args = parser.parse_args(argv)
    results = run(args.quick, args.project)
    if args.results is not None:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "prediction_log.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.results / "prediction_log.md").write_text(markdown(results))
    print(json.dumps(results) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
