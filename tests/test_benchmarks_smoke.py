"""The benchmark suite's Conveyor half, on a tiny input, so `make bench` cannot rot unnoticed.

It runs the real code of benchmarks/suite (real `conveyor` processes in tmp_path); DVC and
MLflow are left out, as they are not installed in the project's venv.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.suite import data, environments, pipeline_runs, pipelines, report, tracking


@pytest.mark.slow
def test_conveyor_half_of_the_small_pipeline(tmp_path: Path) -> None:
    env = environments.base_env(tmp_path)
    source = data.small_csv(tmp_path / "data", rows=3000)
    ds = pipelines.dataset("small", source)
    lines: list[str] = []

    first, root, dvc_repo = pipeline_runs.first_runs(ds, tmp_path, env, None, 1, lines.append)
    cached = pipeline_runs.cached_runs(ds, root, env, None, 1, lines.append)["conveyor"]

    assert dvc_repo is None and "dvc" not in first
    assert first["conveyor"]["n"] == 1 and first["bare"]["median_s"] > 0
    assert set(first["conveyor_step_durations_s"][0]) == {
        "prepare",
        "featurize",
        "train",
        "evaluate",
        "report",
    }
    # The revert restored every step; the project's metrics file is the one of epochs=20.
    assert pipelines.latest_conveyor_run(root) == dict.fromkeys(
        ["prepare", "featurize", "train", "evaluate", "report"], "cached"
    )
    assert json.loads((root / "out" / "metrics.json").read_text())["n_eval"] == 30
    assert (root / "out" / "report.md").read_text().startswith("# Report")
    assert cached["noop"]["fast_path_samples"] == 1  # the no-op really took the fast path
    assert set(cached) == {
        "noop",
        "noop_engine",
        "status",
        "status_engine",
        "param_change",
        "param_revert",
    }
    results = {
        "meta": {"repeats": 1},
        "pipeline": {
            "small": {
                "input": {"bytes": source.stat().st_size, "files": 1},
                "first_run": first,
                "conveyor": cached,
            }
        },
    }
    table = report.markdown(results)
    assert "| 1 | fully cached re-run: `conveyor run` vs `dvc repro` | 10 MB |" in table
    assert "| 3 | param reverted: restored from cache |" in table
    assert any("param change" in line for line in lines)


@pytest.mark.slow
def test_tracking_project_stores_every_value(tmp_path: Path) -> None:
    env = environments.base_env(tmp_path)
    result = tracking.conveyor_tracking(tmp_path, env, 1, lambda _: None)
    assert result["stored_values"] == tracking.CALLS
    assert 0 < result["loop"]["median_s"] < 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        (
            "gates_significance.py",
            ["--seeds", "3", "--boot-seeds", "2", "--calibration-rows", "100000"],
            "not worse",
        ),
        ("validation_bench.py", ["--rows", "20000"], "pandera"),
        ("drift_bench.py", ["--rows", "3000", "--repeat", "1"], "scipy"),
    ],
)
def test_the_gate_benchmarks_run_on_a_tiny_input(
    script: str, args: list[str], expected: str
) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout


def test_the_scale_benchmark_builds_its_store_and_times_every_read(tmp_path: Path) -> None:
    """scale_bench on a tiny store: every read command answers on what it builds (a command
    that failed would stop the benchmark), and the table has a row for each."""
    from benchmarks import scale_bench

    names = scale_bench.build(tmp_path, runs=200, versions=20, releases=10, events=2000)
    walls, cpus = scale_bench.measure(tmp_path, scale_bench.COMMANDS, names, repeat=1)
    assert set(walls) == set(cpus) == {" ".join(c) for c in scale_bench.COMMANDS}
    assert all(0 < walls[c] < 60 and cpus[c] >= 0 for c in walls)
    figures = {
        "date": "today", "machine": scale_bench.machine(), "quick": True,
        "load_before": (0.0, 0.0, 0.0), "load_after": (0.0, 0.0, 0.0), "repeat": 1,
        "store": {"runs": 200, "versions": 20, "releases": 10, "events": 2000},
        "build_seconds": 1.0, "read_command_seconds": walls, "read_command_cpu_seconds": cpus,
        "log_bytes_per_request": None, "monitor_seconds_1m": None, "log_figures_note": "skipped",
    }  # fmt: skip
    table = scale_bench.table(figures)
    assert table.count("| `conveyor ") == len(scale_bench.COMMANDS)
    assert "`conveyor release show RELEASE`" in table
