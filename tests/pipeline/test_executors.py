"""The executor contract: what every backend must do, run against the process pool and real Ray.

Each test takes the ``executor`` fixture, parametrized over ``local`` (``LocalExecutor``) and
``ray`` (``RayExecutor`` on one Ray instance started once per session). A new backend is done
when it passes this file.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conveyor.exceptions import ExecutorError
from conveyor.pipeline.executors import Executor, LocalExecutor, RayExecutor, make_executor
from conveyor.pipeline.outputs import load_output
from conveyor.pipeline.task import InputSpec, StepResult, StepTask
from conveyor.pipeline.worker import pid_alive
from conveyor.store.artifacts import ArtifactStore

EXECUTORS = ["local", pytest.param("ray", marks=pytest.mark.ray)]
TIMEOUT = 60  # seconds a future may take before the test calls it a hang

STEPS = """
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import conveyor


def frame():
    return pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"]})


def combine(frame, scale, offset=0):
    return {"total": float(frame["x"].sum()) * scale + offset, "names": list(frame["name"])}


def boom():
    conveyor.log_metric("loss", 0.5)
    conveyor.log_metric("loss", 0.25)
    raise ValueError("bad input")  # BOOM_LINE


def chatty():
    print("step stdout", flush=True)
    print("step stderr", file=sys.stderr, flush=True)
    child = "import sys; print('child stdout'); print('child stderr', file=sys.stderr)"
    subprocess.run([sys.executable, "-c", child], check=True)


def nap(seconds):
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]


def hang(tag):
    Path(f"{tag}.tmp").write_text(str(os.getpid()))
    os.replace(f"{tag}.tmp", f"{tag}.pid")  # the test reads the pid as soon as the file exists
    time.sleep(120)


def version():
    return {"version": VERSION}


VERSION = 1
"""


def _wait_for(path: Path, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the whole session: starting Ray takes seconds, a test must not."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # someone else's instance: use it, and leave it running
        yield
        return
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: skip, and say why
        pytest.skip(f"Ray cannot start on this machine: {type(exc).__name__}: {exc}")
    yield
    ray.shutdown()


def _ray_vendored_dir() -> str:
    """Where Ray keeps the packages it vendors, found without importing Ray."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    return os.path.join(list(spec.submodule_search_locations)[0], "thirdparty_files")


def _make(kind: str, request: pytest.FixtureRequest, jobs: int = 2) -> Executor:
    if kind == "ray":
        request.getfixturevalue("ray_session")
        return RayExecutor(jobs=jobs)
    return LocalExecutor(jobs=jobs)


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    exe = _make(request.param, request)
    yield exe
    exe.close(cancel=True)


class Workspace:
    """A project folder with steps.py, an open artifact store, and a StepTask builder."""

    def __init__(self, base: Path) -> None:
        self.root = base / "proj"
        self.root.mkdir()
        (self.root / "steps.py").write_text(STEPS)
        self.store = ArtifactStore(str(base / "artifacts")).open()
        self.logs = base / "logs"

    def task(
        self, name: str, run: str | None = None, cmd: str | None = None, **fields: Any
    ) -> StepTask:
        """A task for ``steps:<name>`` unless ``run`` or ``cmd`` says otherwise."""
        return StepTask(
            name=name,
            run=run if run is not None or cmd is not None else f"steps:{name}",
            cmd=cmd,
            root=str(self.root),
            artifacts_url=self.store.url,
            log_path=str(self.logs / f"{name}.log"),
            **fields,
        )


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.store.close()


def _result(future: Future[StepResult]) -> StepResult:
    result = future.result(timeout=TIMEOUT)
    assert isinstance(result, StepResult)
    return result


# -- running one step ----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_dataframe_return_is_stored_as_parquet_and_loads_back_equal(executor, ws):
    result = _result(executor.submit(ws.task("frame")))
    assert result.ok, result.traceback
    assert result.name == "frame" and result.error is None
    assert set(result.outputs) == {"return"}
    desc = result.outputs["return"]
    assert desc["format"] == "parquet"
    assert ws.store.exists(desc["digest"])
    ws.store.verify(desc["digest"])
    expected = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"]})
    pd.testing.assert_frame_equal(load_output(desc, ws.store), expected)
    assert result.started_at <= result.finished_at


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_upstream_outputs_and_params_reach_the_function(executor, ws):
    first = _result(executor.submit(ws.task("frame")))
    assert first.ok, first.traceback
    spec = InputSpec(ref="frame", kind="output", outputs=first.outputs)
    task = ws.task("combine", inputs=(("frame", spec),), params={"scale": 10, "offset": 4})
    result = _result(executor.submit(task))
    assert result.ok, result.traceback
    value = load_output(result.outputs["return"], ws.store)
    assert value == {"total": 64.0, "names": ["a", "b", "c"]}
    assert [(key, val) for key, val, _i, _t in result.metrics] == [("total", 64.0)]


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_failing_step_reports_error_user_traceback_and_metrics_logged_before(executor, ws):
    line = STEPS.splitlines().index('    raise ValueError("bad input")  # BOOM_LINE') + 1
    result = _result(executor.submit(ws.task("boom")))
    assert not result.ok
    assert result.error == "ValueError: bad input"
    assert f'{ws.root / "steps.py"}", line {line}, in boom' in result.traceback
    assert "conveyor/pipeline" not in result.traceback  # the user's frames only
    assert [(key, val, i) for key, val, i, _t in result.metrics] == [
        ("loss", 0.5, 0),
        ("loss", 0.25, 1),
    ]
    assert result.outputs == {}


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_output_of_the_step_and_its_subprocess_goes_to_the_log_file(executor, ws):
    task = ws.task("chatty")
    result = _result(executor.submit(task))
    assert result.ok, result.traceback
    log = Path(task.log_path).read_text()
    for line in ("step stdout", "step stderr", "child stdout", "child stderr"):
        assert line in log, f"{line!r} missing from the step log:\n{log}"


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_cmd_step_stores_its_outs_and_reads_its_metrics_file(executor, ws):
    (ws.root / "make.py").write_text(
        textwrap.dedent(
            """
            import json, os
            params = json.loads(os.environ["CONVEYOR_PARAMS"])
            os.makedirs("out", exist_ok=True)
            open("out/result.txt", "w").write("x" * params["n"])
            json.dump({"score": 0.5, "nested": {"a": 1}}, open("out/metrics.json", "w"))
            print("made it")
            """
        )
    )
    task = ws.task(
        "make",
        cmd=f"{shlex.quote(sys.executable)} make.py",
        params={"n": 3},
        outs=("out/result.txt", "out/metrics.json"),
        metrics_file="out/metrics.json",
    )
    result = _result(executor.submit(task))
    assert result.ok, result.error
    assert set(result.outputs) == {"out/result.txt", "out/metrics.json"}
    out = result.outputs["out/result.txt"]
    assert out["path"] == "out/result.txt"
    assert ws.store.read_bytes(out["digest"]) == b"xxx"
    assert {key: val for key, val, _i, _t in result.metrics} == {"score": 0.5, "nested.a": 1.0}
    assert "made it" in Path(task.log_path).read_text()


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_a_worker_reimports_the_project_code_for_every_task(executor, ws):
    """Workers are reused: an edited module must not be served from a previous task's import."""
    before = [executor.submit(ws.task("version")) for _ in range(2)]  # warm both workers
    assert [load_output(_result(f).outputs["return"], ws.store) for f in before] == [
        {"version": 1}
    ] * 2
    (ws.root / "steps.py").write_text(STEPS.replace("VERSION = 1", "VERSION = 22"))
    after = [executor.submit(ws.task("version")) for _ in range(2)]
    assert [load_output(_result(f).outputs["return"], ws.store) for f in after] == [
        {"version": 22}
    ] * 2


# -- concurrency and shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_two_independent_tasks_run_at_the_same_time(executor, ws):
    assert executor.jobs == 2
    futures = [executor.submit(ws.task("nap", params={"seconds": 0.5})) for _ in range(2)]
    (a, b) = [_result(f) for f in futures]
    assert a.ok and b.ok, (a.traceback, b.traceback)
    assert a.started_at < b.finished_at and b.started_at < a.finished_at, (
        "the two steps did not overlap in time"
    )


@pytest.mark.parametrize("kind", EXECUTORS)
def test_never_more_than_jobs_steps_at_once(kind, request, ws):
    exe = _make(kind, request, jobs=1)
    try:
        futures = [
            exe.submit(ws.task(f"nap{i}", run="steps:nap", params={"seconds": 0.2}))
            for i in range(3)
        ]
        spans = sorted((r.started_at, r.finished_at) for r in map(_result, futures))
    finally:
        exe.close()
    for (_s0, end), (start, _e1) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"with jobs=1 two steps overlapped: {spans}"


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_close_with_cancel_returns_promptly_and_kills_the_running_steps(executor, ws):
    running = [
        executor.submit(ws.task(f"hang{i}", run="steps:hang", params={"tag": f"hang{i}"}))
        for i in range(executor.jobs)
    ]
    queued = executor.submit(ws.task("queued", run="steps:nap", params={"seconds": 0}))
    pids = []
    for i in range(executor.jobs):
        _wait_for(ws.root / f"hang{i}.pid")
        pids.append(int((ws.root / f"hang{i}.pid").read_text()))
    assert all(pid_alive(pid) for pid in pids)

    started = time.monotonic()
    executor.close(cancel=True)
    assert time.monotonic() - started < 10, "close(cancel=True) waited for the steps"

    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(pid_alive(pid) for pid in pids), f"workers {pids} still run cancelled steps"
    for future in running:
        error = future.exception(timeout=TIMEOUT)
        assert isinstance(error, ExecutorError)
        assert "was stopped: the executor was closed with cancel=True" in str(error)
    assert queued.cancelled(), "a step still waiting for a worker should never start"


@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_close_waits_for_running_steps_and_the_executor_can_be_used_again(executor, ws):
    future = executor.submit(ws.task("nap", params={"seconds": 0.3}))
    executor.close()
    assert future.done() and future.result().ok
    again = _result(executor.submit(ws.task("frame")))
    assert again.ok, again.traceback


def test_make_executor_builds_each_kind_and_rejects_unknown_ones():
    assert isinstance(make_executor("local", 3), LocalExecutor)
    assert make_executor("local", 3).jobs == 3
    ray_exe = make_executor("ray", 2, "ray://head:10001")
    assert isinstance(ray_exe, RayExecutor) and ray_exe.address == "ray://head:10001"
    assert make_executor("local", None).jobs >= 1
    with pytest.raises(ExecutorError, match="Unknown executor 'dask'; use 'local' or 'ray'."):
        make_executor("dask", 2)


# -- through the engine --------------------------------------------------------------------------

CRASH_STEPS = """
import os
import signal
import time
from pathlib import Path


def crash(how):
    # Die only once the unrelated step runs, so that its worker is busy at the moment of death.
    deadline = time.time() + 60
    while not Path("side.started").exists() and time.time() < deadline:
        time.sleep(0.02)
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def after(value):
    return value
"""

SIDE_STEP = """
import time
from pathlib import Path


def side():
    Path("side.started").write_text("")
    time.sleep(0.5)
    return {"side": 1}
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
@pytest.mark.parametrize("executor", EXECUTORS, indirect=True)
def test_worker_that_dies_fails_its_step_and_the_unrelated_step_finishes(executor, project, how):
    project.write(
        "conveyor.yaml",
        f"""
        project: crash
        pipeline:
          crash: {{run: "steps:crash", params: {{how: {how}}}}}
          after: {{run: "steps:after", inputs: [crash]}}
          side: {{run: "other:side"}}
        """,
    )
    project.write("steps.py", CRASH_STEPS)
    project.write("other.py", SIDE_STEP)
    summary = project.run(executor=executor)
    assert not summary.ok
    assert project.statuses(summary) == {"crash": "failed", "after": "blocked", "side": "ran"}
    crash = next(s for s in summary.steps if s.name == "crash")
    if isinstance(executor, LocalExecutor):
        cause = {"exit": "exit code 3", "sigkill": "killed by signal SIGKILL"}[how]
        assert "The worker process (pid " in crash.error
        assert f"running step 'crash' died ({cause})." in crash.error
    else:
        assert "The Ray worker running step 'crash' died (WorkerCrashedError" in crash.error

    # The executor is still usable: fix the step and the pipeline completes on the same one.
    project.write("steps.py", CRASH_STEPS.replace('if how == "exit"', "return 1\n    if 0"))
    fixed = project.run(executor=executor)
    assert project.statuses(fixed) == {"crash": "ran", "after": "ran", "side": "cached"}


PIPELINE_STEPS = """
import numpy as np
import pandas as pd


def prepare(raw, factor):
    out = raw.copy()
    out["y"] = out["x"] * factor
    return out


def train(frame):
    return {"weights": np.arange(len(frame), dtype="float64"), "table": frame.describe()}


def score(model):
    return {"sum": float(model["weights"].sum())}
"""

PIPELINE_CONFIG = """
project: same
data:
  raw: data/*.csv
pipeline:
  prepare: {run: "steps:prepare", inputs: [data.raw], params: {factor: 3}}
  train: {run: "steps:train", inputs: [prepare]}
  score: {run: "steps:score", inputs: [train]}
  report:
    cmd: "cat data/a.csv > report.txt"
    deps: [data/a.csv]
    outs: [report.txt]
"""


def _records(project, run_id: str) -> dict[str, tuple[str, str, dict]]:
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        return {
            s.step: (s.status, s.cache_key, {k: d["digest"] for k, d in (s.outputs or {}).items()})
            for s in store.step_runs(run_id)
        }


@pytest.mark.ray
@pytest.mark.parametrize(("first", "second"), [("local", "ray"), ("ray", "local")])
def test_outputs_and_cache_keys_do_not_depend_on_the_executor(first, second, request, project):
    project.write("conveyor.yaml", PIPELINE_CONFIG)
    project.write("steps.py", PIPELINE_STEPS)
    project.write("data/a.csv", "x\n1\n2\n3\n")
    one, other = _make(first, request), _make(second, request)
    try:
        ran = project.run(executor=one)
        assert ran.ok, [s.traceback or s.error for s in ran.steps]
        restored = project.run(executor=other)
        forced = project.run(executor=other, force=True)
    finally:
        one.close()
        other.close()
    everything = {"prepare", "train", "score", "report"}
    assert project.statuses(ran) == dict.fromkeys(everything, "ran")
    assert project.statuses(restored) == dict.fromkeys(everything, "cached")
    assert project.statuses(forced) == dict.fromkeys(everything, "ran")

    by_first = _records(project, ran.run_id)
    by_second = _records(project, forced.run_id)
    assert set(by_first) == everything
    for step in everything:
        _s1, key1, digests1 = by_first[step]
        _s2, key2, digests2 = by_second[step]
        assert digests1 and digests1 == digests2, f"step {step} stored different outputs"
        assert key1 == key2, f"step {step} has a different cache key"


def test_importing_ray_leaves_the_environment_part_of_cache_keys_alone(monkeypatch):
    pytest.importorskip("ray")
    from conveyor.pipeline import keys

    vendored = _ray_vendored_dir()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != vendored])
    before = keys.env_lock()
    monkeypatch.syspath_prepend(vendored)  # what `import ray` does to the process
    assert keys.env_lock().packages == before.packages


def test_a_script_without_a_main_guard_can_run_a_pipeline(tmp_path):
    """multiprocessing re-imports __main__ in new processes; the workers must not re-run it."""
    import subprocess

    project = tmp_path / "proj"
    project.mkdir()
    (project / "conveyor.yaml").write_text('project: p\npipeline:\n  a: {run: "steps:a"}\n')
    (project / "steps.py").write_text("def a():\n    return {'x': 1}\n")
    script = tmp_path / "script.py"
    script.write_text(
        "from pathlib import Path\n"
        "from conveyor.config import load_config\n"
        "from conveyor.pipeline.engine import run_pipeline\n"
        "with open(Path(__file__).with_name('count.txt'), 'a') as f:\n"
        "    f.write('x')\n"
        f"summary = run_pipeline(load_config(Path({str(project)!r}) / 'conveyor.yaml'))\n"
        "print(summary.status)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "succeeded"
    assert (tmp_path / "count.txt").read_text() == "x"  # the script's body ran once
