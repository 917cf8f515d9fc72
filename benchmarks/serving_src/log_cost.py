"""What the prediction log costs a pinned gateway worker: RSS around a 100-row flood, and the
one-client tail with the log on and off (benchmarks/results/gateway-lean.md).

Uses the project and bodies that ``benchmarks/gateway_bench.py`` leaves in
``benchmarks/work/serving`` (run it once first) and Debian's ``wrk``:

    .venv/bin/python benchmarks/serving_src/log_cost.py rss
    .venv/bin/python benchmarks/serving_src/log_cost.py tail on|off|idle [RUNS]

The server runs on CPU 0 (``taskset``, its children inherit it), wrk on CPU 1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "benchmarks" / "work" / "serving"
LUA = ROOT / "benchmarks" / "serving_src" / "post.lua"
CONVEYOR = ROOT / ".venv" / "bin" / "conveyor"
PREDICT = "/v1/models/bench-hgb/predict"


def start(project: Path, log_yaml: str | None) -> tuple[subprocess.Popen[bytes], str]:
    """`conveyor serve --workers 1` on CPU 0 over a copy of the benchmark project."""
    shutil.copytree(WORK / "conveyor-project", project, symlinks=True)
    if log_yaml:
        text = (project / "conveyor.yaml").read_text()
        if "serve:" in text:
            raise SystemExit("the benchmark project already has a serve: section")
        (project / "conveyor.yaml").write_text(text + f"\nserve:\n  log:\n{log_yaml}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["OMP_NUM_THREADS"] = "1"
    argv = ["taskset", "-c", "0", str(CONVEYOR), "serve", "-C", str(project)]
    argv += ["--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not become ready in 30 s")


def wrk(url: str, rows: int, connections: int, seconds: int) -> str:
    env = {**os.environ, "WRK_BODIES": str(WORK / "bodies" / f"rows{rows}.jsonl")}
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(LUA), url + PREDICT]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in MB of the worker and of each child (the log's writer)."""
    out = {}
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for i, p in enumerate([pid, *map(int, kids)]):
        who = "worker" if i == 0 else f"child{i}"
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                out[f"{who} {line.split(':')[0]}"] = int(line.split()[1]) // 1024
    return out


def measure_rss(folder: Path) -> None:
    proc, url = start(folder / "p", None)
    try:
        one = (WORK / "bodies" / "rows1.jsonl").read_text().splitlines()
        with httpx.Client() as client:
            for i in range(300):
                client.post(url + PREDICT, content=one[i % len(one)])
        time.sleep(2.5)
        print("after 300 one-row requests:", rss(proc.pid))
        out = wrk(url, 100, 8, 10)
        print("100-row c=8 for 10 s:", re.search(r"Requests/sec:\s+(\S+)", out).group(1), "req/s")
        for after, wait in ((0.5, 0.5), (3.0, 2.5), (8.0, 5.0)):
            time.sleep(wait)
            print(f"{after:g} s after the flood:", rss(proc.pid))
        metrics = httpx.get(url + "/metrics").text
        print([m for m in metrics.splitlines() if m.startswith("conveyor_request_log_dropped")])
    finally:
        proc.terminate()
        proc.wait(30)


def measure_tail(folder: Path, mode: str, runs: int) -> None:
    log_yaml = {"on": None, "off": "    sample: 0\n", "idle": "    writer_priority: idle\n"}
    proc, url = start(folder / "p", log_yaml[mode])
    try:
        wrk(url, 1, 1, 3)  # warm-up
        for _ in range(runs):
            out = wrk(url, 1, 1, 10)
            pct = dict(re.findall(r"\s+(50|90|99)%\s+(\S+)", out))
            rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
            print(
                f"log {mode}: {rps} req/s, p50 {pct['50']}, p90 {pct['90']}, p99 {pct['99']}, "
                f"load {os.getloadavg()[0]:.2f}"
            )
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    if not (WORK / "conveyor-project").is_dir():
        raise SystemExit(f"{WORK} has no benchmark project: run benchmarks/gateway_bench.py once")
    with tempfile.TemporaryDirectory(prefix="log-cost-") as tmp:
        if sys.argv[1:2] == ["rss"]:
            measure_rss(Path(tmp))
        elif sys.argv[1:2] == ["tail"] and len(sys.argv) >= 3:
            measure_tail(Path(tmp), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2)
        else:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
