"""Goal 5: 10,000 ``log_metric`` calls in one step, Conveyor beside MLflow's default store.

Conveyor: two projects whose only step is ``tracking_src/trackbench.py:log_many``, one with
n=10000 and one with n=0, re-run with ``--force`` in turns. The step times its own loop; the
difference between the two runs' wall times is the whole cost, including the one transaction
that writes the buffer to the store. Every run is checked to have stored all n values.

MLflow: one process (``tracking_src/mlflow_worker.py``) on the default ``sqlite:///mlflow.db``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from . import pipelines, timing
from .environments import BENCH_DIR
from .timing import Timing

Log = Callable[[str], None]
TRACKING_SRC = BENCH_DIR / "tracking_src"
CALLS = 10_000


def _project(root: Path, n: int, env: Mapping[str, str]) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "src").mkdir(parents=True)
    shutil.copy2(TRACKING_SRC / "trackbench.py", root / "src" / "trackbench.py")
    (root / "conveyor.yaml").write_text(
        f'project: tracking\npipeline:\n  log: {{run: "trackbench:log_many", params: {{n: {n}}}}}\n'
    )
    timing.run(["git", "init", "-q"], root, env)
    return root


def _stored(root: Path) -> tuple[int, float, float, float]:
    """Of the newest run: loss values stored, the loop's own seconds, the step's seconds, and
    the run's seconds inside ``conveyor`` (start of the run to its record being final).

    The last one leaves out interpreter start-up and imports, the noisiest part of a process on
    a shared machine, but keeps everything the metrics cost: the step, handing the buffer back
    and writing it.
    """
    newest = "(SELECT id FROM runs ORDER BY rowid DESC LIMIT 1)"
    count = pipelines.query_store(
        root, f"SELECT count(*) FROM metrics WHERE key = 'loss' AND run_id = {newest}"
    )[0][0]
    loop = pipelines.query_store(
        root, f"SELECT value FROM metrics WHERE key = 'loop_s' AND run_id = {newest}"
    )[0][0]
    step = pipelines.query_store(
        root, f"SELECT duration_s FROM step_runs WHERE step = 'log' AND run_id = {newest}"
    )[0][0]
    started, finished = pipelines.query_store(
        root, f"SELECT started_at, finished_at FROM runs WHERE id = {newest}"
    )[0]
    engine = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return count, loop, step, engine


def conveyor_tracking(work: Path, env: Mapping[str, str], repeats: int, log: Log) -> dict:
    """Wall time of a forced run with and without 10,000 calls, and the loop's own time."""
    projects = {n: _project(work / f"tracking-{n}", n, env) for n in (CALLS, 0)}
    for root in projects.values():
        timing.run(pipelines.conveyor("run"), root, env)  # creates the store; not timed
    walls = {n: Timing() for n in projects}
    loops = {n: Timing() for n in projects}
    steps = {n: Timing() for n in projects}
    engines = {n: Timing() for n in projects}
    for attempt in range(repeats):
        log(f"tracking: conveyor run --force with and without {CALLS} calls, {attempt + 1}")
        for n, root in projects.items():
            walls[n].samples.append(
                timing.run(pipelines.conveyor("run", "--force"), root, env).wall
            )
            count, loop, step, engine = _stored(root)
            if count != n:
                raise AssertionError(f"Conveyor stored {count} of {n} logged values in {root}.")
            loops[n].samples.append(loop)
            steps[n].samples.append(step)
            engines[n].samples.append(engine)
    for root in projects.values():
        shutil.rmtree(root)
    return {
        "calls": CALLS,
        "stored_values": CALLS,
        "loop": loops[CALLS].to_dict(),
        "per_call_us": loops[CALLS].median / CALLS * 1e6,
        "run_wall_with_calls": walls[CALLS].to_dict(),
        "run_wall_without_calls": walls[0].to_dict(),
        "extra_wall_s": walls[CALLS].median - walls[0].median,
        "step_with_calls": steps[CALLS].to_dict(),
        "step_without_calls": steps[0].to_dict(),
        "extra_step_s": steps[CALLS].median - steps[0].median,
        "run_in_engine_with_calls": engines[CALLS].to_dict(),
        "run_in_engine_without_calls": engines[0].to_dict(),
        "extra_in_engine_s": engines[CALLS].median - engines[0].median,
    }


def mlflow_tracking(work: Path, env: Mapping[str, str], mlflow_bin: Path, calls: int) -> dict:
    """MLflow's ``log_metric`` ``calls`` times in one run; extrapolated to 10,000 if fewer."""
    folder = work / "mlflow-tracking"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    argv = [str(mlflow_bin / "python"), str(TRACKING_SRC / "mlflow_worker.py"), str(calls)]
    sample = timing.run([*argv, str(folder)], folder, env)
    line = [ln for ln in sample.output.splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    if result["stored_values"] != calls:
        raise AssertionError(f"MLflow stored {result['stored_values']} of {calls} values.")
    result["process_wall_s"] = sample.wall
    result["total_for_10000_s"] = result["loop_s"] / calls * CALLS
    result["extrapolated"] = calls != CALLS
    shutil.rmtree(folder)
    return result
