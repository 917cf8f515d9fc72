"""Goals 1-3: first run, fully cached re-run, status, param change and revert, per tool.

First runs are interleaved (bare, Conveyor, DVC, then again), each in a brand-new project, so a
slow patch of a shared machine hits all three alike. The last project of each tool is then used
for the cached measures.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path

from . import pipelines, timing
from .pipelines import Dataset
from .timing import Timing

Log = Callable[[str], None]


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

    That makes Conveyor snapshot the source (hash every file) and profile it in a thread
    beside the steps; the main measure has the source only as a dep, as DVC has it.
    """
    log(f"{data.name}: first run with the source as a snapshotted input")
    root = work / f"conveyor-snap-{data.name}"
    pipelines.new_conveyor_project(root, data, env)
    text = (root / "conveyor.yaml").read_text()
    (root / "conveyor.yaml").write_text(
        text.replace('  prepare: {"cmd"', '  prepare: {"inputs": ["data.raw"], "cmd"', 1)
    )
    sample = timing.run(pipelines.conveyor("run"), root, env)
    pipelines.expect_conveyor(root, ran=pipelines.STAGE_COUNT, cached=0)
    profiled = pipelines.snapshot_profiled(root)
    shutil.rmtree(root)
    return {"wall_s": sample.wall, "profile_stored": profiled}


def conveyor_cached(
    data: Dataset, root: Path, env: Mapping[str, str], repeats: int, log: Log
) -> dict:
    """No-op run (fast path and engine path), status, param change and revert."""
    engine = {**env, "CONVEYOR_NO_FASTPATH": "1"}
    all_cached = _conveyor_check(root, ran=0)
    log(f"{data.name}: conveyor no-op run, status")
    out = {
        "noop": timing.repeat(
            pipelines.conveyor("run"), root, env, times=repeats, warmup=1, verify=all_cached
        ),
        "noop_engine": timing.repeat(
            pipelines.conveyor("run"), root, engine, times=repeats, verify=all_cached
        ),
        "status": timing.repeat(pipelines.conveyor("status"), root, env, times=repeats),
        "status_engine": timing.repeat(pipelines.conveyor("status"), root, engine, times=repeats),
    }
    change, revert = Timing(), Timing()
    for epochs in _changed_epochs(repeats):
        log(f"{data.name}: conveyor param change (epochs={epochs}) and revert")
        pipelines.set_epochs(root, "conveyor", data, epochs)
        change.samples.append(timing.run(pipelines.conveyor("run"), root, env).wall)
        pipelines.expect_conveyor(root, ran=pipelines.PARAM_STAGES, cached=2)
        pipelines.set_epochs(root, "conveyor", data, pipelines.PARAMS["train"]["epochs"])
        revert.samples.append(timing.run(pipelines.conveyor("run"), root, env).wall)
        pipelines.expect_conveyor(root, ran=0, cached=pipelines.STAGE_COUNT)
    out["param_change"], out["param_revert"] = change, revert
    return {key: value.to_dict() for key, value in out.items()}


def dvc_cached(
    data: Dataset, repo: Path, repo_env: dict, dvc: Path, repeats: int, log: Log
) -> dict:
    """No-op ``dvc repro``, ``dvc status``, param change and revert (run-cache restore)."""
    log(f"{data.name}: dvc no-op repro, status")
    nothing_ran = _dvc_check(0, "no-op dvc repro")
    out = {
        "noop": timing.repeat(
            [str(dvc), "repro"], repo, repo_env, times=repeats, warmup=1, verify=nothing_ran
        ),
        "status": timing.repeat([str(dvc), "status"], repo, repo_env, times=repeats),
    }
    change, revert = Timing(), Timing()
    for epochs in _changed_epochs(repeats):
        log(f"{data.name}: dvc param change (epochs={epochs}) and revert")
        pipelines.set_epochs(repo, "dvc", data, epochs)
        sample = timing.run([str(dvc), "repro"], repo, repo_env)
        _expect_dvc(sample, pipelines.PARAM_STAGES, "dvc repro after a param change")
        change.samples.append(sample.wall)
        pipelines.set_epochs(repo, "dvc", data, pipelines.PARAMS["train"]["epochs"])
        sample = timing.run([str(dvc), "repro"], repo, repo_env)
        _expect_dvc(sample, 0, "dvc repro after reverting the param")
        revert.samples.append(sample.wall)
    out["param_change"], out["param_revert"] = change, revert
    return {key: value.to_dict() for key, value in out.items()}


def _changed_epochs(repeats: int) -> range:
    """A new value per cycle, so every change really re-runs instead of hitting the cache."""
    base = int(pipelines.PARAMS["train"]["epochs"])
    return range(base + 1, base + 1 + repeats)


def _conveyor_check(root: Path, ran: int) -> Callable[[timing.Sample], None]:
    def verify(_sample: timing.Sample) -> None:
        pipelines.expect_conveyor(root, ran=ran, cached=pipelines.STAGE_COUNT - ran)

    return verify


def _dvc_check(stages: int, what: str) -> Callable[[timing.Sample], None]:
    def verify(sample: timing.Sample) -> None:
        _expect_dvc(sample, stages, what)

    return verify


def _expect_dvc(sample: timing.Sample, stages: int, what: str) -> None:
    ran = pipelines.dvc_stages_run(sample.output)
    if ran != stages:
        raise AssertionError(
            f"{what} was expected to run {stages} stages but ran {ran}:\n{sample.output[-2000:]}"
        )
