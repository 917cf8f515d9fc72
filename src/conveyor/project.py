"""A project on disk: its conveyor.yaml, its `.conveyor/` folder, and the stores it names."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".conveyor"
CONFIG_FILE = "conveyor.yaml"


@dataclass(frozen=True)
class Paths:
    """Where a project keeps its machine-local files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def run_lock(self) -> Path:
        return self.state_dir / "run.lock"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` that holds conveyor.yaml.

    Raises:
        ProjectError: there is none.
    """
    from conveyor.exceptions import ProjectError

    here = (start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ProjectError(
        f"No {CONFIG_FILE} in {here} or any parent directory. "
        "Run 'conveyor init' to create a project."
    )


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """The commit and dirty flag of the repository holding the project, if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
