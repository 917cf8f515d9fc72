"""Shared fixtures: a project written into tmp_path, and helpers to run it for real."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "CONVEYOR_STORE_URL",
        "CONVEYOR_ARTIFACTS",
        "CONVEYOR_EXECUTOR",
        "CONVEYOR_JOBS",
        "CONVEYOR_NO_FASTPATH",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))


class ProjectFactory:
    """Writes conveyor.yaml and Python files into a folder; loads the config on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, content: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())
        # Date the file 10 s back, as if written by an earlier edit: a rewrite still gets a new
        # mtime (now - 10 s moves on), and the file is past the 2 s "racy" window in which
        # the stat caches refuse to trust an mtime.
        stamp = time.time_ns() - 10_000_000_000
        os.utime(path, ns=(stamp, stamp))
        return path

    def config(self):  # -> ProjectConfig
        from conveyor.config import load_config

        return load_config(self.root / "conveyor.yaml")

    def run(self, **kwargs):  # -> RunSummary
        from conveyor.pipeline.engine import run_pipeline

        kwargs.setdefault("jobs", 2)
        return run_pipeline(self.config(), **kwargs)

    def statuses(self, summary) -> dict[str, str]:
        return {s.name: s.status for s in summary.steps}


@pytest.fixture
def project(tmp_path: Path) -> ProjectFactory:
    root = tmp_path / "proj"
    root.mkdir()
    return ProjectFactory(root)


@pytest.fixture
def make_project() -> Callable[[Path], ProjectFactory]:
    return ProjectFactory
