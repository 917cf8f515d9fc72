"""Two workspaces sharing one SQLite store and one artifact folder: `conveyor gc` in one must not
delete what a run in progress in the other has stored but not yet recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor.actions.runs import collect_garbage
from conveyor.config import load_config
from conveyor.exceptions import StoreBusy
from conveyor.store.artifacts import ArtifactStore
from conveyor.store.leases import GC_LEASE, StoreLease
from conveyor.store.metadata import Store

pytestmark = pytest.mark.slow

STEPS = """
import time
from pathlib import Path

import conveyor


def train():
    Path("plot.txt").write_text("a plot that only this run has made")
    Path("logged").write_text(conveyor.log_artifact("plot.txt"))
    while not Path("release").exists():  # the run goes on for a while after logging
        time.sleep(0.05)
    return {"trained": 1}
"""


def _workspace(root: Path) -> Path:
    root.mkdir()
    (root / "conveyor.yaml").write_text(
        textwrap.dedent(
            """
            project: shared
            pipeline:
              train: {run: "steps:train"}
            """
        )
    )
    (root / "steps.py").write_text(STEPS)
    return root


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()[0]!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def test_gc_in_one_workspace_keeps_what_a_run_in_another_has_just_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    env = {
        "CONVEYOR_STORE_URL": f"sqlite:///{shared / 'conveyor.db'}",
        "CONVEYOR_ARTIFACTS": str(shared / "artifacts"),
    }
    a, b = _workspace(tmp_path / "a"), _workspace(tmp_path / "b")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run_in_a = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli.main", "run"],
        cwd=a,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(a / "logged", run_in_a)
        digest = (a / "logged").read_text()
        in_b = load_config(b / "conveyor.yaml")
        # Nothing records the plot yet: without a grace period it is garbage to B.
        assert digest in collect_garbage(in_b, dry_run=True, grace_hours=0)["removed"]

        report = collect_garbage(in_b)

        assert digest not in report["removed"]
        assert report["kept_young"] >= 1
    finally:
        (a / "release").touch()
        output = run_in_a.communicate(timeout=300)[0].decode()
    assert run_in_a.returncode == 0, output
    with ArtifactStore(env["CONVEYOR_ARTIFACTS"]) as artifacts:
        assert artifacts.read_bytes(digest) == b"a plot that only this run has made"
    with Store(env["CONVEYOR_STORE_URL"]) as store:
        [run] = [r for r in store.runs() if r.workspace == str(a)]
        assert [x.digest for x in store.logged_artifacts(run.id)] == [digest]


def test_gc_refuses_while_another_workspace_collects_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    monkeypatch.setenv("CONVEYOR_STORE_URL", f"sqlite:///{shared / 'conveyor.db'}")
    monkeypatch.setenv("CONVEYOR_ARTIFACTS", str(shared / "artifacts"))
    in_b = load_config(_workspace(tmp_path / "b") / "conveyor.yaml")
    with Store(os.environ["CONVEYOR_STORE_URL"]) as store:
        other = StoreLease(store, GC_LEASE, ttl=60, holder="build-7:311").acquire()

        with pytest.raises(StoreBusy) as caught:
            collect_garbage(in_b)

        other.release()
    assert str(caught.value) == (
        "Another 'conveyor gc' is collecting garbage in this store (build-7:311). Wait for it "
        "to finish, or pass --wait to queue behind it."
    )
    assert collect_garbage(in_b)["removed"] == []
