"""``conveyor ui``: the dashboard on uvicorn, one process, on loopback unless told otherwise."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

__all__ = ["serve"]


def serve(
    config: ProjectConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    token_file: Path | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the dashboard until interrupted.

    The token is the gateway's (``--token-file``, ``serve.token_file`` or its environment
    variable): with one the acts are offered to whoever signs in with it; without one the
    dashboard is read-only.

    Raises:
        GatewayError: the token file cannot be read, or its token is too short.
    """
    import uvicorn

    from conveyor.dashboard.app import Dashboard
    from conveyor.gateway.server import load_token

    token = load_token(config, token_file)
    if token is not None and host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(
            f"Warning: the dashboard listens on {host} over plain HTTP; its sign-in sends the "
            "token in clear. Put it behind TLS, or keep it on 127.0.0.1.\n"
        )
    app = Dashboard(config, token=token)
    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    ).run()
