"""``conveyor serve``: the gateway on uvicorn, one process or several workers.

Workers are separate processes (uvicorn's supervisor), each with its own models and batcher;
they share the store, and their metrics through ``PROMETHEUS_MULTIPROC_DIR``. Each worker gets
one inference thread unless ``serve.threads`` says otherwise: OpenMP's default of one thread
per core collapses when the cores are busy with other workers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from conveyor.exceptions import GatewayError

__all__ = ["load_token", "serve", "worker_app"]

_CONFIG_ENV = "CONVEYOR_SERVE_CONFIG"
MIN_TOKEN = 16


def load_token(config: Any, token_file: Path | None = None) -> str | None:
    """The admin token: ``--token-file``, else ``serve.token_file``, else the environment.

    Raises:
        GatewayError: the file cannot be read, or the token is shorter than 16 characters.
    """
    serve = config.serve
    path = token_file or (Path(config.root) / serve.token_file if serve.token_file else None)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise GatewayError(
                f"Cannot read the gateway token file {path}: {exc.strerror}"
            ) from None
        where = str(path)
    else:
        token = os.environ.get(serve.token_env, "").strip()
        where = f"${serve.token_env}"
    if not token:
        return None
    if len(token) < MIN_TOKEN:
        raise GatewayError(
            f"The gateway token in {where} has {len(token)} characters; use at least {MIN_TOKEN} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    return token


def _thread_env(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def serve(
    config: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token_file: Path | None = None,
    log_level: str = "info",
) -> None:
    """Run the gateway until interrupted (SIGINT/SIGTERM finish in-flight requests first)."""
    import uvicorn

    token = load_token(config, token_file)
    _thread_env(config.serve.threads)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": log_level,
        "lifespan": "on",
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    if workers <= 1:
        from conveyor.gateway.app import Gateway

        uvicorn.Server(uvicorn.Config(Gateway(config, token=token), **common)).run()
        return
    os.environ[_CONFIG_ENV] = str(config.file)
    if token_file is not None:
        os.environ["CONVEYOR_SERVE_TOKEN_FILE"] = str(token_file)
    with tempfile.TemporaryDirectory(prefix="conveyor-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("conveyor.gateway.server:worker_app", factory=True, workers=workers, **common)


def worker_app() -> Any:
    """The app factory each worker process calls (``serve`` passed the config path)."""
    from conveyor.config import load_config
    from conveyor.gateway.app import Gateway

    config = load_config(Path(os.environ[_CONFIG_ENV]))
    token_file = os.environ.get("CONVEYOR_SERVE_TOKEN_FILE")
    token = load_token(config, Path(token_file) if token_file else None)
    return Gateway(config, token=token)
