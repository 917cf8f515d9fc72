"""The release benchmark end to end on a few seconds of load, so that
``benchmarks/release_bench.py`` cannot rot unnoticed.

It runs the real thing: two ``conveyor serve`` processes on one SQLite store, the real
``conveyor deploy``, ``release step``, ``rollback`` and ``watch`` commands, and the asyncio load.
It checks the shape of the results, that no request failed and that no request-log row was
lost across a graceful stop; it asserts no timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_release_bench_runs_both_scenarios_without_failed_requests(tmp_path: Path) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "release_bench.py")]
    argv += ["--duration", "3", "--step-seconds", "1"]
    argv += ["--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results" / "release.json").read_text())
    assert set(results["versions"]) == {"stable", "healthy", "bad"}
    for scenario in ("rollback", "bad_canary"):
        run = results[scenario]
        assert run["load"]["requests"] > 0, scenario
        assert run["load"]["failed"] == 0, (scenario, run["load"]["failures"])
        assert {"answered_200", "rows", "lost"} <= set(run["log"]), scenario
        assert run["log"]["lost"] == 0, (scenario, run["log"])
        assert all(g["graceful"] for g in run["gateways"]), run["gateways"]
    assert "rollback_to_stable_s" in results["rollback"]
    bad = results["bad_canary"]
    assert {"bad_answers", "bad_share", "rolled_back", "start_to_rollback_s"} <= set(bad)
    assert [set(f) for f in results["figures"]] == [{"figure", "measured", "goal", "met"}] * 9

    table = (tmp_path / "results" / "release.md").read_text()
    assert "| figure | measured | goal | met |" in table
    assert "nothing pinned to a CPU" in table
