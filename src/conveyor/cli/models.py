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


@app.command("import")
def import_(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="runs:/RUN_ID/PATH, models:/NAME/VERSION, models:/NAME@ALIAS, or a directory "
            "with an MLmodel file.",
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", "-n", metavar="NAME", help="The model's name in Conveyor.")
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            metavar="URI",
            help="MLflow tracking store (default: $MLFLOW_TRACKING_URI).",
        ),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Load a pickle or cloudpickle model file (it runs any code it holds).",
        ),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", metavar="FILE", help="A CSV or Parquet holdout: evaluate and run the gates."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", metavar="COLUMN", help="The holdout's target.")
    ] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", metavar="ALIAS", help="Point ALIAS at the new version (repeat)."),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Register an MLflow model (scikit-learn, XGBoost, LightGBM) with its run's params and
    metrics, after the servability gate (and the project's gates with --data)."""
    from conveyor.actions.mlflow_bridge import import_mlflow
    from conveyor.actions.python_api import Project

    version = import_mlflow(
        source,
        name=name,
        project=Project(load_project(project)),
        tracking_uri=tracking_uri,
        trust_pickle=trust_pickle,
        data=data,
        target=target,
        aliases=tuple(alias or ()),
    )
    if as_json:
        echo_json(
            {
                "model": version.model,
                "version": version.version,
                "aliases": version.aliases,
                "metrics": version.metrics,
                "gates": [{k: g[k] for k in ("name", "verdict", "summary")} for g in version.gates],
                "lineage": version.lineage,
            }
        )
        return
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    gates = ", ".join(f"{g['name']} {g['verdict']}" for g in version.gates)
    typer.echo(f"{version.model}: registered version {version.version}{aliases} from {source}")
    typer.echo(f"  gates: {gates}")


@app.command("export")
def export(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="NAME:VERSION", help="The version: NAME:VERSION, NAME@ALIAS or NAME (latest)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="A new (or empty) folder to write.")
    ],
    format_: Annotated[
        str,
        typer.Option(
            "--format", metavar="FORMAT", help="What to write: mlflow (a model directory)."
        ),
    ] = "mlflow",
    project: ProjectOpt = None,
) -> None:
    """Write a version as an MLflow model directory ('mlflow models serve -m DIR' serves it)."""
    from conveyor.actions.mlflow_bridge import export_mlflow
    from conveyor.actions.python_api import Project
    from conveyor.exceptions import ExportError

    if format_ != "mlflow":
        raise ExportError(f"--format {format_!r}: the one format written is 'mlflow'.")
    written = export_mlflow(ref, out, project=Project(load_project(project)))
    typer.echo(f"Wrote {written} (MLmodel, model/, requirements.txt)")
