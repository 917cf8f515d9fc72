"""One client, two servers, side by side: Conveyor's gateway and the hand-written FastAPI + ONNX
Runtime endpoint, and where the gateway worker's memory goes.

``gateway_bench.py`` measures each server in turn; on a machine other processes load, the
servers then see different loads and a one-client p99 says more about the neighbours than about
the server. Here both servers run at once on CPU 0 and one client on CPU 1 alternates blocks of
``--block`` seconds of sequential keep-alive requests between them (the order flipped every
round), so both answer under the same background. Afterwards each server's RSS is read from
/proc, and the gateway's resident pages are grouped by mapping (anonymous memory, and each
shared library by its package) from /proc/PID/smaps.

Uses what ``gateway_bench.py`` prepared in ``benchmarks/work/serving`` (the registered model,
its ONNX copy, the 512 one-row bodies) and ``benchmarks/.venv-fastapi``: run that once first.

    .venv/bin/python benchmarks/gateway_paired.py [--rounds 30] [--block 1.0] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "serving"
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def servers() -> dict[str, dict[str, Any]]:
    env = {**os.environ, **THREADS}
    conveyor = Path(sys.executable).with_name("conveyor")
    uvicorn = HERE / ".venv-fastapi" / "bin" / "uvicorn"
    return {
        "conveyor": {
            "argv": [str(conveyor), "serve", "-C", str(WORK / "conveyor-project"),
                     "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
            "predict": "/v1/models/bench-hgb/predict",
            "ready": "/readyz",
            "env": env,
        },
        "fastapi-onnx": {
            "argv": [str(uvicorn), "fastapi_onnx_app:app", "--app-dir", str(HERE / "serving_src"),
                     "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
            "predict": "/predict",
            "ready": "/health",
            "env": {**env, "BENCH_ONNX_MODEL": str(WORK / "fastapi" / "model.onnx")},
        },
    }  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, path: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server on port {port} was not ready after {limit:.0f} s")


def rss_mb(pid: int) -> float:
    """RSS of the process and its children (the gateway's worker and its log writer)."""
    return round(sum(rss_by_process(pid).values()), 1)


def rss_by_process(pid: int) -> dict[str, float]:
    """RSS MB of the process and of each child, by pid: the worker's own figure is the one
    issue 16's goal is about, the writer child's is what the log costs beside it."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = {}
    for p in [pid, *map(int, children)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                found[str(p)] = round(int(line.split()[1]) / 1024, 1)
    return found


def resident_by_mapping(pid: int, top: int = 12) -> dict[str, float]:
    """Resident MB per mapping: [anon], [heap], and shared libraries by package."""
    by: Counter[str] = Counter()
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
            if "site-packages/" in name:
                name = name.split("site-packages/")[1].split("/")[0]
            elif name.startswith("/"):
                name = name.rsplit("/", 1)[-1]
        elif line.startswith("Rss:"):
            by[name] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in by.most_common(top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="blocks per server (30)")
    parser.add_argument("--block", type=float, default=1.0, help="seconds per block (1.0)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bodies = [
        line.encode()
        for line in (WORK / "bodies" / "rows1.jsonl").read_text().splitlines()
        if line.strip()
    ]
    specs = servers()
    load_before = os.getloadavg()
    os.sched_setaffinity(0, {1})
    procs, ports = {}, {}
    try:
        for name, spec in specs.items():
            ports[name] = _free_port()
            argv = [
                "taskset",
                "-c",
                "0",
                *(a.replace("{port}", str(ports[name])) for a in spec["argv"]),
            ]
            procs[name] = subprocess.Popen(
                argv, env=spec["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        for name, spec in specs.items():
            _wait_ready(ports[name], spec["ready"])
        conns = {n: http.client.HTTPConnection("127.0.0.1", ports[n], timeout=10) for n in specs}
        latencies: dict[str, list[float]] = {n: [] for n in specs}

        def block(name: str, seconds: float, keep: bool = True) -> None:
            conn, path, i = conns[name], specs[name]["predict"], 0
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                conn.request(
                    "POST", path, bodies[i % len(bodies)], {"content-type": "application/json"}
                )
                answer = conn.getresponse()
                answer.read()
                elapsed = time.perf_counter() - t0
                i += 1
                if answer.status != 200:
                    raise SystemExit(f"{name} answered {answer.status}")
                if keep:
                    latencies[name].append(elapsed)

        for name in specs:
            block(name, 3.0, keep=False)  # warm-up
        for k in range(args.rounds):
            for name in list(specs) if k % 2 == 0 else list(reversed(specs)):
                block(name, args.block)
        figures: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": args.rounds,
            "block_s": args.block,
        }
        for name, xs in latencies.items():
            xs.sort()

            def q(f: float, xs: list[float] = xs) -> float:
                return round(xs[min(len(xs) - 1, int(f * len(xs)))] * 1000, 3)

            figures[name] = {
                "requests": len(xs),
                "p50_ms": q(0.5),
                "p90_ms": q(0.9),
                "p99_ms": q(0.99),
                "mean_ms": round(statistics.fmean(xs) * 1000, 3),
                "rss_mb": rss_mb(procs[name].pid),
                "rss_by_process_mb": rss_by_process(procs[name].pid),
            }
        figures["gateway_resident_mb"] = resident_by_mapping(procs["conveyor"].pid)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)
    ours, ref = figures["conveyor"], figures["fastapi-onnx"]
    figures["p99_ratio"] = round(ours["p99_ms"] / ref["p99_ms"], 2)
    figures["p50_ratio"] = round(ours["p50_ms"] / ref["p50_ms"], 2)
    figures["load_before"], figures["load_after"] = load_before, os.getloadavg()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['date']}; load {load_before} before, {figures['load_after']} after")
    for name in specs:
        f = figures[name]
        print(
            f"  {name:13} {f['requests']:6} requests  p50 {f['p50_ms']:.3f}  "
            f"p90 {f['p90_ms']:.3f}  p99 {f['p99_ms']:.3f} ms  RSS {f['rss_mb']} MB "
            f"(by pid, first the server's: {f['rss_by_process_mb']})"
        )
    print(f"  Conveyor ÷ FastAPI-ONNX: p50 {figures['p50_ratio']}×, p99 {figures['p99_ratio']}×")
    print("  gateway resident MB by mapping:", figures["gateway_resident_mb"])


if __name__ == "__main__":
    main()
