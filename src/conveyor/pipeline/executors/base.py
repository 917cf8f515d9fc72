"""The executor contract, and what every backend shares: running one step in a reused process.

An executor takes a ``StepTask`` and returns a future of its ``StepResult``; it never touches the
metadata store, so any backend that can run a picklable function can be one. The contract, which
``tests/pipeline/test_executors.py`` checks for every backend:

- at most ``jobs`` steps run at once; more submissions wait in a queue;
- a step that fails is a result with ``ok=False``; only a lost worker (killed, ``os._exit``, out
  of memory) fails the future, with an ``ExecutorError``, and it fails no other step's future;
- ``close()`` waits for what was submitted; ``close(cancel=True)`` returns at once and kills the
  workers of running steps; either way the executor can be used again afterwards.
"""

from __future__ import annotations

import importlib
import os
import sys
from concurrent.futures import Future
from typing import Protocol

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.task import StepResult, StepTask

# The advice every backend gives when a worker process dies under a step.
FIX_DIED = (
    "If it ran out of memory, lower 'jobs' or the data it loads; otherwise look for os._exit() "
    "or a crash in native code in the step."
)


class Executor(Protocol):
    """Runs steps somewhere and hands back futures of their results."""

    jobs: int
    """How many steps may run at once."""

    def submit(self, task: StepTask) -> Future[StepResult]:
        """Queue a step; its future settles with the result, or ``ExecutorError`` if lost."""
        ...

    def close(self, *, cancel: bool = False) -> None:
        """Wait for submitted steps (or, with ``cancel``, kill them); the executor stays usable."""
        ...


def closing_error(task: StepTask) -> ExecutorError:
    """The error for a step submitted while ``close()`` runs."""
    return ExecutorError(
        f"Cannot run step {task.name!r}: the executor is closing. Submit steps before close(), "
        "or after it returns."
    )


def run_task(task: StepTask) -> StepResult:
    """Run one step in this (reused) worker, then undo what the step did to the process."""
    from conveyor.pipeline.worker import run_step

    try:
        cwd: str | None = os.getcwd()
    except OSError:  # an earlier step's project folder was deleted under us
        cwd = None
    path = list(sys.path)
    before = set(sys.modules)
    try:
        return run_step(task)
    finally:
        forget_modules(task.root, before)
        sys.path[:] = path
        if cwd is not None:
            try:
                os.chdir(cwd)
            except OSError:
                pass


def forget_modules(root: str, before: set[str]) -> None:
    """Drop the modules a step imported from its project, so the next step sees edits to them.

    Installed packages stay imported (that is what reusing a worker is for), also when the
    virtual environment lives inside the project (``.venv/``), and so does Conveyor itself.
    """
    project = os.path.join(os.path.realpath(root), "")
    installed = tuple(os.path.join(os.path.realpath(p), "") for p in {sys.prefix, sys.exec_prefix})

    def from_project(place: object) -> bool:
        if not isinstance(place, str) or not os.path.isabs(place):
            return False  # built-in, frozen, or a namespace package's relative entry
        real = os.path.realpath(place)
        return (
            real.startswith(project)
            and not real.startswith(installed)
            and f"{os.sep}site-packages{os.sep}" not in real
        )

    for name in set(sys.modules) - before:
        if name == "conveyor" or name.startswith("conveyor."):
            continue
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        places = [file] if file else list(getattr(module, "__path__", None) or [])
        if any(from_project(p) for p in places):
            del sys.modules[name]
    importlib.invalidate_caches()  # a module file added to the project is found next time
