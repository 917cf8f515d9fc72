"""`conveyor status`: which steps would run, and exactly why (input, param, code, environment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.exceptions import PipelineError
from conveyor.pipeline import keys
from conveyor.pipeline.plan import Context, Planner, snapshot_sources

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig


@dataclass
class StepStatus:
    step: str
    state: str  # up-to-date | stale | never-ran
    reason: str

    def to_dict(self) -> dict:
        return {"step": self.step, "state": self.state, "reason": self.reason}


def pipeline_status(config: ProjectConfig) -> list[StepStatus]:
    """Compare each step's current key with the cache, without running anything."""
    ctx = Context(config)
    try:
        order = config.topological_order()
        names = sorted({s for step in order for s in config.sources_of(step)})
        snapshots, _ = snapshot_sources(ctx, names)
        planner = Planner(ctx, snapshots)
        result: dict[str, StepStatus] = {}
        for step in order:
            stale_up = [u for u in config.upstream(step) if result[u].state != "up-to-date"]
            if stale_up:
                result[step] = StepStatus(
                    step, "stale", f"upstream step '{stale_up[0]}' will re-run first"
                )
                continue
            try:
                parts = planner.parts(step)
            except PipelineError as exc:
                result[step] = StepStatus(step, "stale", str(exc))
                continue
            key = keys.digest_of(parts)
            hit = ctx.store.cached([key]).get(key)
            if hit is not None and all(
                ctx.artifacts.exists(d["digest"]) for d in hit.outputs.values()
            ):
                planner.outputs[step] = hit.outputs
                result[step] = StepStatus(step, "up-to-date", "cached")
                continue
            last = ctx.store.last_step_run(step)
            if last is None:
                result[step] = StepStatus(step, "never-ran", "never ran")
            elif hit is not None:
                result[step] = StepStatus(step, "stale", "cached outputs were garbage-collected")
            else:
                result[step] = StepStatus(step, "stale", keys.explain(last.key_parts, parts))
        return [result[s] for s in order]
    finally:
        ctx.close()
