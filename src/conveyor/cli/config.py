"""``conveyor config``: the JSON Schema of conveyor.yaml, and a check of a file.

``check`` reports every problem at once, one line each (``FILE:LINE: KEY: MESSAGE``, the form
editors and CI logs link to), and exits 2 when there is any. pydantic is imported inside the
commands, so registering this group costs nothing at start-up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.exceptions import ConfigError, ConveyorError

config_app = typer.Typer(
    name="config",
    help="The conveyor.yaml schema, and a check that reports every problem of a file at once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of conveyor.yaml, for editors and CI checks.

    Point your editor's YAML support at it, for instance with a first line
    '# yaml-language-server: $schema=conveyor.schema.json'.
    """
    from conveyor.config.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@config_app.command("check")
def check(
    file: Annotated[
        Path | None,
        typer.Argument(metavar="[FILE]", help="The file to check (default: the project's)."),
    ] = None,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-C",
            metavar="DIR",
            help="Project directory (default: search upwards from here).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Validate a conveyor.yaml and report every problem with its key and line (exit 2)."""
    try:
        path = _file_to_check(file, project)
        problems = _problems(path)
    except ConveyorError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        out = {"file": str(path), "ok": not problems, "problems": problems}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    elif problems:
        for problem in problems:
            line = f":{problem['line']}" if problem["line"] else ""
            key = f" {problem['key']}:" if problem["key"] else ""
            typer.echo(f"{path}{line}:{key} {problem['message']}")
        count = len(problems)
        sys.stderr.write(f"{count} problem{'s' if count != 1 else ''} in {path}.\n")
    else:
        typer.echo(f"{path}: no problems.")
    if problems:
        raise typer.Exit(ConfigError.exit_code)


def _file_to_check(file: Path | None, project: Path | None) -> Path:
    from conveyor.project import CONFIG_FILE, find_root

    if file is None:
        return find_root(project) / CONFIG_FILE
    if project is not None and not file.is_absolute():
        return project / file
    return file


def _problems(path: Path) -> list[dict[str, Any]]:
    """Every problem of the file as {key, line, message}; [] when it loads."""
    from conveyor.config import load_config

    try:
        load_config(path)
    except ConfigError as exc:
        return [
            {"key": issue.location, "line": issue.line, "message": issue.message}
            for issue in exc.issues
        ]
    return []
