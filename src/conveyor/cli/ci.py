"""`conveyor ci`: the CI job of a pull request, with its report written into the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import JobsOpt, JsonOpt, ProjectOpt, WaitOpt, echo_json, load_project

REPORT = "conveyor-report.md"
JUNIT = "conveyor-junit.xml"


def ci(
    ctx: typer.Context,
    report: Annotated[
        Path, typer.Option(metavar="FILE", help="Markdown report (plots go beside it).")
    ] = Path(REPORT),
    junit: Annotated[
        Path, typer.Option(metavar="FILE", help="JUnit XML of the gate results.")
    ] = Path(JUNIT),
    register: Annotated[
        bool, typer.Option(help="Register the candidate when every gate passes.")
    ] = True,
    jobs: JobsOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Validate data, run the pipeline, evaluate the gates, register; exit 3 if a gate fails."""
    from conveyor.actions.ci import run_ci
    from conveyor.cli.console import RunDisplay, print_ci, print_gate

    config = load_project(project)
    display = RunDisplay(config.topological_order(), enabled=not as_json)
    gate_printer = (lambda _r: None) if as_json else print_gate
    with display:
        outcome = run_ci(
            config,
            report_path=_in_project(ctx, "report", report, config.root),
            junit_path=_in_project(ctx, "junit", junit, config.root),
            register=register,
            listener=display.update,
            jobs=jobs,
            wait_for_lock=wait,
            on_gate=gate_printer,
        )
    if as_json:
        echo_json({k: v for k, v in outcome.report.items() if k != "plots"})
    else:
        print_ci(outcome)
    if not outcome.passed:
        raise typer.Exit(3)


def _in_project(ctx: typer.Context, option: str, path: Path, root: Path) -> Path:
    """Where an output goes: a path the user typed is relative to where they typed it; the
    default is in the project, which `-C DIR` may place elsewhere, and reads relative to the
    working directory when it is inside it."""
    source = ctx.get_parameter_source(option)
    if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
        return path
    path = Path(root) / path
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
