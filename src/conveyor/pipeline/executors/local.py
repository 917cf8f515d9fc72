"""Steps in worker processes on this machine: the default executor (``executor: {kind: local}``)."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.executors.base import FIX_DIED, closing_error, run_task
from conveyor.pipeline.task import StepResult, StepTask


class LocalExecutor:
    """Up to ``jobs`` worker processes on this machine, each running one step at a time.

    Workers come from a fork server, so the parent's threads and open database connections are
    never forked; each worker watches the process that started the run and exits when it dies
    (a `kill -9` of `conveyor run` leaves no step running behind it). A worker is reused for the
    next step, which saves importing pandas again, and forgets the project's modules in between
    so that edited code is re-imported. Each worker has its own pipe, so a worker that dies takes
    down only its own step, not the whole pool as in ``concurrent.futures.ProcessPoolExecutor``.
    """

    def __init__(self, jobs: int | None = None, preload: tuple[str, ...] = ()) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.preload = preload
        self._cond = threading.Condition()
        self._queue: deque[tuple[StepTask, Future[StepResult]]] = deque()
        self._idle: list[_Worker] = []
        self._busy: dict[_Worker, threading.Thread] = {}
        self._closing = False
        self._prestart: threading.Thread | None = None
        self._prestart_stop = False

    def prestart(self) -> None:
        """Start the workers now, in the background, so the first step does not wait for them.

        Starting them costs ~0.1 s of CPU in other processes (the fork server, its imports),
        which overlaps with the engine's own start-up instead of delaying the first step.
        """

        def start() -> None:
            for _ in range(self.jobs):
                try:
                    worker = _Worker.start(self.preload)
                except Exception:  # noqa: BLE001 - submit() starts one and reports why
                    return
                with self._cond:
                    if self._closing or self._prestart_stop:
                        stale = worker
                    else:
                        self._idle.append(worker)
                        continue
                stale.stop()  # close() came first: this worker is not wanted any more
                return

        self._prestart_stop = False
        self._prestart = threading.Thread(target=start, name="conveyor-prestart", daemon=True)
        self._prestart.start()

    def submit(self, task: StepTask) -> Future[StepResult]:
        """Queue a step; it starts as soon as fewer than ``jobs`` steps run.

        Raises:
            ExecutorError: the executor is being closed.
        """
        future: Future[StepResult] = Future()
        with self._cond:
            if self._closing:
                raise closing_error(task)
            self._queue.append((task, future))
            self._dispatch()
        return future

    def close(self, *, cancel: bool = False) -> None:
        """Wait for submitted steps, then stop the workers; or, with ``cancel``, kill them now."""
        with self._cond:
            # Workers still starting are stopped by the prestart thread itself: a run that
            # needed none (all cached) must not wait for them.
            self._prestart_stop = True
        with self._cond:
            self._closing = True
            queued = list(self._queue) if cancel else []
            if cancel:
                self._queue.clear()
                for worker in self._busy:
                    worker.cancelled = True
                    worker.kill()
            busy = list(self._busy.values())
        for _task, future in queued:
            future.cancel()
        for thread in busy:
            thread.join()  # quick when cancelling: each sees its worker's death at once
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()
            idle, self._idle = self._idle, []
            self._closing = False
        for worker in idle:
            worker.stop()

    def _dispatch(self) -> None:
        """Hand queued steps to idle (or new) workers while fewer than ``jobs`` are busy."""
        with self._cond:
            while self._queue and len(self._busy) < self.jobs:
                task, future = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                try:
                    worker = self._idle_worker() or _Worker.start(self.preload)
                except Exception as exc:  # out of processes or memory, or no fork server here
                    future.set_exception(
                        ExecutorError(
                            f"Cannot start a worker process for step {task.name!r}: {exc}. "
                            "Free some memory or processes, or lower 'jobs'."
                        )
                    )
                    continue
                thread = threading.Thread(
                    target=self._drive,
                    args=(worker, task, future),
                    name=f"conveyor-step-{task.name}",
                    daemon=True,
                )
                self._busy[worker] = thread
                thread.start()

    def _idle_worker(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.is_alive():
                return worker
            worker.stop()  # died while idle (OOM killer, owner check): the step never started
        return None

    def _drive(self, worker: _Worker, task: StepTask, future: Future[StepResult]) -> None:
        """Run one step on ``worker`` (in a thread of its own) and settle its future."""
        result: StepResult | None = None
        error: BaseException | None = None
        try:
            result = worker.call(task)
        except _WorkerLost:
            error = ExecutorError(worker.obituary(task))
        except Exception as exc:  # the task or its result could not cross the pipe
            worker.kill()
            error = ExecutorError(
                f"Cannot hand step {task.name!r} to a worker process: {type(exc).__name__}: {exc}."
            )
            error.__cause__ = exc
        with self._cond:
            del self._busy[worker]
            if result is not None:
                self._idle.append(worker)
            else:
                worker.stop()
            self._cond.notify_all()
        if result is not None:
            future.set_result(result)
        else:
            future.set_exception(error or ExecutorError(f"Step {task.name!r} was lost."))
        self._dispatch()


_main_lock = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep multiprocessing from re-running the caller's script in the fork server and workers.

    multiprocessing re-imports ``__main__`` (by path or module name) in every new process so
    that functions defined there can be found; our workers only run Conveyor's own functions,
    and re-running a user's script there would repeat its top-level code (a script that calls
    run_pipeline() without an ``if __name__ == "__main__":`` guard would even recurse).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _main_lock:
        saved: dict[str, Any] = {
            k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
        }
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _WorkerLost(Exception):
    """The worker process ended before it sent the step's result."""


class _Worker:
    """One process from the fork server, and the pipe that carries tasks and results."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.cancelled = False

    @classmethod
    def start(cls, preload: tuple[str, ...] = ()) -> _Worker:
        ctx = multiprocessing.get_context("forkserver")
        # Modules the fork server imports once, so every worker starts with them loaded
        # (pandas costs ~0.7 s per process here); only takes effect when it first starts.
        ctx.set_forkserver_preload(["conveyor.pipeline.worker", *preload])
        ours, theirs = ctx.Pipe()
        # Not a daemon: a step may start its own multiprocessing pool, which daemons cannot.
        process = ctx.Process(target=_serve, args=(theirs, os.getpid()), name="conveyor-worker")
        with _main_module_hidden():
            process.start()
        theirs.close()
        worker = cls(process, ours)
        _track(worker)
        return worker

    def call(self, task: StepTask) -> StepResult:
        try:
            self.conn.send(task)
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerLost from None
        # Watch the process too: a subprocess of the step may hold the pipe open after a crash.
        ready = wait_ready([self.conn, self.process.sentinel])
        if self.conn in ready:
            try:
                result: StepResult = self.conn.recv()
            except (EOFError, ConnectionResetError):
                pass
            else:
                return result
        raise _WorkerLost

    def obituary(self, task: StepTask) -> str:
        self.process.join(timeout=5)
        if self.process.is_alive():  # its pipe broke but it lives on: it is no use any more
            self.process.kill()
            self.process.join()
        pid = self.process.pid
        if self.cancelled:
            return (
                f"Step {task.name!r} was stopped: the executor was closed with cancel=True and "
                f"killed its worker process (pid {pid})."
            )
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        step = task.name
        return f"The worker process (pid {pid}) running step {step!r} died ({how}). {FIX_DIED}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    def stop(self) -> None:
        """Ask the worker to exit after its current task; kill it if it does not."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process.close()
        _live.discard(self)


_live: weakref.WeakSet[_Worker] = weakref.WeakSet()
_atexit_armed = False


def _track(worker: _Worker) -> None:
    global _atexit_armed
    if not _atexit_armed:
        # Runs before multiprocessing's own exit hook, which would otherwise wait forever for
        # the (non-daemon) workers of an executor that nobody closed.
        atexit.register(_kill_leftover_workers)
        _atexit_armed = True
    _live.add(worker)


def _kill_leftover_workers() -> None:
    for worker in list(_live):
        worker.kill()


def _serve(conn: Connection, owner: int) -> None:
    """A worker's life: run each task that arrives on ``conn``, until ``None`` or EOF."""
    from conveyor.pipeline.worker import watch_owner

    watch_owner(owner)
    try:
        while (task := conn.recv()) is not None:
            result = run_task(task)
            try:
                conn.send(result)
            except Exception as exc:  # e.g. a logged param that cannot be pickled
                conn.send(
                    StepResult(
                        name=task.name,
                        ok=False,
                        started_at=result.started_at,
                        finished_at=result.finished_at,
                        error=f"ExecutorError: the step's result cannot be sent back: {exc}",
                    )
                )
    except (EOFError, KeyboardInterrupt):
        return  # the executor went away, or Ctrl-C while idle: nothing left to finish
