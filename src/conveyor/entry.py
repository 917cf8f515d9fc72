"""The `conveyor` executable: a no-op `conveyor run` is answered before the CLI loads.

Typer and pydantic alone take ~0.2 s to import here, more than the whole budget of a run in
which nothing changed; so a plain `conveyor run [--json] [-C DIR]` first asks the fast path,
and only loads the full CLI when something must actually be decided.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conveyor.fastrun import try_fast_run


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


def main() -> None:
    plain = _plain_run(sys.argv[1:])
    if plain is not None:
        from conveyor.exceptions import ConveyorError

        try:
            if try_fast_run(*plain):
                sys.exit(0)
        except ConveyorError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            sys.exit(exc.exit_code)
    from conveyor.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
