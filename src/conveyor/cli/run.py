"""`conveyor run` as a plain function: the fast path first, else the engine with a live display.

Both the Typer command and the executable's shortcut for a plain `conveyor run` call it, so a
run that has work to do does not pay for loading Typer (~60 ms) on top of the engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run_command(
    project: Path | None = None,
    *,
    steps: list[str] | None = None,
    force: bool = False,
    jobs: int | None = None,
    wait: bool = False,
    as_json: bool = False,
) -> int:
    """Run the pipeline and print the outcome; return the exit code (0 if it succeeded).

    Raises:
        ConveyorError: the project, its config or its stores cannot be used.
    """
    if not steps and not force:
        from conveyor.cli.fastrun import try_fast_run

        if try_fast_run(project, as_json):
            return 0
    from conveyor.cli.console import RunDisplay, print_summary
    from conveyor.config import load_config
    from conveyor.pipeline.engine import run_pipeline
    from conveyor.project import CONFIG_FILE, find_root

    config = load_config(find_root(project) / CONFIG_FILE)
    display = RunDisplay(config.topological_order(), enabled=not as_json)
    with display:
        summary = run_pipeline(
            config,
            steps=steps,
            force=force,
            jobs=jobs,
            wait_for_lock=wait,
            listener=display.update,
        )
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
    else:
        print_summary(summary)
    return 0 if summary.ok else 1
