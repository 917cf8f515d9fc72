"""A cache hit re-checks the objects it hands on, and a damaged object found later is named by
the step, output and run that stored it, not only by its hash."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.store.artifacts import ArtifactStore
from conveyor.store.metadata import Store

CONFIG = """
project: cachecheck
pipeline:
  prepare: {run: "steps:prepare"}
  train: {run: "steps:train", inputs: [prepare]}
"""

STEPS = """
def prepare():
    return {"rows": list(range(50))}


def train(prepare):
    return {"n": len(prepare["rows"])}
"""


def _prepared(project) -> tuple[str, str, Path]:
    """Run once; (run id, digest of prepare's output, the object's file)."""
    project.write("conveyor.yaml", CONFIG)
    project.write("steps.py", STEPS)
    first = project.run()
    assert project.statuses(first) == {"prepare": "ran", "train": "ran"}
    config = project.config()
    with Store(config.store_url()) as store:
        [prepare] = [s for s in store.step_runs(first.run_id) if s.step == "prepare"]
    digest = prepare.outputs["return"]["digest"]
    with ArtifactStore(config.artifacts_url()) as artifacts:
        path = artifacts.path(digest)
    os.chmod(path, 0o644)
    return first.run_id, digest, path


def test_a_cache_hit_on_a_truncated_object_runs_the_step_again(project) -> None:
    _run_id, digest, path = _prepared(project)
    path.write_bytes(path.read_bytes()[:10])  # a crash, a full disk, a bad copy

    again = project.run()

    assert project.statuses(again) == {"prepare": "ran", "train": "cached"}
    with ArtifactStore(project.config().artifacts_url()) as artifacts:
        artifacts.verify(digest)  # stored whole again


def test_a_damaged_input_names_the_step_output_and_run_that_stored_it(project) -> None:
    run_id, digest, path = _prepared(project)
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01  # same size: only hashing finds it
    path.write_bytes(bytes(data))

    again = project.run(steps=["train"], force=True)

    [train] = [s for s in again.steps if s.name == "train"]
    assert train.status == "failed"
    assert f"Output 'return' of step 'prepare', stored by run {run_id}, is damaged: " in (
        train.error
    )
    assert f"Artifact {digest} at {path} is corrupted" in train.error
    assert "re-run the step that produced it with `conveyor run --force --step prepare`" in (
        train.error
    )
