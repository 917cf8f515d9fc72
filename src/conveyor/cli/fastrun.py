"""A no-op `conveyor run`, answered and printed without loading Typer, pydantic or SQLAlchemy.

Shared by the `conveyor` executable (before the CLI loads) and the `run` command itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def try_fast_run(project: Path | None, as_json: bool) -> bool:
    """Record and print a fully cached run if nothing changed; False if the engine must run."""
    if os.environ.get("CONVEYOR_NO_FASTPATH"):
        return False
    from conveyor.pipeline.fastpath import fast_run
    from conveyor.project import find_root

    done = fast_run(find_root(project))
    if done is None:
        return False
    if as_json:
        steps = [
            {
                "step": name,
                "status": "cached",
                "reason": "unchanged",
                "duration_s": 0.0,
                "error": None,
                "log": None,
                "metrics": metrics,
            }
            for name, metrics in done["steps"]
        ]
        summary = {
            "run_id": done["run_id"],
            "status": "succeeded",
            "duration_s": round(done["duration_s"], 4),
            "restored_from_cache": True,
            "steps": steps,
        }
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return True
    lines = [f"  ✓ {name}  cached" for name, _metrics in done["steps"]]
    lines.append(
        f"Run {done['run_id']}: nothing changed; all {len(done['steps'])} steps restored "
        f"from cache in {done['duration_s']:.3f} s."
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return True
