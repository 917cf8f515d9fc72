"""Steps as Ray tasks, on a local Ray instance or a cluster (``executor: {kind: ray}``).

Ray is imported only when the first step is submitted, so choosing this module costs nothing
for a project that runs locally.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.executors.base import FIX_DIED, closing_error, run_task
from conveyor.pipeline.task import StepResult, StepTask

_CANCEL_WAIT_S = 30.0  # how long close(cancel=True) waits for Ray to confirm the kills


class RayExecutor:
    """Steps as Ray tasks, on a local Ray instance or a cluster (``executor: {kind: ray}``).

    Uses the Ray instance this process is already connected to, if any; otherwise starts (or, with
    ``address``, joins) one and shuts it down on ``close()``. Workers must see the project root
    and the artifact store at the same paths or URLs, and have Conveyor installed: on one machine
    that is automatic; on a cluster, use a shared filesystem or an s3:// artifact store.
    """

    def __init__(self, jobs: int | None = None, address: str | None = None) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.address = address
        self._remote: Any = None
        self._started = False
        self._cond = threading.Condition()
        self._queue: deque[tuple[StepTask, Future[StepResult]]] = deque()
        self._running: dict[Any, tuple[StepTask, Future[StepResult]]] = {}  # ObjectRef → step
        self._cancelled: set[Any] = set()
        self._closing = False

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
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise ExecutorError(
                    f"Cannot start or reach Ray at {self.address or 'a new local instance'}: "
                    f"{exc}. Check 'executor.address' in conveyor.yaml, or use 'local'."
                ) from exc
            self._started = True
        # max_retries=0: a step is not idempotent enough to be re-run behind the user's back.
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_task)

    def submit(self, task: StepTask) -> Future[StepResult]:
        """Queue a step as a Ray task; at most ``jobs`` are handed to Ray at once.

        Raises:
            ExecutorError: Ray is not installed or cannot start, or the executor is closing.
        """
        future: Future[StepResult] = Future()
        with self._cond:
            if self._closing:
                raise closing_error(task)
            self._ensure()
            self._queue.append((task, future))
            self._dispatch()
        return future

    def close(self, *, cancel: bool = False) -> None:
        """Wait for submitted steps, or with ``cancel`` kill their Ray workers; then disconnect
        from Ray if this executor started it."""
        with self._cond:
            self._closing = True
            queued = list(self._queue) if cancel else []
            running = dict(self._running) if cancel else {}
            if cancel:
                self._queue.clear()
                self._cancelled.update(running)
        for _task, future in queued:
            future.cancel()
        if running:
            import ray

            for ref in running:
                ray.cancel(ref, force=True)  # force: kill the worker, whatever the step does
            wait_futures([future for _task, future in running.values()], timeout=_CANCEL_WAIT_S)
        with self._cond:
            if cancel:  # Ray did not confirm some kills in time: settle those futures anyway
                for ref in list(self._running):
                    self._settle(ref, None)
            while self._queue or self._running:
                self._cond.wait()
            self._closing = False
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._remote = None

    def _dispatch(self) -> None:
        with self._cond:
            while self._queue and len(self._running) < self.jobs:
                task, future = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    ref = self._remote.remote(task)
                except Exception as exc:  # e.g. the task cannot be serialised
                    future.set_exception(_ray_error(task, exc))
                    continue
                self._running[ref] = (task, future)
                ref.future().add_done_callback(functools.partial(self._settle, ref))

    def _settle(self, ref: Any, done: Future[StepResult] | None) -> None:
        """Pass a Ray task's outcome to the step's future (``done`` None: give up waiting)."""
        with self._cond:
            entry = self._running.pop(ref, None)
            cancelled = ref in self._cancelled
            self._cancelled.discard(ref)
            self._cond.notify_all()
        if entry is None:
            return  # settled already
        task, future = entry
        exc = None if done is None else done.exception()
        if done is not None and exc is None:
            future.set_result(done.result())
        elif exc is None or cancelled:  # exc None here: Ray never answered the cancel
            future.set_exception(
                ExecutorError(
                    f"Step {task.name!r} was stopped: the executor was closed with cancel=True "
                    "and Ray killed its worker."
                )
            )
        else:
            future.set_exception(_ray_error(task, exc))
        self._dispatch()


def _ray_error(task: StepTask, exc: BaseException) -> ExecutorError:
    import ray.exceptions as rex

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    lost = (
        rex.WorkerCrashedError,
        rex.OutOfMemoryError,
        rex.NodeDiedError,
        rex.LocalRayletDiedError,
        rex.ObjectLostError,
    )
    if isinstance(exc, lost):
        error = ExecutorError(
            f"The Ray worker running step {task.name!r} died ({what}). {FIX_DIED}"
        )
    else:
        error = ExecutorError(
            f"Ray could not run step {task.name!r} ({what}). Check that every Ray node has "
            "Conveyor installed and sees the project and the artifact store."
        )
    error.__cause__ = exc
    return error
