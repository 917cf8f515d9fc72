"""The `conveyor` executable: a no-op `conveyor run`, `--version` and the read commands in
their plain forms (``cli/reads.py``) are answered before the CLI loads.

Typer and pydantic alone take ~0.2 s to import here, more than the whole budget of a run in
which nothing changed; so a plain `conveyor run [--json] [-C DIR]` first asks the fast path,
and only loads the full CLI when something must actually be decided.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _plain_run(argv: list[str]) -> tuple[Path | None, bool] | None:
    """(project, as_json) when argv is `run` with at most --json and -C/--project DIR."""
    if not argv or argv[0] != "run":
        return None
    project: Path | None = None
    as_json = False
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "--json":
            as_json = True
        elif arg in ("-C", "--project") and rest:
            project = Path(rest.pop(0))
        elif arg.startswith("--project="):
            project = Path(arg.split("=", 1)[1])
        else:
            return None
    return project, as_json


def version_line() -> str:
    """What `conveyor --version` prints."""
    from conveyor import __version__

    return f"conveyor {__version__}"


def run(argv: list[str]) -> int:
    """Run the command line with these arguments; return the exit code."""
    if argv == ["--version"]:
        sys.stdout.write(version_line() + "\n")
        return 0
    plain = _plain_run(argv)
    if plain is not None:
        from conveyor.cli.run import run_command
        from conveyor.exceptions import ConveyorError

        project, as_json = plain
        try:
            return run_command(project, as_json=as_json)
        except ConveyorError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            return exc.exit_code
        except KeyboardInterrupt:
            sys.stderr.write("Interrupted.\n")
            return 130
    from conveyor.cli import reads

    read = reads.parse(argv)
    if read is not None:
        from conveyor.exceptions import ConveyorError

        try:
            reads.answer(read)
            return 0
        except ConveyorError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            return exc.exit_code
        except KeyboardInterrupt:
            sys.stderr.write("Interrupted.\n")
            return 130
    from conveyor.cli.app import main as cli_main

    saved = sys.argv
    sys.argv = ["conveyor", *argv]
    try:
        cli_main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write(f"{exc.code}\n")
        return 1
    finally:
        sys.argv = saved
    return 0


def main() -> None:
    """The `conveyor` executable."""
    _exit(run(sys.argv[1:]))


def _exit(code: int) -> None:
    """Leave without tearing the interpreter down (~0.1 s with pandas and SQLAlchemy loaded).

    Everything that must outlive the process is committed or closed by then: store
    transactions, the run lock, the executor's workers. Only the output buffers remain.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`conveyor runs | head`)
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
