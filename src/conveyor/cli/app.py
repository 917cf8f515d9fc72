"""The `conveyor` command: the Typer app, and the table of its commands in `--help` order.

Each command lives in the module of its group (``project``, ``history``, ``ci``, ``serve``,
``ui``, ``releases``, ``monitor``, ``export``, ``data``, ``models``, ``config``) and calls one
library function. Heavy modules (pydantic, SQLAlchemy, pandas) are imported inside the commands, so
that `conveyor --help` stays fast; a plain `conveyor run` and `conveyor --version` never get
here (see ``main``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli import (
    ci,
    data,
    export,
    history,
    log,
    models,
    monitor,
    project,
    releases,
    serve,
    ui,
)
from conveyor.cli.config import config_app
from conveyor.exceptions import ConveyorError


class _Group(typer.core.TyperGroup):
    """Turns a ConveyorError into 'Error: ...' on stderr and its exit code: the CLI's job alone."""

    # typer hands every command its own Context subclass; the base class names click's
    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
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


def _print_version(value: bool) -> None:
    if value:
        from conveyor.cli.main import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # Only `--version`, which the executable answers before Typer loads; here for the help
    # text and for `python -m conveyor.cli.app`.
    pass


app.command()(project.init)
app.command()(project.run)
app.command()(project.status)
app.command()(history.runs)
app.command()(history.show)
app.command()(history.events)
app.command()(history.gc)
app.command()(ci.ci)
app.command()(serve.serve)
app.command()(ui.ui)
app.command()(releases.deploy)
app.command()(releases.rollback)
app.command()(releases.releases)
app.command()(monitor.monitor)
app.command()(monitor.watch)
app.command()(export.export)
app.add_typer(data.app, name="data", cls=_Group)
app.add_typer(models.app, name="models", cls=_Group)
app.add_typer(releases.app, name="release", cls=_Group)
app.add_typer(config_app, name="config", cls=_Group)
app.add_typer(log.app, name="log", cls=_Group)


def main() -> None:
    """Entry point; usage errors exit 2, Ctrl-C 130, Conveyor errors with their own code."""
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
