"""`conveyor serve`: the gateway, serving what the store routes to each environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.options import ProjectOpt, load_project


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (each loads the models).")
    ] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Admin/feedback bearer token (default: $CONVEYOR_TOKEN)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    project: ProjectOpt = None,
) -> None:
    """Serve every environment's model versions as the store routes them (the gateway)."""
    from conveyor.gateway.server import serve as run_gateway

    config = load_project(project)
    typer.echo(
        f"Serving project {config.project!r} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''}); docs at /docs, metrics at /metrics"
    )
    run_gateway(
        config, host=host, port=port, workers=workers, token_file=token_file, log_level=log_level
    )
