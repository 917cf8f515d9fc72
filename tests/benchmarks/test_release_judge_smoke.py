"""The release judge's benchmark on two canaries of two kinds, so that
``benchmarks/release_judge.py`` cannot rot unnoticed.

It runs the real judge on simulated canaries and one canary of each kind through a real
SQLite request log and ``collect()``. It checks the JSON's shape, that the store and the
in-memory sides reach the same verdicts, and that a candidate inverted on 40% of traffic is
rolled back; it asserts no error rates (two canaries say nothing about them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_release_judge_bench_prints_its_figures_and_agrees_with_the_store(tmp_path: Path) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "release_judge.py")]
    argv += ["--canaries", "2", "--kinds", "equal", "inverted-40", "--store-canaries", "1"]
    argv += ["--json", "--write", str(tmp_path / "table.md")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads(done.stdout)
    assert result["false_rollback_rate"] == 0.0
    assert result["detection_rate"] == {"inverted-40": 1.0}
    assert set(result["exposure_median"]) == set(result["exposure_p95"]) == {"inverted-40"}
    assert 0 < result["exposure_median"]["inverted-40"] <= result["exposure_p95"]["inverted-40"]
    assert [k["kind"] for k in result["kinds"]] == ["equal", "inverted-40"]
    verdicts = {v["kind"]: v for v in result["store_verdicts"]}
    assert set(verdicts) == {"equal", "inverted-40"} and all(v["same"] for v in verdicts.values())
    assert verdicts["inverted-40"]["from_store"] == "rollback"
    table = (tmp_path / "table.md").read_text()
    assert "| candidate | canaries | rolled back |" in table and "| inverted-40 | 2 |" in table
