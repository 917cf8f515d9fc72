"""Goals 1-3: first run, fully cached re-run, status, param change and revert, per tool.

First runs are interleaved (bare, Conveyor, DVC, then again), each in a brand-new project, so a
slow patch of a shared machine hits all three alike. The last project of each tool is then used
for the cached measures.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from . import pipelines, timing
from .pipelines import Dataset
from .timing import Timing

Log = Callable[[str], None]
RACY_WINDOW_S = 2.5
_MEASURES = ("noop", "noop_engine", "status", "status_engine", "param_change", "param_revert")


def first_runs(
    data: Dataset, work: Path, env: Mapping[str, str], dvc: Path | None, repeats: int, log: Log
) -> tuple[dict, Path, tuple[Path, dict] | None]:
    """Run the whole pipeline from nothing: bare scripts, Conveyor, DVC, ``repeats`` times.

    Returns:
        The measures, the last Conveyor project and the last DVC repo with its env.
    """
    bare, conv, dvc_t = Timing(), Timing(), Timing()
    per_stage: list[list[float]] = []
    steps: list[dict[str, float]] = []
    conv_root = work / f"conveyor-{data.name}"
    dvc_repo: tuple[Path, dict] | None = None
    for attempt in range(repeats):
        log(f"{data.name}: first run {attempt + 1}/{repeats}: bare scripts")
        root = pipelines.new_bare(work / f"bare-{data.name}", data)
        walls = pipelines.run_bare(root, data, env)
        per_stage.append(walls)
        bare.samples.append(sum(walls))
        shutil.rmtree(root)

        log(f"{data.name}: first run {attempt + 1}/{repeats}: conveyor run")
        pipelines.new_conveyor_project(conv_root, data, env)
        conv.samples.append(timing.run(pipelines.conveyor("run"), conv_root, env).wall)
        pipelines.wait_for_profiles(conv_root)
        pipelines.expect_conveyor(conv_root, ran=pipelines.STAGE_COUNT, cached=0)
        steps.append(pipelines.conveyor_step_durations(conv_root))

        if dvc is not None:
            log(f"{data.name}: first run {attempt + 1}/{repeats}: dvc repro")
            repo = work / f"dvc-{data.name}"
            repo_env = pipelines.new_dvc_repo(repo, data, dvc, env)
            sample = timing.run([str(dvc), "repro"], repo, repo_env)
            _expect_dvc(sample, pipelines.STAGE_COUNT, "first dvc repro")
            dvc_t.samples.append(sample.wall)
            dvc_repo = (repo, repo_env)
    result = {
        "bare": bare.to_dict(),
        "bare_per_stage_s": per_stage,
        "conveyor": conv.to_dict(),
        "conveyor_step_durations_s": steps,
        "conveyor_overhead_s": conv.median - bare.median,
        # Where Conveyor's overhead sits: in its own process (imports, store, hashing,
        # orchestration, exit) or inside the steps (worker, log capture, storing the outs).
        "conveyor_outside_steps_s": statistics.median(
            wall - sum(durations.values())
            for wall, durations in zip(conv.samples, steps, strict=True)
        ),
        "conveyor_inside_steps_s": statistics.median(
            sum(durations.values()) - sum(walls)
            for durations, walls in zip(steps, per_stage, strict=True)
        ),
    }
    if dvc is not None:
        result["dvc"] = dvc_t.to_dict()
        result["dvc_overhead_s"] = dvc_t.median - bare.median
    return result, conv_root, dvc_repo


def snapshot_variant(data: Dataset, work: Path, env: Mapping[str, str], log: Log) -> dict:
    """One first run with the source also a step input (``inputs: [data.raw]``).

    Every declared source is snapshotted (hashed) on a full run, and profiled by a background
    process once the steps are done; here the source is also a step input, as a Python step
    reading it would have it, while the main measure has it only as a dep, as DVC has it.
    """
    log(f"{data.name}: first run with the source as a snapshotted input")
    root = work / f"conveyor-snap-{data.name}"
    pipelines.new_conveyor_project(root, data, env)
    text = (root / "conveyor.yaml").read_text()
    (root / "conveyor.yaml").write_text(
        text.replace('  prepare: {"cmd"', '  prepare: {"inputs": ["data.raw"], "cmd"', 1)
    )
    sample = timing.run(pipelines.conveyor("run"), root, env)
    pipelines.wait_for_profiles(root)
    pipelines.expect_conveyor(root, ran=pipelines.STAGE_COUNT, cached=0)
    profiled = pipelines.snapshot_profiled(root)
    shutil.rmtree(root)
    return {"wall_s": sample.wall, "profile_stored": profiled}


def cached_runs(
    data: Dataset,
    root: Path,
    env: Mapping[str, str],
    dvc: tuple[Path, Path, dict] | None,
    repeats: int,
    log: Log,
) -> dict:
    """No-op run (fast and engine path), status, param change and revert, tool after tool.

    Each sample of Conveyor is followed by the same sample of DVC, so a burst of load on a
    shared machine lands on both tools, not on one side of a ratio.

    Args:
        data: The dataset the projects were built on.
        root: The Conveyor project, after its first run.
        env: The benchmark environment.
        dvc: (dvc executable, repo, repo env) after its first repro, or None for Conveyor only.
        repeats: Samples per measure.
        log: Where progress lines go.
    """
    engine = {**env, "CONVEYOR_NO_FASTPATH": "1"}
    conv = {name: Timing() for name in _MEASURES}
    fast_samples = 0
    ref = {name: Timing() for name in ("noop", "status", "param_change", "param_revert")}

    def conveyor(name: str, run_env: Mapping[str, str], ran: int, *args: str) -> None:
        nonlocal fast_samples
        conv[name].samples.append(timing.run(pipelines.conveyor(*args), root, run_env).wall)
        if args[0] == "run":
            cached = pipelines.STAGE_COUNT - ran
            pipelines.expect_conveyor(root, ran=ran, cached=cached)
        if name == "noop":
            fast_samples += pipelines.newest_run_was_fast(root)

    def reference(name: str, command: str, stages: int | None) -> None:
        if dvc is None:
            return
        exe, repo, repo_env = dvc
        sample = timing.run([str(exe), command], repo, repo_env)
        if stages is not None:
            _expect_dvc(sample, stages, f"dvc {command} ({name})")
        ref[name].samples.append(sample.wall)

    log(f"{data.name}: no-op run and status, both tools in turn")
    # A user re-runs seconds after a change, not within the fast path's racy window (files
    # written less than 2 s before the run was recorded are re-checked by the engine).
    time.sleep(RACY_WINDOW_S)
    timing.run(pipelines.conveyor("run"), root, env)  # warm-up, as for DVC below
    if dvc is not None:
        timing.run([str(dvc[0]), "repro"], dvc[1], dvc[2])
    for _ in range(repeats):
        conveyor("noop", env, 0, "run")
        reference("noop", "repro", 0)
        conveyor("noop_engine", engine, 0, "run")
        conveyor("status", env, 0, "status")
        conveyor("status_engine", engine, 0, "status")
        reference("status", "status", None)
    for epochs in _changed_epochs(repeats):
        log(f"{data.name}: param change (epochs={epochs}) and revert, both tools in turn")
        pipelines.set_epochs(root, "conveyor", data, epochs)
        conveyor("param_change", env, pipelines.PARAM_STAGES, "run")
        if dvc is not None:
            pipelines.set_epochs(dvc[1], "dvc", data, epochs)
        reference("param_change", "repro", pipelines.PARAM_STAGES)
        pipelines.set_epochs(root, "conveyor", data, pipelines.PARAMS["train"]["epochs"])
        conveyor("param_revert", env, 0, "run")
        if dvc is not None:
            pipelines.set_epochs(dvc[1], "dvc", data, pipelines.PARAMS["train"]["epochs"])
        reference("param_revert", "repro", 0)
    conv["noop"].note = f"{fast_samples} of {repeats} samples took the fast path"
    result = {"conveyor": {name: timing_.to_dict() for name, timing_ in conv.items()}}
    result["conveyor"]["noop"]["fast_path_samples"] = fast_samples
    if dvc is not None:
        result["dvc"] = {name: timing_.to_dict() for name, timing_ in ref.items()}
    return result


def _changed_epochs(repeats: int) -> range:
    """A new value per cycle, so every change really re-runs instead of hitting the cache."""
    base = int(pipelines.PARAMS["train"]["epochs"])
    return range(base + 1, base + 1 + repeats)


def _expect_dvc(sample: timing.Sample, stages: int, what: str) -> None:
    ran = pipelines.dvc_stages_run(sample.output)
    if ran != stages:
        raise AssertionError(
            f"{what} was expected to run {stages} stages but ran {ran}:\n{sample.output[-2000:]}"
        )
