"""Where steps run: worker processes on this machine by default, Ray for a cluster.

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

import atexit
import functools
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any, Protocol

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.task import StepResult, StepTask

_CANCEL_WAIT_S = 30.0  # how long close(cancel=True) waits for Ray to confirm the kills
_FIX_DIED = (
    "If it ran out of memory, lower 'jobs' or the data it loads; otherwise look for os._exit() "
    "or a crash in native code in the step."
)


class Executor(Protocol):
    """Runs steps somewhere and hands back futures of their results."""

    jobs: int

    def submit(self, task: StepTask) -> Future[StepResult]: ...

    def close(self, *, cancel: bool = False) -> None: ...


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
                raise _closing_error(task)
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


def _closing_error(task: StepTask) -> ExecutorError:
    return ExecutorError(
        f"Cannot run step {task.name!r}: the executor is closing. Submit steps before close(), "
        "or after it returns."
    )


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
                return self.conn.recv()
            except (EOFError, ConnectionResetError):
                pass
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
        return f"The worker process (pid {pid}) running step {step!r} died ({how}). {_FIX_DIED}"

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
            result = _run(task)
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


def _run(task: StepTask) -> StepResult:
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
        _forget_modules(task.root, before)
        sys.path[:] = path
        if cwd is not None:
            try:
                os.chdir(cwd)
            except OSError:
                pass


def _forget_modules(root: str, before: set[str]) -> None:
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
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_run)

    def submit(self, task: StepTask) -> Future[StepResult]:
        """Queue a step as a Ray task; at most ``jobs`` are handed to Ray at once.

        Raises:
            ExecutorError: Ray is not installed or cannot start, or the executor is closing.
        """
        future: Future[StepResult] = Future()
        with self._cond:
            if self._closing:
                raise _closing_error(task)
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
            f"The Ray worker running step {task.name!r} died ({what}). {_FIX_DIED}"
        )
    else:
        error = ExecutorError(
            f"Ray could not run step {task.name!r} ({what}). Check that every Ray node has "
            "Conveyor installed and sees the project and the artifact store."
        )
    error.__cause__ = exc
    return error


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
