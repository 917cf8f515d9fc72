"""Where steps run: a local process pool by default, Ray for a cluster.

An executor takes a ``StepTask`` and returns a future of its ``StepResult``; it never touches the
metadata store, so any backend that can run a picklable function can be one.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.task import StepResult, StepTask


class Executor(Protocol):
    """Runs steps somewhere and hands back futures of their results."""

    jobs: int

    def submit(self, task: StepTask) -> Future[StepResult]: ...

    def close(self, *, cancel: bool = False) -> None: ...


class LocalExecutor:
    """A pool of worker processes on this machine.

    Workers come from a fork server, so the parent's threads and open database connections are
    never forked; each worker watches the process that started the run and exits when it dies
    (a `kill -9` of `conveyor run` leaves no step running behind it).
    """

    def __init__(self, jobs: int | None = None, preload: tuple[str, ...] = ()) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.preload = preload
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, task: StepTask) -> Future[StepResult]:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            # Modules the fork server imports once, so every worker starts with them loaded
            # (pandas costs ~0.7 s per process here); only takes effect when it first starts.
            ctx.set_forkserver_preload(["conveyor.pipeline.worker", *self.preload])
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        try:
            return self._pool.submit(_run, task)
        except BrokenProcessPool as exc:
            raise ExecutorError(
                "The local worker pool broke (a worker process died). Re-run 'conveyor run'."
            ) from exc

    def close(self, *, cancel: bool = False) -> None:
        if self._pool is not None:
            if cancel:
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.kill()
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


def _init_worker(owner: int) -> None:
    from conveyor.pipeline.worker import watch_owner

    watch_owner(owner)


def _run(task: StepTask) -> StepResult:
    from conveyor.pipeline.worker import run_step

    return run_step(task)


class RayExecutor:
    """Steps as Ray tasks, on a local Ray instance or a cluster (``executor: {kind: ray}``).

    Workers must see the project root and the artifact store at the same paths or URLs: on one
    machine that is automatic; on a cluster, use a shared filesystem or an s3:// artifact store.
    """

    def __init__(self, jobs: int | None = None, address: str | None = None) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.address = address
        self._remote = None
        self._started = False

    def _ensure(self) -> None:
        if self._remote is not None:
            return
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(
                "executor: ray needs Ray installed: pip install 'conveyor-ml[ray]'"
            ) from exc
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    num_cpus=None if self.address else self.jobs,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(
                    f"Cannot start or reach Ray at {self.address or 'a new local instance'}: {exc}"
                ) from exc
            self._started = True
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run)

    def submit(self, task: StepTask) -> Future[StepResult]:
        self._ensure()
        assert self._remote is not None
        return self._remote.remote(task).future()

    def close(self, *, cancel: bool = False) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._remote = None


def make_executor(
    kind: str, jobs: int | None, address: str | None = None, preload: tuple[str, ...] = ()
) -> Executor:
    if kind == "ray":
        return RayExecutor(jobs, address)
    if kind == "local":
        return LocalExecutor(jobs, preload)
    raise ExecutorError(f"Unknown executor {kind!r}; use 'local' or 'ray'.")
