"""A project on disk: its conveyor.yaml, its `.conveyor/` folder, and the stores it names."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".conveyor"
CONFIG_FILE = "conveyor.yaml"
ROOT_ENV = "CONVEYOR_PROJECT_ROOT"  # the project whose code models import, for child processes


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


def use_code(root: Path) -> None:
    """Make the project's own modules importable here and in the processes started from here.

    A model may need the project's code to load (a custom model class, a transformer of its
    own in a scikit-learn pipeline) wherever Conveyor loads it: ``ci``, ``serve``, ``watch``,
    the servability check's subprocess. The project's ``src/`` (when it has one) and its root go
    first on ``sys.path``, as for a pipeline step, and ``CONVEYOR_PROJECT_ROOT`` names the root
    for child processes.
    """
    root = Path(root).resolve()
    os.environ[ROOT_ENV] = str(root)
    for path in (root, root / "src"):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))


def code_root() -> Path | None:
    """The project whose code a model loaded here imports, made importable: the one
    ``CONVEYOR_PROJECT_ROOT`` names, else the one found upwards from the working folder (the
    gateway's image runs in the project's folder); None outside any project."""
    named = os.environ.get(ROOT_ENV)
    if named:
        root: Path | None = Path(named)
    else:
        try:
            root = find_root()
        except Exception:  # ProjectError: no conveyor.yaml here or above
            root = None
    if root is not None:
        use_code(root)
    return root


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
