"""How an exported file installs Conveyor: the exact version that wrote it, with the extras the
project's configuration needs, or whatever the team passes with ``--install``.

A generated file that says ``pip install conveyor-ml`` installs whatever is newest (or nothing,
before the package is published), and without the PostgreSQL driver or s3fs the project's
store cannot even be opened. So the files pin ``conveyor-ml==<this version>`` and name each
extra with the reason it is there, derived from the configuration rather than guessed.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.exceptions import ExportError

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

__all__ = ["PACKAGE", "Install", "extras_for", "install_spec"]

PACKAGE = "conveyor-ml"
KNOWN_EXTRAS = ("postgres", "s3", "xgboost", "lightgbm", "torch", "ray")
# Folders of a project that hold no code of its own: never scanned for imports, never copied.
SKIP_DIRS = frozenset(
    {".conveyor", ".git", ".venv", "venv", "node_modules", "build", "dist", "__pycache__"}
)
# The installed distribution's version: conveyor.__version__ is the same string (pyproject.toml
# sets both, and tests/packaging checks the wheel's name), read without importing the package's
# API, as export/ imports only config and exceptions.
__version__ = importlib.metadata.version(PACKAGE)
_FLAVOUR_IMPORT = re.compile(r"^\s*(?:import|from)\s+(xgboost|lightgbm|torch)\b", re.MULTILINE)


@dataclass(frozen=True)
class Install:
    """What a generated file installs, and why: ``spec`` is the shell words after
    ``pip install``; ``reasons`` one line per extra, for the file's comments."""

    spec: str
    extras: tuple[str, ...]
    reasons: tuple[str, ...]
    custom: bool  # the team's --install, not the pinned release


def extras_for(config: ProjectConfig, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The extras the project needs, each with why: its store URL, artifacts URL, the model
    libraries its own code imports, then any the caller names (``--extra``).

    Raises:
        ExportError: an extra that ``conveyor-ml`` does not have.
    """
    reasons: dict[str, str] = {}
    url = config.store.url.lower()
    if url.startswith(("postgresql", "postgres")):
        reasons["postgres"] = "postgres: the store (store.url) is PostgreSQL, read through psycopg"
    if config.store.artifacts.lower().startswith(("s3://", "s3a://")):
        reasons["s3"] = "s3: the artifacts (store.artifacts) are in S3, read through s3fs"
    for flavour in sorted(_imported_flavours(Path(config.root))):
        reasons[flavour] = (
            f"{flavour}: the project's code imports {flavour}, whose models Conveyor registers "
            "in their own format and converts to ONNX"
        )
        if flavour == "torch":  # PyPI's default torch wheel carries CUDA: gigabytes for a CPU
            reasons[flavour] += (
                "; for a CPU-only image, install torch from https://download.pytorch.org/whl/cpu "
                "first"
            )
    for name in extra:
        if name not in KNOWN_EXTRAS:
            raise ExportError(
                f"Extra {name!r} is not one of {PACKAGE}'s extras; choose from "
                f"{', '.join(KNOWN_EXTRAS)}."
            )
        reasons.setdefault(name, f"{name}: asked for with --extra")
    return reasons


def install_spec(
    config: ProjectConfig, *, install: str | None = None, extra: tuple[str, ...] = ()
) -> Install:
    """The words after ``pip install`` that install Conveyor for this project.

    Args:
        config: the project, as :func:`conveyor.config.load_config` returns it.
        install: the team's own spec instead of the release on PyPI: a wheel's path, a
            ``git+https://`` URL, or index options with a requirement (``--index-url URL
            conveyor-ml==1.2.0``), written into the files as shell words. The extras are
            then added as a second requirement on the name, which pip merges with it.
        extra: extras to add to the derived ones.

    Raises:
        ExportError: an unknown extra, or an install spec that is not one line of text.
    """
    reasons = extras_for(config, extra)
    names = tuple(reasons)
    bracket = f"[{','.join(names)}]" if names else ""
    if install is None:
        spec = f'"{PACKAGE}{bracket}=={__version__}"'
        return Install(spec, names, tuple(reasons.values()), custom=False)
    install = install.strip()
    if not install or "\n" in install or not install.isprintable():
        raise ExportError(
            f"Install spec {install!r} is not one line of text; pass what follows 'pip install', "
            "such as a wheel's path or 'git+https://host/repo.git'."
        )
    spec = install if not names else f'{install} "{PACKAGE}{bracket}"'
    return Install(spec, names, tuple(reasons.values()), custom=True)


def project_code(root: Path) -> list[str]:
    """The project's own Python: top-level modules and packages (folders holding ``.py``
    files), by name, sorted. What a model class or a step needs on ``PYTHONPATH``."""
    names: list[str] = []
    for entry in sorted(Path(root).iterdir()):
        if entry.name.startswith(".") or entry.name in SKIP_DIRS:
            continue
        if entry.is_file() and entry.suffix == ".py":
            names.append(entry.name)
        elif entry.is_dir() and _holds_python(entry):
            names.append(entry.name)
    return names


def _holds_python(folder: Path) -> bool:
    return any(
        path.suffix == ".py" and not set(path.relative_to(folder).parts) & SKIP_DIRS
        for path in folder.rglob("*.py")
    )


def _imported_flavours(root: Path) -> set[str]:
    found: set[str] = set()
    for name in project_code(root):
        entry = root / name
        files = [entry] if entry.is_file() else sorted(entry.rglob("*.py"))
        for file in files:
            try:
                found.update(_FLAVOUR_IMPORT.findall(file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                continue  # unreadable code is not evidence of an import
    return found


def pip_command(root: Path, install: Install) -> str:
    """The shell command a CI job runs: the project's requirements and Conveyor in one pip
    call, so the resolver holds the pin against whatever ``requirements.txt`` says."""
    requirements = " -r requirements.txt" if (Path(root) / "requirements.txt").is_file() else ""
    return f"python -m pip install --upgrade pip\npip install{requirements} {install.spec}"


def install_comment(install: Install) -> str:
    """Lines for a file's comments: what is installed, and why each extra."""
    lines = [
        "Conveyor is installed from the spec given to --install."
        if install.custom
        else f"Conveyor {__version__}, the version that wrote this file; export again after "
        "upgrading."
    ]
    # A store named only by CONVEYOR_STORE_URL/CONVEYOR_ARTIFACTS (a CI secret, a container's
    # environment) is invisible at export time; without its driver the file fails at run time.
    lines += [f"Extra {reason}." for reason in install.reasons] or [
        "No extras: conveyor.yaml's store is SQLite on local files (a PostgreSQL store.url adds "
        "[postgres], an s3:// store.artifacts [s3]; or pass --extra).",
        "If CONVEYOR_STORE_URL or CONVEYOR_ARTIFACTS will name PostgreSQL or S3 where this runs, "
        "export again with --extra postgres (or s3).",
    ]
    return "\n".join(lines)
