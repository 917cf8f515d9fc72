"""Crashes and contention: kill -9 mid-step, two runs at once, the fast path's honesty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.exceptions import ProjectLocked
from conveyor.pipeline.worker import pid_alive

CONVEYOR = [sys.executable, "-m", "conveyor.cli.main"]

SLOW_STEPS = """
import os, time
from pathlib import Path


def first():
    return {"a": 1}


def slow(previous):
    Path("started").write_text(str(os.getpid()))
    while os.environ.get("SLOW") and not Path("release").exists():
        time.sleep(0.05)
    return {"b": previous["a"] + 1}
"""

SLOW_CONFIG = """
project: faults
pipeline:
  first: {run: "steps:first"}
  slow: {run: "steps:slow", inputs: [first]}
"""


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def _start(project, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [*CONVEYOR, "run"],
        cwd=project.root,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_kill_9_mid_step_then_next_run_finishes_and_marks_the_old_one_interrupted(project):
    project.write("conveyor.yaml", SLOW_CONFIG)
    project.write("steps.py", SLOW_STEPS)
    proc = _start(project, SLOW="1")
    _wait_for(project.root / "started", timeout=120)
    worker = int((project.root / "started").read_text())
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 15
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker), "the step's worker outlived the killed run"

    summary = project.run()
    assert summary.ok
    assert project.statuses(summary) == {"first": "cached", "slow": "ran"}

    from conveyor.store.artifacts import ArtifactStore
    from conveyor.store.metadata import Store

    config = project.config()
    with Store(config.store_url()) as store:
        runs = {r.id: r.status for r in store.runs()}
        kinds = [e.kind for e in store.events()]
    assert sorted(runs.values()) == ["interrupted", "succeeded"]
    assert "run.interrupted" in kinds
    with ArtifactStore(config.artifacts_url()) as artifacts:
        for digest in artifacts.digests():
            artifacts.verify(digest)  # no corrupt object was left behind


@pytest.mark.slow
def test_second_run_at_once_is_refused_clearly_and_the_store_stays_consistent(project):
    project.write("conveyor.yaml", SLOW_CONFIG)
    project.write("steps.py", SLOW_STEPS)
    proc = _start(project, SLOW="1")
    try:
        _wait_for(project.root / "started", timeout=120)
        with pytest.raises(ProjectLocked) as info:
            project.run()
        message = str(info.value)
        assert message.startswith("Another 'conveyor run' is running in this project (pid ")
        assert message.endswith("Wait for it to finish, or pass --wait to queue behind it.")
    finally:
        (project.root / "release").write_text("")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        assert [r.status for r in store.runs()] == ["succeeded"]


def _rows(project, run_id: str) -> tuple[list, list]:
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        steps = [
            (s.step, s.status, s.cache_key, s.reason, s.outputs, s.key_parts)
            for s in store.step_runs(run_id)
        ]
        events = [(e.kind, e.payload) for e in store.events(entity_id=run_id)]
    return steps, events


def _cli_run(project, **env) -> dict:
    out = subprocess.run(
        [*CONVEYOR, "run", "--json"],
        cwd=project.root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.slow
def test_fast_path_records_exactly_what_the_engine_records(project):
    project.write("conveyor.yaml", SLOW_CONFIG)
    project.write("steps.py", SLOW_STEPS)
    project.write("data.csv", "x\n1\n")
    assert project.run().ok
    engine = _cli_run(project, CONVEYOR_NO_FASTPATH="1")
    fast = _cli_run(project)
    assert engine["restored_from_cache"] and fast["restored_from_cache"]
    assert [s["status"] for s in fast["steps"]] == ["cached", "cached"]
    assert _rows(project, fast["run_id"]) == _rows(project, engine["run_id"])


def test_fast_path_steps_aside_when_anything_changed(project):
    from conveyor.pipeline.fastpath import check

    project.write(
        "conveyor.yaml",
        'project: p\ndata:\n  d: "data/*.csv"\npipeline:\n'
        '  a: {run: "steps:a", inputs: [data.d]}\n',
    )
    project.write("steps.py", "def a(frame):\n    return {'n': len(frame)}\n")
    project.write("data/1.csv", "x\n1\n")
    assert project.run().ok
    assert check(project.root) is not None

    project.write("data/2.csv", "x\n2\n")  # a new file in the glob
    assert check(project.root) is None
    assert project.run().ok
    assert check(project.root) is not None

    project.write("steps.py", "def a(frame):\n    return {'n': len(frame) + 0}\n")
    assert check(project.root) is None
    assert project.run().ok

    os.environ["CONVEYOR_JOBS"] = "1"  # restored by the autouse fixture
    assert check(project.root) is None
    del os.environ["CONVEYOR_JOBS"]
    assert check(project.root) is not None

    digest = check(project.root)["digests"][0]
    victim = project.root / ".conveyor" / "artifacts" / "objects" / digest[:2] / digest[2:]
    victim.chmod(0o644)
    victim.unlink()
    assert check(project.root) is None
    summary = project.run()  # the engine notices the missing output and re-runs the step
    assert project.statuses(summary) == {"a": "ran"}
    assert victim.exists()


@pytest.mark.slow
def test_ctrl_c_ends_the_run_as_interrupted_and_leaves_no_worker(project):
    project.write("conveyor.yaml", SLOW_CONFIG)
    project.write("steps.py", SLOW_STEPS)
    proc = subprocess.Popen(
        [*CONVEYOR, "run"],
        cwd=project.root,
        env={**os.environ, "SLOW": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_for(project.root / "started", timeout=120)
    worker = int((project.root / "started").read_text())
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    deadline = time.monotonic() + 15
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker)
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        (run,) = store.runs()
        assert run.status == "interrupted"
        assert {s.step: s.status for s in store.step_runs(run.id)} == {
            "first": "ran",
            "slow": "interrupted",
        }
