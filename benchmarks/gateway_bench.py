"""Conveyor's gateway under HTTP load, beside MLflow's scoring server and a hand-written FastAPI +
ONNX Runtime endpoint, in one run: each server on one core, ``wrk`` on another.

    .venv/bin/python benchmarks/gateway_bench.py                     # ~5 min, all three servers
    .venv/bin/python benchmarks/gateway_bench.py --duration 5 --only conveyor,mlflow

Prints a Markdown table (req/s and p50/p99 per cell, CPU per request, RSS, Conveyor's ratio to
each reference measured in the same run, the goals) and writes it with the raw JSON to
benchmarks/results/gateway.{md,json}. The MLflow and FastAPI venvs are created on first use from
the pinned requirements files; the model, bodies and projects go to benchmarks/work/serving/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from suite import environments, serving
from suite.machine import (
    commit,
    describe_machine,
    load_average,
    package_version,
    quiet_feature_names,
)
from suite.serving import BenchError, Bodies, Load, Server, ServerSpec

SERVERS = ("conveyor", "mlflow", "fastapi-onnx")
LABELS = {"conveyor": "Conveyor", "mlflow": "MLflow", "fastapi-onnx": "FastAPI-ONNX"}
MODEL_NAME = "bench-hgb"
# (key, rows per request, connections), in table order
CELLS = (("rows1_c1", 1, 1), ("rows1_c8", 1, 8), ("rows1_c64", 1, 64), ("rows100_c8", 100, 8))
HEADINGS = {
    "rows1_c1": "1-row c=1",
    "rows1_c8": "1-row c=8",
    "rows1_c64": "1-row c=64",
    "rows100_c8": "100-row c=8 (rows/s)",
}


def log(message: str) -> None:
    print(f"[gateway-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell (10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per body size (3)")
    parser.add_argument(
        "--only",
        default=",".join(SERVERS),
        help=f"comma list of servers to run (default all: {','.join(SERVERS)})",
    )
    parser.add_argument("--no-swap", action="store_true", help="skip the swap-under-load cell")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (0)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="CPU for wrk and the bench (1)")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=10,
        help="%% of the server core other processes may use before a cell is repeated (10)",
    )
    parser.add_argument(
        "--max-tries", type=int, default=2, help="tries per cell when the core is not quiet (2)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=8,
        help="seconds to wait before a cell for the server core to be quiet (8)",
    )
    parser.add_argument("--work", type=Path, default=environments.DEFAULT_WORK / "serving")
    parser.add_argument("--results", type=Path, default=environments.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown or not args.servers:
        parser.error(f"--only takes a comma list of {', '.join(SERVERS)}; got {args.only!r}")
    if args.server_cpu == args.loadgen_cpu:
        parser.error("--server-cpu and --loadgen-cpu must differ: wrk would steal the server core")
    return args


# -- the model, in-process -----------------------------------------------------------------------


@dataclass
class Fixture:
    """What every server serves: the model, its held-out rows and the request bodies."""

    data: serving.Dataset
    model: Any
    bodies: Bodies
    accuracy: float

    def features(self, rows: int = 2000) -> Any:
        import pandas as pd

        return pd.DataFrame(self.data.x_test[:rows], columns=self.data.columns)

    def expected(self, rows: int) -> list[int]:
        return [int(v) for v in self.model.predict(self.data.x_test[:rows])]


def make_fixture(work: Path) -> Fixture:
    data = serving.make_dataset()
    model = serving.fit_model(data)
    bodies = serving.write_bodies(data.x_test, work / "bodies")
    return Fixture(data, model, bodies, float(model.score(data.x_test, data.y_test)))


# -- the three servers ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """A server ready to start, and what the swap cell needs to act on Conveyor's project."""

    spec: ServerSpec
    versions: dict[str, str]
    project: Path | None = None
    config: Any = None


def prepare_conveyor(fix: Fixture, work: Path, env: dict[str, str]) -> Prepared:
    """A fresh project (``project: bench``) with the model registered as production."""
    from conveyor.actions.models import register_fitted
    from conveyor.config import load_config

    project = work / "conveyor-project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "conveyor.yaml").write_text("project: bench\n")
    config = load_config(project / "conveyor.yaml", env=env)
    with quiet_feature_names():
        version = register_fitted(
            config,
            fix.model,
            fix.features(),
            name=MODEL_NAME,
            task="classification",
            aliases=("production",),
        )
    conveyor = environments.conveyor_bin() / "conveyor"
    # -C is an option of each command, not of `conveyor` itself.
    argv = [str(conveyor), "serve", "-C", str(project), "--host", "127.0.0.1", "--port", "{port}"]
    spec = ServerSpec(
        name="conveyor",
        argv=[*argv, "--workers", "1"],
        env={**env, **serving.THREAD_ENV},
        ready_path="/readyz",
        predict_path=f"/v1/models/{MODEL_NAME}/predict",
        log=work / "logs" / "conveyor.log",
        notes=[
            f"registered version {version.version} with an ONNX copy: {version.onnx is not None}"
        ],
    )
    versions = {"conveyor": f"{package_version('conveyor-ml')} (commit {commit()})"}
    return Prepared(spec, versions, project, config)


def prepare_mlflow(fix: Fixture, work: Path, env: dict[str, str]) -> Prepared:
    """The same estimator logged with ``mlflow.sklearn.log_model`` inside the MLflow venv."""
    import skops.io

    bin_dir = environments.ensure_venv("mlflow", log)
    folder = work / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    skops.io.dump(fix.model, folder / "model.skops")
    np.save(folder / "sample.npy", fix.data.x_test[:5])
    venv_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    export = [str(bin_dir / "python"), str(serving.SERVING_SRC / "export_mlflow.py")]
    export += ["--model", str(folder / "model.skops"), "--sample", str(folder / "sample.npy")]
    export += ["--store", str(folder / "tracking"), "--out", str(folder / "model")]
    done = subprocess.run(export, env=venv_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"export_mlflow.py failed ({done.returncode}): {done.stderr[-1500:]}")
    exported = json.loads(done.stdout.strip().splitlines()[-1])
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(folder / "model")]
    argv += ["--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"]
    # `mlflow models serve` runs `bash -c "exec uvicorn ..."`: the venv's bin must be on PATH.
    spec = ServerSpec(
        name="mlflow",
        argv=argv,
        env={**venv_env, "VIRTUAL_ENV": str(bin_dir.parent), **serving.THREAD_ENV},
        ready_path="/ping",
        predict_path="/invocations",
        log=work / "logs" / "mlflow.log",
    )
    return Prepared(spec, {"mlflow": exported["mlflow"]})


def prepare_fastapi_onnx(fix: Fixture, work: Path, env: dict[str, str]) -> Prepared:
    """``serving_src/fastapi_onnx_app.py`` on uvicorn (uvloop, httptools) with the ONNX copy
    that Conveyor's own exporter makes and checks against the model."""
    from conveyor.registry.onnx import OnnxModel, export_onnx

    with quiet_feature_names():
        data, report = export_onnx(fix.model, fix.features(1000), task="classification")
    if data is None:
        raise BenchError(f"The model has no faithful ONNX copy: {report['reason']}")
    if OnnxModel(data).layout != "matrix":
        raise BenchError("The ONNX copy reads one input per column; the app needs one matrix.")
    bin_dir = environments.ensure_venv("fastapi", log)
    onnx_file = work / "fastapi" / "model.onnx"
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    onnx_file.write_bytes(data)
    argv = [str(bin_dir / "uvicorn"), "fastapi_onnx_app:app", "--app-dir", str(serving.SERVING_SRC)]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    spec = ServerSpec(
        name="fastapi-onnx",
        argv=argv,
        env={**env, "BENCH_ONNX_MODEL": str(onnx_file), **serving.THREAD_ENV},
        ready_path="/health",
        predict_path="/predict",
        log=work / "logs" / "fastapi-onnx.log",
    )
    pins = (environments.BENCH_DIR / "requirements-fastapi.txt").read_text().splitlines()
    pinned = dict(line.split("==", 1) for line in pins if "==" in line)
    return Prepared(spec, {k: pinned[k] for k in ("fastapi", "uvicorn", "onnxruntime")})


PREPARE = {
    "conveyor": prepare_conveyor,
    "mlflow": prepare_mlflow,
    "fastapi-onnx": prepare_fastapi_onnx,
}


# -- measuring one server ------------------------------------------------------------------------


def check_answers(server: Server, fix: Fixture) -> None:
    """The 1-row and 100-row answers must equal in-process ``predict``.

    Raises:
        BenchError: a status other than 200 or another label.
    """
    for rows in (1, 100):
        body = serving.first_body(fix.bodies.path(rows))
        status, answer = serving.http("POST", server.url(server.spec.predict_path), body)
        if status != 200:
            raise BenchError(f"{server.spec.name}: {rows}-row request got {status}: {answer}")
        got, want = serving.predicted_labels(answer), fix.expected(rows)
        if got != want:
            raise BenchError(
                f"{server.spec.name}: {rows}-row answer {got[:10]} differs from predict {want[:10]}"
            )


def bench_server(
    prepared: Prepared, fix: Fixture, load: Load, warmup: float, swap: bool
) -> dict[str, Any]:
    spec = prepared.spec
    result: dict[str, Any] = {"ok": False, "versions": prepared.versions, "notes": spec.notes}
    server = Server(spec, load.server_cpu)
    with server:
        log(f"{spec.name}: starting")
        result["startup_s"] = round(server.start(), 2)
        check_answers(server, fix)
        result["processes"] = len(serving.process_tree(server.pid))
        if spec.name == "conveyor":
            route = production_route(server)
            result["route"] = route
            spec.notes.append(
                f"production served version {route.get('version')} on the "
                f"{route.get('runtime')!r} runtime"
            )
        url = server.url(spec.predict_path)
        for rows in (1, 100):
            serving.run_wrk(url, fix.bodies.path(rows), 8, warmup, load.loadgen_cpu)
        result["cells"] = {}
        for key, rows, connections in CELLS:
            cell = serving.measure_cell(server, fix.bodies.path(rows), rows, connections, load)
            result["cells"][key] = cell
            log(
                f"{spec.name} {HEADINGS[key]:22s} {cell['ok_rps']:8.1f} ok req/s  p50 "
                f"{cell['p50_ms']:6.2f}  p99 {cell['p99_ms']:7.2f} ms  non-2xx {cell['non_2xx']}"
                f"  socket {cell['socket_error_count']}  foreign {cell['foreign_pct_server_core']}%"
                f"  tries {cell['tries']}"
            )
        result["cpu_us_per_request"] = result["cells"]["rows1_c8"]["cpu_us_per_request"]
        tree = serving.process_tree(server.pid)
        result["rss_mb"] = round(serving.tree_rss_mb(tree), 1)
        # each process's own figure: the serving process first (for Conveyor the worker, whose
        # RSS issue 16's goal is about), then its children (the request log's writer)
        result["rss_by_process_mb"] = {
            str(pid): round(serving.tree_rss_mb([pid]), 1)
            for pid in [server.pid, *(p for p in tree if p != server.pid)]
        }
        if swap:
            result["swap"] = swap_cell(server, prepared, fix, load)
        result["ok"] = True
    return result


# -- swap under load -----------------------------------------------------------------------------


def production_route(server: Server) -> dict[str, Any]:
    """What ``GET /v1/models/<name>`` says production serves: ``{"version", "runtime"}``."""
    status, answer = serving.http("GET", server.url(f"/v1/models/{MODEL_NAME}"), timeout=5)
    if status != 200 or not isinstance(answer, dict):
        return {}
    return (answer.get("environments") or {}).get("production") or {}


def served_version(server: Server) -> int | None:
    version = production_route(server).get("version")
    return version if isinstance(version, int) else None


def _wait_for_version(server: Server, version: int, limit: float = 15) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if served_version(server) == version:
            return round(time.monotonic() - started, 3)
        time.sleep(0.02)
    return None


def swap_cell(server: Server, prepared: Prepared, fix: Fixture, load: Load) -> dict[str, Any]:
    """1-row c=8 load for the cell's duration while a second version is registered and the
    production alias moves to it and back with ``conveyor models alias``."""
    from conveyor.actions.models import register_fitted

    second = serving.fit_model(fix.data, random_state=1, max_iter=50)
    first_version = served_version(server)
    events: list[dict[str, Any]] = []
    serving.wait_quiet(load.server_cpu, server.pid, load.max_foreign_pct, load.quiet_wait)
    busy0 = serving.cpu_busy_seconds(load.server_cpu)
    own0 = serving.tree_cpu_seconds(serving.process_tree(server.pid))
    started = time.monotonic()

    def at(fraction: float) -> None:
        time.sleep(max(0.0, started + fraction * load.seconds - time.monotonic()))

    def alias(version: int) -> None:
        at_s = round(time.monotonic() - started, 2)
        argv = ["taskset", "-c", str(load.loadgen_cpu), prepared.spec.argv[0], "models", "alias"]
        argv += [str(version), "production", "-C", str(prepared.project)]
        done = subprocess.run(
            [*argv, "--model", MODEL_NAME], env=prepared.spec.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchError(f"'conveyor models alias' failed: {done.stderr or done.stdout}")
        cli_s = round(time.monotonic() - started - at_s, 3)
        seen = _wait_for_version(server, version)
        events.append({"alias_to": version, "at_s": at_s, "cli_s": cli_s, "served_after_s": seen})

    url = server.url(prepared.spec.predict_path)
    wrk = serving.start_wrk(
        url, fix.bodies.one_row, 8, load.seconds, load.loadgen_cpu, versions=True
    )
    registered = None
    try:
        at(0.1)
        with quiet_feature_names():
            registered = register_fitted(
                prepared.config, second, fix.features(), name=MODEL_NAME, task="classification"
            )
        at_s = round(time.monotonic() - started, 2)
        events.append({"registered": registered.version, "at_s": at_s})
        at(0.35)
        alias(registered.version)
        at(0.65)
        alias(first_version or 1)
    finally:
        swaps_done = time.monotonic() - started
        raw = serving.finish_wrk(wrk, load.seconds)
    wall = time.monotonic() - started
    busy = serving.cpu_busy_seconds(load.server_cpu) - busy0
    own = serving.tree_cpu_seconds(serving.process_tree(server.pid)) - own0
    cell = serving.summarize(raw, 1)
    cell.update(
        {
            "events": events,
            "versions_before_after": [first_version, served_version(server)],
            "second_version": registered.version,
            "swaps_done_at_s": round(swaps_done, 2),
            "foreign_pct_server_core": round(100 * max(0.0, busy - own) / wall, 1),
            # Every move was seen served, and before wrk stopped.
            "swaps_under_load": swaps_done <= raw["duration_us"] / 1e6
            and all(e["served_after_s"] is not None for e in events if "alias_to" in e),
        }
    )
    cell["failed"] = cell["non_2xx"] + cell["socket_error_count"]
    log(
        f"conveyor swap: {cell['requests']} requests, non-2xx {cell['non_2xx']}, socket "
        f"{cell['socket_error_count']}, versions in answers {cell['versions']}, events {events}"
    )
    return cell


# -- the report ----------------------------------------------------------------------------------


GOALS = {  # cell -> (text, test)
    "rows1_c1": ("p50 ≤ 1 ms", lambda c: c["p50_ms"] <= 1.0),
    "rows1_c8": ("≥ 3,000 req/s, p99 ≤ 10 ms", lambda c: c["ok_rps"] >= 3000 and c["p99_ms"] <= 10),
    "rows1_c64": ("p99 ≤ 50 ms", lambda c: c["p99_ms"] <= 50),
    "rows100_c8": ("≥ 150,000 rows/s", lambda c: c["ok_rows_per_s"] >= 150_000),
}


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _cell_text(key: str, cell: dict[str, Any], max_foreign: float) -> str:
    rate = _n(cell["ok_rows_per_s"] if cell["rows_per_request"] == 100 else cell["ok_rps"])
    text = f"{rate} · {cell['p50_ms']:.2f} / {cell['p99_ms']:.2f}"
    if key == "rows1_c64":
        text += f" · 503s: {_n(cell['status_503'])}"
    other = cell["non_2xx"] - (cell["status_503"] if key == "rows1_c64" else 0)
    if other or cell["socket_error_count"]:
        text += f" · ⚠ {_n(other)} non-2xx, {_n(cell['socket_error_count'])} socket errors"
    if cell["foreign_pct_server_core"] > max_foreign:
        text += f" ⚠{cell['foreign_pct_server_core']:.0f}%"
    return text


def _ratio(ours: float, theirs: float) -> str:
    if theirs <= 0:
        return "n/a"
    ratio = ours / theirs
    return f"{ratio:.1f}×" if ratio >= 0.995 else f"{ratio:.2f}×"


def goal_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with Conveyor's figure and whether it was met."""
    conveyor = results["servers"].get("conveyor", {})
    if not conveyor.get("ok"):
        return []
    goals = []
    for key, (text, test) in GOALS.items():
        cell = conveyor["cells"][key]
        goals.append({"cell": HEADINGS[key], "goal": text, "met": bool(test(cell))})
    swap = conveyor.get("swap")
    if swap is not None:
        goals.append({"cell": "swap under load", "goal": "0 failed", "met": swap["failed"] == 0})
    return goals


def markdown(results: dict[str, Any]) -> str:
    """The table, the ratio and goal rows, the swap cell and the method, from the raw results."""
    meta = results["meta"]
    lines = [
        "# Conveyor gateway: serving benchmark",
        "",
        f"{meta['date']}; {meta['machine']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. {meta['duration_s']:g} s per cell after "
        f"{meta['warmup_s']:g} s warm-up per body size; servers on CPU {meta['server_cpu']}, "
        f"wrk on CPU {meta['loadgen_cpu']}.",
        "",
        "Cells: successful (2xx) req/s · latency p50 / p99 in ms (100-row: rows/s). CPU µs/req: "
        "server CPU time per request at 1-row c=8. ⚠N%: other processes took N% of the server "
        f"core during the kept try (limit {meta['max_foreign_pct']:g}%). Ratio rows: Conveyor's "
        "throughput ÷ the reference's (higher is better) · Conveyor's p99 ÷ the reference's, "
        "and CPU and RSS ÷ the reference's (lower is better).",
        "",
        "| server | " + " | ".join(HEADINGS.values()) + " | CPU µs/req | RSS MB |",
        "|---|" + "---|" * len(HEADINGS) + "---:|---:|",
    ]
    servers = results["servers"]
    for name, res in servers.items():
        if not res.get("ok"):
            error = " ".join(str(res.get("error")).split()).replace("|", "/")
            why = "skipped (see below)" if res.get("skipped") else f"failed: {error}"
            lines.append(f"| {LABELS[name]} | {why} |" + " |" * 5)
            continue
        cells = [_cell_text(k, res["cells"][k], meta["max_foreign_pct"]) for k in HEADINGS]
        lines.append(
            f"| {LABELS[name]} | {' | '.join(cells)} | {_n(res['cpu_us_per_request'])} | "
            f"{res['rss_mb']:.0f} |"
        )
    ours = servers.get("conveyor", {})
    for name in ("mlflow", "fastapi-onnx"):
        theirs = servers.get(name, {})
        if not (ours.get("ok") and theirs.get("ok")):
            continue
        cells = []
        for key in HEADINGS:
            a, b = ours["cells"][key], theirs["cells"][key]
            rate = "ok_rows_per_s" if a["rows_per_request"] == 100 else "ok_rps"
            cells.append(f"{_ratio(a[rate], b[rate])} · p99 {_ratio(a['p99_ms'], b['p99_ms'])}")
        cpu = _ratio(ours["cpu_us_per_request"], theirs["cpu_us_per_request"])
        rss = _ratio(ours["rss_mb"], theirs["rss_mb"])
        lines.append(f"| Conveyor ÷ {LABELS[name]} | {' | '.join(cells)} | {cpu} | {rss} |")
    goals = goal_rows(results)
    if goals:
        by_cell = {g["cell"]: g for g in goals}
        cells = []
        for heading in HEADINGS.values():
            goal = by_cell[heading]
            cells.append(f"{goal['goal']}: **{'met' if goal['met'] else 'not met'}**")
        lines.append(f"| goals (Conveyor) | {' | '.join(cells)} | | |")
    lines += _swap_lines(ours.get("swap"))
    if goals:
        met = sum(g["met"] for g in goals)
        lines += ["", f"Goals met: {met} of {len(goals)}."]
    lines += ["", *_notes(results)]
    return "\n".join(lines) + "\n"


def _swap_lines(swap: dict[str, Any] | None) -> list[str]:
    if swap is None:
        return []
    moves = [e for e in swap["events"] if "alias_to" in e]
    seen = ", ".join(
        f"→ v{e['alias_to']} at {e['at_s']:.1f} s (CLI {e['cli_s']:.2f} s), served "
        + (f"{e['served_after_s']:.2f} s after" if e["served_after_s"] is not None else "never")
        for e in moves
    )
    answered = ", ".join(f"v{v}: {_n(n)}" for v, n in sorted(swap["versions"].items()))
    verdict = "met" if swap["failed"] == 0 else "not met"
    return [
        "",
        "Swap under load (Conveyor, 1-row c=8): version "
        f"{swap['second_version']} registered and production moved to it and back while wrk ran.",
        "",
        "| requests | non-2xx | socket errors | answers by version | alias moves | "
        "all under load | goal: 0 failed |",
        "|---:|---:|---:|---|---|---|---|",
        f"| {_n(swap['requests'])} | {_n(swap['non_2xx'])} | {_n(swap['socket_error_count'])} | "
        f"{answered or 'no version field'} | {seen} | "
        f"{'yes' if swap['swaps_under_load'] else 'no'} | **{verdict}** |",
    ]


def _notes(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    notes = [
        f"Versions: {versions}.",
        "",
        "Method: `HistGradientBoostingClassifier(random_state=0)` fitted on 80% of "
        "`make_classification(n_samples=50_000, n_features=20, random_state=0)` (test accuracy "
        f"{results['model']['accuracy']:.4f}); every server serves that estimator (Conveyor: "
        "registered with `conveyor.actions.models.register_fitted`; MLflow: "
        "`mlflow.sklearn.log_model`; "
        "FastAPI: the ONNX copy Conveyor's exporter checks against it). 512 single-row and 20 "
        '100-row `{"instances": ...}` bodies from held-out rows, the same bytes for every '
        "server; each server's 1-row and 100-row answers are checked against in-process "
        "`predict` before any load. One worker per server, pinned with `taskset` (children "
        "inherit), `OMP_NUM_THREADS=1`; wrk 1 thread (closed loop, so c=64 latency is mostly "
        "queueing; latency counts every answer, 503s included). CPU and RSS of the server's "
        "process tree come from /proc; a cell is repeated when other processes used more "
        f"than {meta['max_foreign_pct']:g}% of the server core (up to {meta['max_tries']} tries), "
        "and the cleanest try is kept.",
    ]
    worst = []
    for name, res in results["servers"].items():
        for key, cell in (res.get("cells") or {}).items():
            worst.append((cell["foreign_pct_server_core"], cell["wrk_cpu_pct"], name, key))
        for note in res.get("notes", []):
            notes += ["", f"{LABELS[name]}: {note}."]
        if res.get("skipped"):
            notes += ["", f"{LABELS[name]} skipped: {res['skipped']}"]
    started = [
        f"{LABELS[n]} {r['startup_s']:.1f} s ({r['processes']} process"
        f"{'es' if r['processes'] > 1 else ''})"
        for n, r in results["servers"].items()
        if r.get("ok")
    ]
    if started:
        notes += ["", f"Start to ready: {', '.join(started)}."]
    apart = [
        f"{LABELS[n]} " + " + ".join(f"{mb:.0f}" for mb in r["rss_by_process_mb"].values())
        for n, r in results["servers"].items()
        if r.get("ok") and len(r.get("rss_by_process_mb", {})) > 1
    ]
    if apart:
        notes += [
            "",
            "RSS MB by process after the last cell (the server's process first, then its "
            f"children: Conveyor's request-log writer): {', '.join(apart)}.",
        ]
    if worst:
        foreign, _, name, key = max(worst)
        notes += [
            "",
            f"Foreign load on the server core: at most {foreign}% ({LABELS[name]}, "
            f"{HEADINGS[key]}); wrk used at most {max(w[1] for w in worst)}% of its core.",
        ]
    return notes


# -- main ----------------------------------------------------------------------------------------


def _wrk_version() -> str:
    done = subprocess.run([serving.ensure_wrk(), "--version"], capture_output=True, text=True)
    return (done.stdout + done.stderr).split("Copyright")[0].replace("wrk", "").strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serving.ensure_wrk()
    cpus = os.sched_getaffinity(0)
    if not {args.server_cpu, args.loadgen_cpu} <= cpus:
        raise SystemExit(
            f"CPUs {args.server_cpu} and {args.loadgen_cpu} are needed, this process may use "
            f"{sorted(cpus)}; pass --server-cpu and --loadgen-cpu."
        )
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environments.base_env(work)
    load = Load(
        args.server_cpu,
        args.loadgen_cpu,
        args.duration,
        args.max_foreign,
        max_tries=max(1, args.max_tries),
        quiet_wait=args.quiet_wait,
    )
    log("fitting the model and writing the request bodies")
    fix = make_fixture(work)
    # The bench itself (registrations, alias commands, polling) stays off the server core.
    os.sched_setaffinity(0, {args.loadgen_cpu})
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": describe_machine(),
            "load_before": load_average(),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "server_cpu": args.server_cpu,
            "loadgen_cpu": args.loadgen_cpu,
            "max_foreign_pct": args.max_foreign,
            "max_tries": max(1, args.max_tries),
            "versions": {
                "python": platform.python_version(),
                "scikit-learn": package_version("scikit-learn"),
                "wrk": _wrk_version(),
            },
        },
        "model": {"accuracy": fix.accuracy, "n_iter": int(fix.model.n_iter_)},
        "servers": {},
    }
    for name in args.servers:
        try:
            prepared = PREPARE[name](fix, work, env)
        except (BenchError, subprocess.CalledProcessError, OSError) as exc:
            if name == "conveyor":
                raise
            log(f"{name}: skipped: {exc}")
            results["servers"][name] = {"ok": False, "skipped": str(exc)}
            continue
        results["meta"]["versions"] |= prepared.versions
        swap = name == "conveyor" and not args.no_swap
        try:
            results["servers"][name] = bench_server(prepared, fix, load, args.warmup, swap)
        except BenchError as exc:
            log(f"{name}: FAILED: {exc}")
            results["servers"][name] = {"ok": False, "error": str(exc)}
    results["meta"]["load_after"] = load_average()
    results["goals"] = goal_rows(results)
    table = markdown(results)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "gateway.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "gateway.md").write_text(table)
    print(table)
    log(f"wrote {args.results / 'gateway.md'} and gateway.json")
    failed = [n for n, r in results["servers"].items() if not r["ok"] and not r.get("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
