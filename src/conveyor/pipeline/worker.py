"""Runs one step inside an executor's worker process and never raises.

Whatever happens (an import error, the step's own exception, an unstorable return value) comes
back as a ``StepResult`` with the traceback, together with everything the step logged so far.
The step's stdout and stderr, including those of subprocesses, go to its log file.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError, StepNotFound
from conveyor.pipeline import tracking
from conveyor.pipeline.task import InputSpec, StepResult, StepTask

if TYPE_CHECKING:
    from conveyor.store.artifacts import ArtifactStore


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so a killed `conveyor run` leaves no orphan."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def watch_owner(owner: int, interval: float = 0.2) -> None:
    """Exit this worker, and the command it runs, as soon as the owning process is gone.

    A pool worker's parent is the fork server, not `conveyor run`, so PR_SET_PDEATHSIG alone
    cannot tie it to the run; a daemon thread polling the owner's pid can.
    """
    import threading

    def watch() -> None:
        while pid_alive(owner):
            time.sleep(interval)
        child = _current_child
        if child is not None and child.poll() is None:
            child.kill()
        os._exit(70)

    threading.Thread(target=watch, name="conveyor-owner-watch", daemon=True).start()


_current_child: subprocess.Popen | None = None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True


def run_step(task: StepTask) -> StepResult:
    """Run a step and return its outcome; never raises."""
    started = time.time()
    tracker = tracking.Tracker(step=task.name, artifacts_url=task.artifacts_url)
    result = StepResult(name=task.name, ok=False, started_at=started, finished_at=started)
    try:
        from conveyor.store.artifacts import ArtifactStore

        store = ArtifactStore(task.artifacts_url)
        store.open()
        with _logging_to(Path(task.log_path)):
            if task.cmd is not None:
                _run_cmd(task, store, tracker, result)
            else:
                _run_python(task, store, tracker, result)
        result.ok = True
    except BaseException as exc:  # noqa: BLE001 - the step's failure is data, not a crash here
        if isinstance(exc, KeyboardInterrupt):
            result.error = "interrupted"
        else:
            result.error = f"{type(exc).__name__}: {exc}"
        result.traceback = _step_traceback(exc, task)
    finally:
        tracking._active = None
        result.finished_at = time.time()
        result.metrics = tracker.metrics
        result.params = tracker.params
        result.artifacts = tracker.artifacts
    return result


def _run_python(
    task: StepTask, store: ArtifactStore, tracker: tracking.Tracker, result: StepResult
) -> None:
    from conveyor.pipeline.outputs import store_return

    os.chdir(task.root)  # relative paths in a step mean the project, as for a cmd step
    func = load_function(task.run or "", task.root)
    args, kwargs = _arguments(func, task, store)
    tracking._active = tracker
    try:
        value = func(*args, **kwargs)
    finally:
        tracking._active = None
    outputs, metrics = store_return(task.name, value, store)
    result.outputs = outputs
    now = time.time()
    tracker.metrics.extend((key, val, 0, now) for key, val in metrics.items())


def load_function(spec: str, root: str) -> Any:
    """Import ``module:function`` with the project root (and its src/) importable.

    Raises:
        StepNotFound: the module or the function does not exist.
    """
    module_name, _, func_name = spec.partition(":")
    for path in (os.path.join(root, "src"), root):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise StepNotFound(
                f"Cannot import module {module_name!r} for step function {spec!r}: no module "
                f"named {exc.name!r} under {root} or on sys.path. Check 'run:' in conveyor.yaml."
            ) from None
        raise
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        names = sorted(n for n, v in vars(module).items() if inspect.isfunction(v))
        raise StepNotFound(
            f"Module {module_name!r} has no function {func_name!r} (step {spec!r}); "
            f"functions there: {', '.join(names) or 'none'}."
        )
    return func


def _arguments(func: Any, task: StepTask, store: ArtifactStore) -> tuple[list, dict]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = [
        p
        for p in (signature.parameters.values() if signature else [])
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for index, (keyword, spec) in enumerate(task.inputs):
        if keyword is not None:
            param = signature.parameters.get(keyword) if signature else None
        else:
            param = positional[index] if index < len(positional) else None
        value = _load_input(spec, param, store, task.trusted_types)
        if keyword is None:
            args.append(value)
        else:
            kwargs[keyword] = value
    kwargs.update(task.params)
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConveyorError(
                f"Step '{task.name}': {task.run}{signature} cannot take the inputs and params "
                f"from conveyor.yaml ({exc}). Make the function's parameters match "
                f"'inputs' ({len(args)} positional, keywords {sorted(kwargs)})."
            ) from None
    return args, kwargs


def _wants_paths(param: inspect.Parameter | None) -> bool:
    """A parameter annotated with Path (or list[Path]) receives file paths, not a DataFrame."""
    if param is None or param.annotation is inspect.Parameter.empty:
        return False
    return "Path" in str(param.annotation)


def _load_input(
    spec: InputSpec,
    param: inspect.Parameter | None,
    store: ArtifactStore,
    trusted: tuple[str, ...] = (),
) -> Any:
    from conveyor.pipeline.outputs import WHOLE, load_output

    if spec.kind == "source":
        if spec.data_digest:
            path = store.path(spec.data_digest)
            if _wants_paths(param):
                return [path]
            import pandas as pd

            return pd.read_parquet(path)
        paths = [Path(p) for p in spec.files]
        if _wants_paths(param):
            annotation = str(param.annotation) if param else ""
            return paths if "list" in annotation.lower() or len(paths) != 1 else paths[0]
        from conveyor.data.sources import read_frame

        return read_frame(paths, spec.format, spec.options)
    if spec.select is not None:
        return load_output(spec.outputs[spec.select], store, trusted_extra=trusted)
    if set(spec.outputs) == {WHOLE}:
        return load_output(spec.outputs[WHOLE], store, trusted_extra=trusted)
    return {
        name: load_output(desc, store, trusted_extra=trusted) for name, desc in spec.outputs.items()
    }


def _run_cmd(
    task: StepTask, store: ArtifactStore, tracker: tracking.Tracker, result: StepResult
) -> None:
    root = Path(task.root)
    for out in task.outs:
        remove_path(root / out)  # a stale out must never pass for a fresh one
        (root / out).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CONVEYOR_STEP"] = task.name
    env["CONVEYOR_PARAMS"] = json.dumps(task.params, sort_keys=True)
    sys.stdout.flush()
    sys.stderr.flush()
    global _current_child
    proc = subprocess.Popen(
        task.cmd or "", shell=True, cwd=root, env=env, preexec_fn=die_with_parent
    )
    _current_child = proc
    try:
        proc.wait()
    finally:
        _current_child = None
    if proc.returncode != 0:
        raise ConveyorError(
            f"command exited with status {proc.returncode}: {task.cmd}"
            + (f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else "")
        )
    from conveyor.pipeline.outputs import _store_path

    outputs = {}
    for out in task.outs:
        path = root / out
        if not path.exists():
            raise ConveyorError(
                f"the command finished but did not write its declared out {out!r}. "
                "Fix the command or the 'outs' list in conveyor.yaml."
            )
        # Outs are linked, not copied, into the store: they turn read-only in the workspace.
        outputs[out] = {**_store_path(f"{task.name}:{out}", path, store, link=True), "path": out}
    result.outputs = outputs
    if task.metrics_file:
        path = root / task.metrics_file
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConveyorError(
                f"cannot read the metrics file {task.metrics_file!r}: {exc}"
            ) from None
        now = time.time()
        tracker.metrics.extend((key, value, 0, now) for key, value in _flatten(data))


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}{key}." if isinstance(value, dict) else "")
            if not isinstance(value, dict) and isinstance(value, int | float):
                if not isinstance(value, bool):
                    yield f"{prefix}{key}", float(value)


def remove_path(path: Path) -> None:
    """Delete a file, a symlink or a whole folder, if it is there."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def _logging_to(log_path: Path) -> Iterator[None]:
    """Send fd 1 and 2 (Python and child processes alike) to the step's log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _step_traceback(exc: BaseException, task: StepTask) -> str:
    """The traceback from the step's own frames on, without Conveyor's machinery above them."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.dirname(__file__))
    user = [i for i, f in enumerate(frames) if not f.filename.startswith(here)]
    lines = traceback.format_exception(exc)
    if user and not isinstance(exc, ConveyorError):
        tb = exc.__traceback__
        for _ in range(user[0]):
            tb = tb.tb_next if tb else None
        lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)
