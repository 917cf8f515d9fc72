"""`conveyor log compact|migrate`: the prediction log's upkeep."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.options import JsonOpt, ProjectOpt, echo_json, load_project

app = typer.Typer(
    help="Upkeep of the prediction log (served requests and labels).", no_args_is_help=True
)


@app.command("compact")
def compact(
    wait: Annotated[
        bool, typer.Option(help="If another compaction is running, wait for it instead of failing.")
    ] = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Merge each day's small files, then delete the days past serve.log.retain / max_gb."""
    from conveyor.actions.log import compact_log

    done = compact_log(load_project(project), wait=wait)
    if as_json:
        echo_json(done)
        return
    typer.echo(
        f"Compacted {done['files_merged']} files into {done['files_written']} "
        f"({done['rows_moved']:,} rows) in {done['folders_compacted']} day partitions; "
        f"deleted {len(done['days_deleted'])} days ({done['bytes_deleted'] / 1e6:.1f} MB)."
    )


@app.command("migrate")
def migrate(as_json: JsonOpt = False, project: ProjectOpt = None) -> None:
    """Move the rows of the old request_log and feedback tables into the prediction log."""
    from conveyor.actions.log import migrate_log

    moved = migrate_log(load_project(project))
    if as_json:
        echo_json(moved)
        return
    typer.echo(
        f"Moved {moved['requests']:,} logged requests and {moved['labels']:,} labels into the "
        "prediction log."
    )
