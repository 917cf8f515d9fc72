"""`conveyor runs`, `show`, `events` and `gc`: what ran, what changed, and clearing what is left."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from conveyor.actions.runs import GC_GRACE_HOURS
from conveyor.cli.options import JsonOpt, ProjectOpt, WaitOpt, echo_json, load_project


def runs(
    limit: Annotated[int, typer.Option(metavar="N", help="How many runs to list.")] = 20,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """List recent runs."""
    from conveyor.actions.runs import list_runs, read_project
    from conveyor.cli.console import print_runs

    rows = list_runs(read_project(project), limit=limit)
    if as_json:
        echo_json(rows)
    else:
        print_runs(rows)


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
    from conveyor.actions.runs import describe_run, read_project, step_log
    from conveyor.cli.console import print_run

    if log is not None:
        sys.stdout.write(step_log(load_project(project), run_id, log))
        return
    info = describe_run(read_project(project), run_id)
    if as_json:
        echo_json(info)
    else:
        print_run(info)


def events(
    limit: Annotated[int, typer.Option(metavar="N", help="How many events to list.")] = 50,
    entity_id: Annotated[
        str | None,
        typer.Option(
            "--id", metavar="ID", help="Only events about this run, release, model or source."
        ),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Print the audit log: every state change, oldest first."""
    from conveyor.actions.runs import list_events, read_project

    rows = list_events(read_project(project), limit=limit, entity_id=entity_id)
    if as_json:
        echo_json(rows)
        return
    from conveyor.cli.reads import event_line

    for row in rows:
        typer.echo(event_line(row))


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
    grace_hours: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="HOURS",
            help="Keep unreferenced artifacts stored less than HOURS ago: a run in another "
            "workspace sharing the store may not have recorded them yet.",
        ),
    ] = GC_GRACE_HOURS,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Delete artifacts that no run, cache entry or snapshot refers to (and old runs)."""
    from conveyor.actions.runs import collect_garbage

    report = collect_garbage(
        load_project(project),
        dry_run=dry_run,
        runs_older_than_days=runs_older_than,
        wait_for_lock=wait,
        grace_hours=grace_hours,
    )
    if as_json:
        echo_json(report)
        return
    verb = "Would remove" if dry_run else "Removed"
    runs = f"{len(report['runs_removed'])} runs, " if runs_older_than is not None else ""
    young = report["kept_young"]
    also = f", and {young} unreferenced younger than {grace_hours:g} h" if young else ""
    typer.echo(
        f"{verb} {runs}{len(report['removed'])} artifacts "
        f"({report['freed_bytes'] / 1e6:.1f} MB) and {report['tmp_removed']} leftover temp "
        f"files; kept {report['kept']}{also}."
    )
