"""Runs a project's pipeline: snapshot the sources, then each step in DAG order, skipping every
step whose cache key is already in the store.

A step's key is computed only once its upstream steps are done, from the digests of what they
produced: when an upstream step re-runs and produces identical bytes, its dependents stay cached.
Independent steps run concurrently on the executor; a failed step blocks only its dependents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ArtifactNotFound, ExecutorError, PipelineError
from conveyor.pipeline import keys
from conveyor.pipeline.executors import Executor, LocalExecutor, make_executor
from conveyor.pipeline.plan import Context, Planner, snapshot_sources
from conveyor.pipeline.task import InputSpec, StepResult, StepTask
from conveyor.project import git_state

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

Listener = Callable[[str, str, dict], None]  # (step, status, details)


@dataclass
class StepOutcome:
    name: str
    status: str  # ran | cached | failed | blocked | pending
    reason: str = ""
    duration_s: float = 0.0
    error: str | None = None
    traceback: str | None = None
    log_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSummary:
    run_id: str
    status: str
    steps: list[StepOutcome]
    duration_s: float
    fast: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "duration_s": round(self.duration_s, 4),
            "restored_from_cache": self.fast or all(s.status == "cached" for s in self.steps),
            "steps": [
                {
                    "step": s.name,
                    "status": s.status,
                    "reason": s.reason,
                    "duration_s": round(s.duration_s, 4),
                    "error": s.error,
                    "log": s.log_path,
                    "metrics": s.metrics,
                }
                for s in self.steps
            ],
        }


def run_pipeline(
    config: ProjectConfig,
    *,
    steps: list[str] | None = None,
    force: bool = False,
    jobs: int | None = None,
    executor: Executor | None = None,
    wait_for_lock: bool = False,
    listener: Listener | None = None,
    wait_for_profiles: bool = False,
) -> RunSummary:
    """Run (or restore from cache) the selected steps and everything they need.

    Args:
        config: the loaded ProjectConfig.
        steps: only these steps (plus the upstream steps they need); None means all.
        force: re-run the selected steps even when cached.
        jobs: how many steps may run at once (default: the config's, else CPU count).
        executor: an executor to use instead of the configured one (tests, embedding).
        wait_for_lock: queue behind another run in this workspace instead of refusing.
        listener: called as (step, status, details) when a step changes state.
        wait_for_profiles: return only once new data snapshots are profiled (they are
            profiled by a background process that otherwise outlives the run).

    Raises:
        ProjectLocked: another run holds this workspace.
        PipelineError, DataError, StoreError: before any step ran.
    """
    from conveyor.pipeline.lock import RunLock
    from conveyor.project import Paths, use_code

    started = time.perf_counter()
    notify = listener or (lambda *_: None)
    paths = Paths(Path(config.root))
    use_code(paths.root)  # the steps' models load here too (a custom class of the project's)
    lock = RunLock(paths.run_lock).acquire(wait=wait_for_lock)
    owned = executor is None
    exe = executor or make_executor(
        config.executor.kind,
        jobs or config.executor.jobs,
        config.executor.address,
        preload=("pandas", "pyarrow.parquet")
        if any(s.run for s in config.pipeline.values())
        else (),
    )
    if owned and isinstance(exe, LocalExecutor):
        exe.prestart()  # the workers start while the stores open
    try:
        ctx = Context(config)
        try:
            return _run(ctx, steps, force, exe, notify, started, wait_for_profiles)
        finally:
            ctx.close()
    finally:
        if owned:
            exe.close()
        lock.release()


def _selection(config: ProjectConfig, steps: list[str] | None) -> tuple[list[str], set[str]]:
    order = config.topological_order()
    if not steps:
        return order, set(order)
    unknown = [s for s in steps if s not in config.pipeline]
    if unknown:
        raise PipelineError(
            f"Unknown step {unknown[0]!r}; steps in conveyor.yaml: {', '.join(order)}."
        )
    needed = config.upstream_closure(steps)
    return [s for s in order if s in needed], set(steps)


def _run(
    ctx: Context,
    steps: list[str] | None,
    force: bool,
    exe: Executor,
    notify: Listener,
    started: float,
    wait_for_profiles: bool = False,
) -> RunSummary:
    from conveyor.pipeline import fastpath
    from conveyor.store.metadata import StepRecord

    config = ctx.config
    workspace = str(ctx.root)
    # Whatever this run changes, the old witness no longer vouches for it; a run that
    # succeeds in full writes a new one at the end.
    ctx.state.delete(fastpath.KEY)
    ctx.store.mark_interrupted(workspace)
    order, targets = _selection(config, steps)
    forced = targets if force else set()
    # A full run records the state of every declared source (lineage); a partial one only what
    # its steps read.
    source_names = sorted(
        config.data if not steps else {s for step in order for s in config.sources_of(step)}
    )
    snapshots, to_profile = snapshot_sources(ctx, source_names)

    commit, dirty = git_state(ctx.root)
    ctx.store.save_env_lock(ctx.env.hash, ctx.env.python, list(ctx.env.packages))
    run_id = ctx.store.start_run(
        project=config.project,
        workspace=workspace,
        env_hash=ctx.env.hash,
        config_hash=keys.digest_of(config.to_json()),
        args={"steps": steps or [], "force": force, "jobs": exe.jobs},
        git_commit=commit,
        git_dirty=dirty,
        steps={s: "" for s in order},
    )
    snap_ids = {
        name: ctx.store.save_snapshot(run_id, snap, snap.get("data_digest"))
        for name, snap in snapshots.items()
    }
    from conveyor.pipeline import profiling

    planner = Planner(ctx, snapshots)
    outcomes = {s: StepOutcome(s, "pending") for s in order}
    running: dict[Future[StepResult], tuple[str, str, dict, str, float]] = {}
    run_status = "failed"
    stored_by: dict[str, str] = {}  # step -> the run that stored the outputs this run uses
    try:
        remaining = list(order)
        while remaining or running:
            for step in list(remaining):
                ups = config.upstream(step)
                states = [outcomes[u].status for u in ups]
                if any(st in ("failed", "blocked") for st in states):
                    bad = next(u for u in ups if outcomes[u].status in ("failed", "blocked"))
                    _finish_blocked(ctx, run_id, outcomes[step], bad)
                    notify(step, "blocked", {"reason": outcomes[step].reason})
                    remaining.remove(step)
                    continue
                if not all(st in ("ran", "cached") for st in states):
                    continue
                try:
                    parts = planner.parts(step)
                except PipelineError as exc:
                    _finish_failed_early(ctx, run_id, outcomes[step], str(exc))
                    notify(step, "failed", {"error": str(exc)})
                    remaining.remove(step)
                    continue
                key = keys.digest_of(parts)
                hit = None if step in forced else _cache_hit(ctx, step, key)
                if hit is not None:
                    planner.outputs[step] = hit.outputs
                    stored_by[step] = hit.run_id
                    outcome = outcomes[step]
                    outcome.status, outcome.reason = "cached", "unchanged"
                    outcome.metrics = dict(hit.metrics or {})
                    ctx.store.record_step(
                        StepRecord(
                            run_id=run_id,
                            step=step,
                            status="cached",
                            cache_key=key,
                            key_parts=parts,
                            reason="unchanged",
                            outputs=hit.outputs,
                        )
                    )
                    notify(step, "cached", {})
                    remaining.remove(step)
                    continue
                if len(running) >= exe.jobs:
                    continue
                last = ctx.store.last_step_run(step)
                reason = (
                    "forced"
                    if step in forced
                    else keys.explain(last.key_parts if last else None, parts)
                )
                task = _task(ctx, run_id, step, planner, stored_by)
                ctx.store.step_started(run_id, step, reason)
                notify(step, "running", {"reason": reason})
                running[exe.submit(task)] = (step, key, parts, reason, time.time())
                remaining.remove(step)
            if not running:
                if remaining:  # nothing can progress: every remaining step waits on a failure
                    continue
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                step, key, parts, reason, t0 = running.pop(fut)
                result = _result_of(fut, step, t0)
                _record_result(ctx, run_id, step, key, parts, reason, result, outcomes[step])
                if result.ok:
                    planner.outputs[step] = result.outputs
                    stored_by[step] = run_id
                notify(step, outcomes[step].status, _details(outcomes[step]))
        failed = [o for o in outcomes.values() if o.status in ("failed", "blocked")]
        run_status = "failed" if failed else "succeeded"
    except BaseException:
        exe.close(cancel=True)
        ctx.store.finish_run(run_id, "interrupted", "interrupted by the user or a signal")
        raise
    # Profiles start once the steps are done, so they never compete with them for the CPU; the
    # profiler outlives this process and records them when it finishes.
    profiler = profiling.start(ctx, run_id, [(snap_ids[n], n, snap) for n, snap in to_profile])
    if profiler is not None and wait_for_profiles:
        profiling.wait(profiler)
    error = None
    if run_status == "failed":
        error = "; ".join(
            f"{o.name}: {o.error or o.reason}" for o in outcomes.values() if o.status == "failed"
        )
    ctx.store.finish_run(run_id, run_status, error)
    summary = RunSummary(run_id, run_status, list(outcomes.values()), time.perf_counter() - started)
    if run_status == "succeeded" and not steps and not force:
        fastpath.remember(ctx, planner, order, snapshots, summary)
    return summary


def _cache_hit(ctx: Context, step: str, key: str) -> Any:
    """The cache entry for this key, provided every artifact it names is still stored whole.

    Each object must exist at its recorded size (a stat, not a hash: cheap enough for every
    hit), so a truncated or replaced object makes the step run again, which stores it afresh,
    instead of passing the damage on to whatever loads it later.
    """
    hit = ctx.store.cached([key]).get(key)
    if hit is None:
        return None
    for desc in hit.outputs.values():
        if not _stored_whole(ctx, desc.get("digest"), desc.get("size")):
            return None
        for digest in (desc.get("files") or {}).values():  # a folder's files
            if not ctx.artifacts.exists(digest):
                return None
    cfg = ctx.config.pipeline[step]
    if cfg.cmd is not None:
        restore_outs(ctx, hit.outputs)
    return hit


def _stored_whole(ctx: Context, digest: Any, size: Any) -> bool:
    if not isinstance(digest, str):
        return False
    try:
        found = ctx.artifacts.size(digest)
    except ArtifactNotFound:
        return False
    return size is None or found == size


def restore_outs(ctx: Context, outputs: dict[str, dict]) -> None:
    """Put a cached cmd step's declared outs back in the workspace, unless already identical."""
    import json

    from conveyor.pipeline.worker import remove_path

    for out, desc in outputs.items():
        path = ctx.root / desc.get("path", out)
        recorded = ctx.state.get(f"out:{path}")
        if recorded and path.exists():
            entry = json.loads(recorded)
            if entry["digest"] == desc["digest"] and entry["stamp"] == _stamp(path):
                continue
        remove_path(path)
        if desc["format"] == "dir":
            for rel, digest in desc["files"].items():
                ctx.artifacts.materialize(digest, path / rel)
        else:
            ctx.artifacts.materialize(desc["digest"], path)
        _remember_out(ctx, path, desc["digest"])


def _remember_out(ctx: Context, path: Path, digest: str) -> None:
    """Note which object a workspace out holds, so an unchanged out is never restored again."""
    import json

    ctx.state.put(f"out:{path}", json.dumps({"digest": digest, "stamp": _stamp(path)}))


def _stamp(path: Path) -> str:
    if path.is_dir():
        parts = []
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                parts.append(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        return "|".join(parts)
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _task(
    ctx: Context, run_id: str, step: str, planner: Planner, stored_by: dict[str, str]
) -> StepTask:
    """What a worker needs to run ``step``; each upstream output carries its ``origin`` (the
    step, output and run that stored it), for the error if it cannot be loaded."""
    cfg = ctx.config.pipeline[step]
    inputs: list[tuple[str | None, InputSpec]] = []
    for keyword, ref in cfg.input_refs():
        if ref.startswith("data."):
            name = ref[5:]
            snap = planner.snapshots[name]
            src = ctx.config.data[name]
            spec = InputSpec(
                ref=ref,
                kind="source",
                files=tuple(str(ctx.root / f["path"]) for f in snap.get("files", [])),
                format=src.format,
                options=dict(src.options),
                data_digest=snap.get("data_digest"),
            )
        else:
            up, _, select = ref.partition(".")
            outputs = planner.outputs.get(up, {})
            if select and select not in outputs:
                raise PipelineError(
                    f"Step '{step}' takes {ref!r}, but step '{up}' produced the outputs "
                    f"{', '.join(sorted(outputs)) or 'none'}. Fix 'inputs' in conveyor.yaml."
                )
            outputs = {
                name: {**desc, "origin": {"step": up, "output": name, "run": stored_by.get(up)}}
                for name, desc in outputs.items()
            }
            spec = InputSpec(ref=ref, kind="output", outputs=outputs, select=select or None)
        inputs.append((keyword, spec))
    return StepTask(
        name=step,
        run=cfg.run,
        cmd=cfg.cmd,
        root=str(ctx.root),
        artifacts_url=ctx.config.artifacts_url(),
        log_path=str(ctx.paths.logs / run_id / f"{step}.log"),
        inputs=tuple(inputs),
        params=dict(cfg.params),
        outs=tuple(cfg.outs),
        metrics_file=cfg.metrics,
        trusted_types=tuple(ctx.config.model.trusted_types) if ctx.config.model else (),
    )


def _result_of(fut: Future[StepResult], step: str, t0: float) -> StepResult:
    try:
        return fut.result()
    except ExecutorError as exc:  # the executor says what happened (a worker died, a cancel)
        return StepResult(
            name=step, ok=False, started_at=t0, finished_at=time.time(), error=str(exc)
        )
    except Exception as exc:  # the worker process itself died (segfault, OOM kill, Ray loss)
        now = time.time()
        return StepResult(
            name=step,
            ok=False,
            started_at=t0,
            finished_at=now,
            error=f"the worker running the step died: {type(exc).__name__}: {exc}",
        )


def _record_result(
    ctx: Context,
    run_id: str,
    step: str,
    key: str,
    parts: dict,
    reason: str,
    result: StepResult,
    outcome: StepOutcome,
) -> None:
    from conveyor.store.metadata import StepRecord

    log_path = ctx.paths.logs / run_id / f"{step}.log"
    log_digest = ctx.artifacts.put_file(log_path).digest if log_path.is_file() else None
    status = "ran" if result.ok else "failed"
    if result.ok and ctx.config.pipeline[step].cmd is not None:
        for out, desc in result.outputs.items():
            _remember_out(ctx, ctx.root / desc.get("path", out), desc["digest"])
    ctx.store.record_step(
        StepRecord(
            run_id=run_id,
            step=step,
            status=status,
            cache_key=key,
            key_parts=parts,
            reason=reason,
            started_at=_dt(result.started_at),
            finished_at=_dt(result.finished_at),
            duration_s=result.duration_s,
            outputs=result.outputs,
            log_digest=log_digest,
            error=result.error,
            traceback=result.traceback,
            metrics=result.metrics,
            params=result.params or None,
            artifacts=result.artifacts,
            cacheable=True,
        )
    )
    outcome.status = status
    outcome.reason = reason
    outcome.duration_s = result.duration_s
    outcome.error = result.error
    outcome.traceback = result.traceback
    outcome.log_path = str(log_path) if log_path.is_file() else None
    outcome.metrics = {k: v for k, v, _i, _t in result.metrics}


def _finish_blocked(ctx: Context, run_id: str, outcome: StepOutcome, upstream: str) -> None:
    from conveyor.store.metadata import StepRecord

    outcome.status = "blocked"
    outcome.reason = f"upstream step '{upstream}' did not succeed"
    ctx.store.record_step(
        StepRecord(
            run_id=run_id, step=outcome.name, status="blocked", cache_key="", reason=outcome.reason
        )
    )


def _finish_failed_early(ctx: Context, run_id: str, outcome: StepOutcome, error: str) -> None:
    from conveyor.store.metadata import StepRecord

    outcome.status = "failed"
    outcome.error = error
    ctx.store.record_step(
        StepRecord(run_id=run_id, step=outcome.name, status="failed", cache_key="", error=error)
    )


def _details(outcome: StepOutcome) -> dict:
    return {
        "duration_s": outcome.duration_s,
        "error": outcome.error,
        "reason": outcome.reason,
        "log": outcome.log_path,
    }


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
