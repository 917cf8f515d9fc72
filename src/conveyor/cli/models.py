"""`conveyor models list|show|compare|card|alias`: the registry's versions, as people read them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import JsonOpt, ModelOpt, ProjectOpt, echo_json, load_project

app = typer.Typer(
    help="The model registry: versions, lineage, cards, aliases.", no_args_is_help=True
)
ModelArg = Annotated[
    str | None,
    typer.Argument(metavar="NAME", help="Model name (default: model.name in conveyor.yaml)."),
]
VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="Number, 'latest' or an alias.")]


@app.command("list")
def list_(
    name: ModelArg = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """List registered models, or the versions of NAME."""
    from conveyor.actions.models import list_models, list_versions
    from conveyor.cli.console import print_models, print_versions

    config = load_project(project)
    if name is None and config.model is None:
        rows = list_models(config)
        echo_json(rows) if as_json else print_models(rows)
        return
    rows = list_versions(config, name)
    echo_json(rows) if as_json else print_versions(rows)


@app.command("show")
def show(
    name: ModelArg = None,
    version: VersionArg = "latest",
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Show a version: metrics, gate verdicts, signature, artifacts and lineage."""
    from conveyor.actions.models import version_story
    from conveyor.cli.console import print_version

    story = version_story(load_project(project), name, version)
    if as_json:
        echo_json({k: v for k, v in story.items() if k != "plots"})
    else:
        print_version(story)


@app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(metavar="A", help="Version number, 'latest' or alias.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Version number, 'latest' or alias.")],
    name: ModelOpt = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Score A and B on B's holdout and compare them with paired tests."""
    from conveyor.actions.models import compare_versions
    from conveyor.cli.console import print_comparison

    result = compare_versions(load_project(project), name, a, b)
    echo_json(result) if as_json else print_comparison(result)


@app.command("card")
def card(
    name: ModelArg = None,
    version: VersionArg = "latest",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR", help="Also write NAME-vN.md and .html here."),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Print the model card (Markdown); with -o, also write it as Markdown and HTML."""
    from conveyor.actions.models import render_card

    markdown, written = render_card(load_project(project), name, version, output)
    if written:
        for path in written:
            typer.echo(f"Wrote {path}")
    else:
        sys.stdout.write(markdown)


@app.command("alias")
def alias(
    version: Annotated[int, typer.Argument(metavar="VERSION", help="Version number.")],
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Such as staging, production.")],
    name: ModelOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Point ALIAS at VERSION (recorded as an event). Releases build on this."""
    from conveyor.actions.models import set_alias

    config = load_project(project)
    before = set_alias(config, name, version, alias)
    model = name or (config.model.name if config.model else "")
    was = f" (was version {before})" if before is not None else ""
    typer.echo(f"{model}: {alias} -> version {version}{was}")
