"""`conveyor data infer|validate|diff`: a source's schema, checks against it, and snapshot diffs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import JsonOpt, ProjectOpt, echo_json, load_project

app = typer.Typer(help="Schemas, validation and diffs of data sources.", no_args_is_help=True)
SourceArg = Annotated[str, typer.Argument(metavar="SOURCE", help="A source in 'data:'.")]


@app.command("infer")
def infer(
    source: SourceArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Default: schemas/SOURCE.yaml."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing schema file.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Write a schema file (types, nulls, ranges, categories, uniqueness) from the data."""
    from conveyor.actions.data import infer_source_schema

    path, schema = infer_source_schema(load_project(project), source, output, force=force)
    typer.echo(f"Wrote {path} ({len(schema.columns)} columns).")


@app.command("validate")
def validate(
    source: SourceArg,
    schema: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Schema file (default: the one in 'validate:')."),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Check a source against its schema; exit 3 if a check fails."""
    from conveyor.actions.data import validate_source

    result = validate_source(load_project(project), source, schema)
    if as_json:
        echo_json(result.to_dict())
    else:
        for failure in result.evidence["failures"]:
            typer.echo(failure["text"])
        verdict = "passed" if result.verdict == "pass" else "failed"
        typer.echo(f"Validation {verdict}: {result.summary}.")
    if result.verdict != "pass":
        raise typer.Exit(3)


@app.command("diff")
def diff(
    a: Annotated[
        str, typer.Argument(metavar="A", help="Snapshot id, SOURCE, SOURCE~N, SOURCE@ALIAS.")
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="The later snapshot, same forms.")],
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """What changed between two snapshots: rows, columns, distributions."""
    from conveyor.actions.data import diff_snapshots
    from conveyor.cli.console import print_data_diff

    result = diff_snapshots(load_project(project), a, b)
    if as_json:
        echo_json(result)
    else:
        print_data_diff(result)
