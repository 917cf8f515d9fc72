"""What the command modules share: the common options, loading the project, printing JSON.

A module of its own rather than part of ``app.py``, because ``app.py`` imports every command
module to register it, and the command modules need these at import time (their signatures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-C",
        metavar="DIR",
        help="Project directory (default: search upwards from here).",
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name.")]
JobsOpt = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, metavar="N", help="Steps at once.")
]
WaitOpt = Annotated[bool, typer.Option(help="Wait for another run in this project.")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="The gateway to run smoke requests and tests against "
        "(default: $CONVEYOR_GATEWAY_URL or http://127.0.0.1:8000).",
    ),
]


def load_project(project: Path | None) -> ProjectConfig:
    """The configuration of the project at ``project``, or the one found upwards from here.

    Raises:
        ProjectError: no conveyor.yaml there or above.
        ConfigError: conveyor.yaml cannot be used as written.
    """
    from conveyor.config import load_config
    from conveyor.project import CONFIG_FILE, find_root, use_code

    root = find_root(project)
    use_code(root)  # a model class from the project's code loads in ci, serve and watch alike
    return load_config(root / CONFIG_FILE)


def echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
