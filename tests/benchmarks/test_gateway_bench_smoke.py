"""The serving benchmark end to end on tiny durations, Conveyor's gateway only, so that
``benchmarks/gateway_bench.py`` cannot rot unnoticed.

It starts the real ``conveyor serve`` pinned to CPU 0 and real ``wrk`` on CPU 1, and checks
the shape of the results and that no request failed; it asserts no timings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CELLS = {"rows1_c1", "rows1_c8", "rows1_c64", "rows100_c8"}


@pytest.mark.slow
def test_gateway_bench_runs_conveyor_without_failed_requests(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("the bench pins the server to CPU 0 and wrk to CPU 1")
    argv = [sys.executable, str(REPO / "benchmarks" / "gateway_bench.py"), "--only", "conveyor"]
    # No waiting for a quiet core and no repeated cells: this checks the code, not the figures.
    argv += ["--duration", "1", "--warmup", "1", "--max-foreign", "100"]
    argv += ["--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results" / "gateway.json").read_text())
    conveyor = results["servers"]["conveyor"]
    assert set(results["servers"]) == {"conveyor"} and conveyor["ok"]
    assert set(conveyor["cells"]) == CELLS
    for key, cell in conveyor["cells"].items():
        assert cell["ok"] > 0, key
        assert cell["socket_error_count"] == 0, (key, cell["socket_errors"])
        shed = cell["status_503"] if key == "rows1_c64" else 0  # load shedding is allowed there
        assert cell["non_2xx"] == shed, (key, cell["statuses"])
        assert cell["status_503_without_retry_after"] == 0, key
    assert conveyor["cpu_us_per_request"] > 0 and conveyor["rss_mb"] > 0

    swap = conveyor["swap"]
    assert swap["failed"] == 0, swap["statuses"]
    assert swap["second_version"] == 2 and swap["versions_before_after"] == [1, 1]
    moves = [
        (e["alias_to"], e["served_after_s"] is not None) for e in swap["events"] if "alias_to" in e
    ]
    assert moves == [(2, True), (1, True)]

    table = (tmp_path / "results" / "gateway.md").read_text()
    assert "| Conveyor | " in table and "| goals (Conveyor) | " in table
    assert [g["cell"] for g in results["goals"]][-1] == "swap under load"
