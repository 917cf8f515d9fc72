"""Where steps run: worker processes on this machine by default, Ray for a cluster.

``base`` holds the ``Executor`` contract and what backends share; ``local`` and ``ray`` are the
two backends. Ray is imported only when a Ray executor first submits a step.
"""

from __future__ import annotations

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.executors.base import Executor
from conveyor.pipeline.executors.local import LocalExecutor
from conveyor.pipeline.executors.ray import RayExecutor

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor"]


def make_executor(
    kind: str, jobs: int | None, address: str | None = None, preload: tuple[str, ...] = ()
) -> Executor:
    """The executor named in conveyor.yaml's ``executor.kind``.

    Args:
        kind: ``"local"`` or ``"ray"``.
        jobs: how many steps may run at once (None: the number of CPUs).
        address: for Ray, the cluster to join (``ray://host:10001``); None starts a local one.
        preload: modules local workers start with already imported (Ray workers ignore it).

    Raises:
        ExecutorError: ``kind`` is neither.
    """
    if kind == "ray":
        return RayExecutor(jobs, address)
    if kind == "local":
        return LocalExecutor(jobs, preload)
    raise ExecutorError(f"Unknown executor {kind!r}; use 'local' or 'ray'.")
