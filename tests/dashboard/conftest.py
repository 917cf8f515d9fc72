"""Where the dashboard tests keep their screenshots, said at the end of the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def shots_folder() -> Path:
    """``$CONVEYOR_TEST_ARTIFACTS/dashboard`` when set (CI keeps that folder), else
    ``tests/dashboard/artifacts/`` (ignored by git), emptied at the start of each run."""
    base = os.environ.get("CONVEYOR_TEST_ARTIFACTS")
    return Path(base) / "dashboard" if base else HERE / "artifacts"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    folder = shots_folder()
    pictures = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if pictures:
        terminalreporter.write_sep("-", "dashboard screenshots")
        terminalreporter.write_line(f"{len(pictures)} screenshots in {folder}:")
        terminalreporter.write_line(", ".join(p.stem for p in pictures))
