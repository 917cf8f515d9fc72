"""`conveyor ui`: the dashboard, read-only unless a token is given."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import ProjectOpt, load_project


def ui(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8090,
    token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Token that unlocks promote/pause/resume/abort/rollback (default: the "
            "gateway's, $CONVEYOR_TOKEN); without one the dashboard is read-only.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    project: ProjectOpt = None,
) -> None:
    """Browse runs, models, releases, monitoring and the audit log in a web page."""
    from conveyor.dashboard.server import serve

    config = load_project(project)
    typer.echo(f"Dashboard of project {config.project!r} on http://{host}:{port}/ (Ctrl-C stops)")
    serve(config, host=host, port=port, token_file=token_file, log_level=log_level)
