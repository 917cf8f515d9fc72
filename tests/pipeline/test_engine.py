"""The pipeline engine, run for real: worker processes, a SQLite store, files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.exceptions import PipelineError

STEPS = """
import os
from pathlib import Path

import pandas as pd

import conveyor
from helpers import scale


def _called(name):
    with open(Path(os.environ.get("CALLS_DIR", ".")) / "calls.log", "a") as f:
        f.write(name + "\\n")


def prepare(raw, factor, note=""):
    _called("prepare")
    out = raw.copy()
    out["y"] = scale(out["x"], factor)
    return out


def train(frame, bias):
    _called("train")
    return {"mean": float(frame["y"].mean()) + bias, "rows": len(frame)}


def report(summary):
    _called("report")
    return [summary["mean"], summary["rows"]]


def side():
    _called("side")
    return {"ok": 1}
"""

CONFIG = """
project: demo
data:
  raw: data/*.csv
pipeline:
  prepare: {run: "steps:prepare", inputs: [data.raw], params: {factor: 2}}
  train: {run: "steps:train", inputs: [prepare], params: {bias: 0}}
  report: {run: "steps:report", inputs: [train]}
"""


def calls(project) -> list[str]:
    log = project.root / "calls.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


@pytest.fixture
def demo(project):
    project.write("conveyor.yaml", CONFIG)
    project.write("steps.py", STEPS)
    project.write("helpers.py", "def scale(x, factor):\n    return x * factor\n")
    project.write("data/a.csv", "x\n1\n2\n3\n")
    return project


def test_second_run_restores_everything_from_cache(demo):
    first = demo.run()
    assert first.ok
    assert demo.statuses(first) == {"prepare": "ran", "train": "ran", "report": "ran"}
    assert calls(demo) == ["prepare", "train", "report"]

    second = demo.run()
    assert second.ok
    assert demo.statuses(second) == {"prepare": "cached", "train": "cached", "report": "cached"}
    assert calls(demo) == []


def test_param_change_reruns_only_that_step_and_dependents_and_revert_is_cached(demo):
    demo.run()
    calls(demo)
    demo.write("conveyor.yaml", CONFIG.replace("bias: 0", "bias: 5"))
    changed = demo.run()
    assert demo.statuses(changed) == {"prepare": "cached", "train": "ran", "report": "ran"}
    reasons = {s.name: s.reason for s in changed.steps}
    assert reasons["train"] == "param bias changed: 0 → 5"
    assert reasons["report"] == "input train changed"
    assert calls(demo) == ["train", "report"]

    demo.write("conveyor.yaml", CONFIG)
    reverted = demo.run()
    assert demo.statuses(reverted) == {"prepare": "cached", "train": "cached", "report": "cached"}
    assert calls(demo) == []


def test_change_in_an_imported_local_module_reruns_the_step(demo):
    from conveyor.pipeline.status import pipeline_status

    demo.run()
    calls(demo)
    demo.write("helpers.py", "def scale(x, factor):\n    return x * factor * 10\n")
    status = {s.step: (s.state, s.reason) for s in pipeline_status(demo.config())}
    assert status["prepare"] == ("stale", "code changed: helpers.py")
    assert status["train"] == ("stale", "upstream step 'prepare' will re-run first")
    summary = demo.run()
    assert demo.statuses(summary)["prepare"] == "ran"
    assert calls(demo) == ["prepare", "train", "report"]


def test_identical_output_keeps_dependents_cached(demo):
    """A re-run that produces the same bytes does not invalidate what depends on it."""
    demo.run()
    calls(demo)
    # prepare ignores 'note': it re-runs, returns identical bytes, and the rest stays cached.
    demo.write("conveyor.yaml", CONFIG.replace("factor: 2}", "factor: 2, note: x}"))
    summary = demo.run()
    assert demo.statuses(summary) == {"prepare": "ran", "train": "cached", "report": "cached"}
    assert calls(demo) == ["prepare"]


def test_new_file_in_a_glob_source_reruns_from_the_start(demo):
    demo.run()
    calls(demo)
    demo.write("data/b.csv", "x\n10\n")
    summary = demo.run()
    assert demo.statuses(summary)["prepare"] == "ran"
    assert summary.steps[0].reason == "input data.raw changed"
    assert calls(demo) == ["prepare", "train", "report"]


def test_failed_step_blocks_dependents_lets_unrelated_steps_finish_and_keeps_its_log(demo):
    demo.write(
        "steps.py",
        STEPS.replace(
            'def train(frame, bias):\n    _called("train")',
            'def train(frame, bias):\n    _called("train")\n    print("about to fail")\n'
            '    raise ValueError("no good")',
        ),
    )
    demo.write("other.py", "def side():\n    return {'ok': 1}\n")
    demo.write("conveyor.yaml", CONFIG + '  side: {run: "other:side"}\n')
    summary = demo.run()
    assert not summary.ok
    assert demo.statuses(summary) == {
        "prepare": "ran",
        "train": "failed",
        "report": "blocked",
        "side": "ran",
    }
    failed = next(s for s in summary.steps if s.name == "train")
    assert failed.error == "ValueError: no good"
    assert 'steps.py", line' in failed.traceback and "raise ValueError" in failed.traceback
    assert "conveyor/pipeline" not in failed.traceback  # the user's frames only
    assert "about to fail" in Path(failed.log_path).read_text()
    blocked = next(s for s in summary.steps if s.name == "report")
    assert blocked.reason == "upstream step 'train' did not succeed"

    from conveyor.actions.runs import describe_run, step_log

    info = describe_run(demo.config(), summary.run_id)
    assert info["status"] == "failed"
    assert "about to fail" in step_log(demo.config(), summary.run_id, "train")

    demo.write("steps.py", STEPS)  # fix it: the rest of the pipeline completes
    calls(demo)
    fixed = demo.run()
    assert fixed.ok
    assert demo.statuses(fixed) == {
        "prepare": "ran",  # its module changed too
        "train": "ran",
        "report": "ran",
        "side": "cached",
    }


def test_metrics_logged_before_a_failure_are_kept(project):
    project.write("conveyor.yaml", 'project: p\npipeline:\n  boom: {run: "steps:boom"}\n')
    project.write(
        "steps.py",
        """
        import conveyor

        def boom():
            for i in range(3):
                conveyor.log_metric("loss", 1.0 / (i + 1))
            conveyor.log_param("lr", 0.1)
            raise RuntimeError("diverged")
        """,
    )
    summary = project.run()
    assert not summary.ok
    from conveyor.actions.runs import describe_run

    info = describe_run(project.config(), summary.run_id)
    assert info["metrics"]["boom"]["loss"] == {"last": pytest.approx(1 / 3), "count": 3}
    assert info["params"] == {"boom": {"lr": 0.1}}


def test_ten_thousand_metrics_are_written_in_one_transaction(project):
    project.write("conveyor.yaml", 'project: p\npipeline:\n  fit: {run: "steps:fit"}\n')
    project.write(
        "steps.py",
        """
        import conveyor

        def fit():
            for i in range(10_000):
                conveyor.log_metric("loss", 1.0 / (i + 1))
            return {"auc": 0.9}
        """,
    )
    summary = project.run()
    assert summary.ok
    from conveyor.store.metadata import Store

    with Store(project.config().store_url()) as store:
        metrics = store.metrics(summary.run_id)
    assert len(metrics) == 10_001
    assert [m.index for m in metrics if m.key == "loss"][-1] == 9_999
    assert {m.key: m.value for m in metrics}["auc"] == 0.9


def test_unsupported_return_value_fails_with_the_fix(project):
    project.write("conveyor.yaml", 'project: p\npipeline:\n  odd: {run: "steps:odd"}\n')
    project.write("steps.py", "import threading\n\ndef odd():\n    return threading.Lock()\n")
    summary = project.run()
    step = summary.steps[0]
    assert step.status == "failed"
    assert step.error.startswith("UnsupportedOutput: Step 'odd' returned a _thread.lock")
    assert "Return a pandas DataFrame" in step.error


def test_missing_function_names_what_exists(project):
    project.write("conveyor.yaml", 'project: p\npipeline:\n  a: {run: "steps:trian"}\n')
    project.write("steps.py", "def train():\n    return 1\n")
    summary = project.run()
    assert summary.steps[0].error == (
        "StepNotFound: Module 'steps' has no function 'trian' (step 'steps:trian'); "
        "functions there: train."
    )


def test_missing_module_is_named(project):
    project.write("conveyor.yaml", 'project: p\npipeline:\n  a: {run: "nothere.mod:f"}\n')
    summary = project.run()
    assert summary.steps[0].error.startswith(
        "StepNotFound: Cannot import module 'nothere.mod' for step function 'nothere.mod:f'"
    )


def test_independent_steps_run_in_parallel(project):
    project.write(
        "conveyor.yaml",
        'project: p\npipeline:\n  a: {run: "steps:nap"}\n  b: {run: "steps:nap2"}\n',
    )
    project.write(
        "steps.py",
        """
        import time

        def nap():
            t0 = time.time(); time.sleep(0.6); return [t0, time.time()]

        def nap2():
            return nap()
        """,
    )
    summary = project.run(jobs=2)
    assert summary.ok
    from conveyor.actions.runs import describe_run

    info = describe_run(project.config(), summary.run_id)
    spans = {}
    for step in info["steps"]:
        from conveyor.store.artifacts import ArtifactStore

        with ArtifactStore(project.config().artifacts_url()) as store:
            spans[step["step"]] = json.loads(store.read_bytes(step["outputs"]["return"]["digest"]))
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1, "the two steps did not overlap in time"


def test_every_return_type_round_trips_to_the_next_step(project):
    project.write(
        "conveyor.yaml",
        """
        project: p
        pipeline:
          make: {run: "steps:make"}
          check: {run: "steps:check", inputs: [make]}
          pick: {run: "steps:pick", inputs: {model: make.model, arr: make.arr}}
        """,
    )
    project.write(
        "steps.py",
        """
        from pathlib import Path

        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LogisticRegression

        def make():
            Path("folder").mkdir(exist_ok=True)
            Path("folder/a.txt").write_text("A")
            Path("file.txt").write_text("F")
            model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
            return {
                "frame": pd.DataFrame({"a": [1, 2]}),
                "series": pd.Series([1.5, 2.5], name="s"),
                "arr": np.arange(3),
                "model": model,
                "file": Path("file.txt"),
                "folder": Path("folder"),
                "meta": {"k": [1, 2]},
            }

        def check(values):
            assert values["frame"]["a"].tolist() == [1, 2]
            assert values["series"].name == "s" and values["series"].tolist() == [1.5, 2.5]
            assert values["arr"].tolist() == [0, 1, 2]
            assert values["model"].predict([[1.0]]).tolist() == [1]
            assert values["file"].read_text() == "F"
            assert (values["folder"] / "a.txt").read_text() == "A"
            assert values["meta"] == {"k": [1, 2]}
            return sorted(values)

        def pick(model, arr):
            return {"n": int(arr.sum()), "cls": type(model).__name__}
        """,
    )
    summary = project.run()
    assert summary.ok, [s.traceback for s in summary.steps]


def test_cmd_step_outs_are_restored_from_cache_when_deleted_or_edited(project):
    project.write(
        "conveyor.yaml",
        """
        project: p
        pipeline:
          make:
            cmd: "python make.py"
            deps: [make.py]
            outs: [out/result.txt, out/metrics.json]
            metrics: out/metrics.json
            params: {n: 3}
        """,
    )
    project.write(
        "make.py",
        """
        import json, os
        params = json.loads(os.environ["CONVEYOR_PARAMS"])
        os.makedirs("out", exist_ok=True)
        open("out/result.txt", "w").write("x" * params["n"])
        json.dump({"score": 0.5, "nested": {"a": 1}}, open("out/metrics.json", "w"))
        with open("calls.log", "a") as f:
            f.write("make\\n")
        """,
    )
    first = project.run()
    assert first.ok
    assert first.steps[0].metrics == {"score": 0.5, "nested.a": 1.0}
    result = project.root / "out/result.txt"
    assert result.read_text() == "xxx"
    result.unlink()
    again = project.run()
    assert project.statuses(again) == {"make": "cached"}
    assert result.read_text() == "xxx"
    result.write_text("tampered")
    project.run()
    assert result.read_text() == "xxx"
    assert calls(project) == ["make"]


def test_cmd_step_failure_reports_exit_status(project):
    project.write(
        "conveyor.yaml",
        'project: p\npipeline:\n  bad: {cmd: "echo oops >&2; exit 3", outs: [x.txt]}\n',
    )
    summary = project.run()
    step = summary.steps[0]
    assert step.status == "failed"
    assert step.error == "ConveyorError: command exited with status 3: echo oops >&2; exit 3"
    assert "oops" in Path(step.log_path).read_text()


def test_missing_dependency_fails_before_running(project):
    project.write(
        "conveyor.yaml",
        'project: p\npipeline:\n  a: {cmd: "true", deps: [nothere.py], outs: [x]}\n',
    )
    summary = project.run()
    assert summary.steps[0].error == (
        "Step 'a': dependency 'nothere.py' does not exist under "
        f"{project.root}. Create it, or fix 'deps' in conveyor.yaml."
    )


def test_force_and_step_selection(demo):
    demo.run()
    calls(demo)
    only = demo.run(steps=["train"], force=True)
    assert demo.statuses(only) == {"prepare": "cached", "train": "ran"}
    assert calls(demo) == ["train"]
    with pytest.raises(PipelineError, match="Unknown step 'nope'; steps in conveyor.yaml: "):
        demo.run(steps=["nope"])


def test_sql_source_change_is_detected(project, tmp_path):
    import sqlite3

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    project.write(
        "conveyor.yaml",
        f"""
        project: p
        data:
          t: {{sql: "SELECT x FROM t ORDER BY x", url: "sqlite:///{db}"}}
        pipeline:
          total: {{run: "steps:total", inputs: [data.t]}}
        """,
    )
    project.write("steps.py", "def total(frame):\n    return {'sum': int(frame['x'].sum())}\n")
    assert project.run().steps[0].metrics == {"sum": 3.0}
    assert project.statuses(project.run()) == {"total": "cached"}
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES (10)")
    assert project.run().steps[0].metrics == {"sum": 13.0}


def test_profile_of_the_snapshot_is_recorded(demo):
    summary = demo.run(wait_for_profiles=True)
    from conveyor.actions.runs import describe_run

    snap = describe_run(demo.config(), summary.run_id)["snapshots"][0]
    assert snap["source"] == "raw" and snap["row_count"] == 3 and snap["columns"] == 1


@pytest.mark.postgres
def test_the_same_pipeline_on_a_postgresql_store(demo):
    from tests.pg_server import drop_database, fresh_database, require_postgres

    url = fresh_database(require_postgres())
    try:
        demo.write("conveyor.yaml", f"store: {{url: '{url}'}}\n" + CONFIG)
        assert demo.statuses(demo.run()) == {"prepare": "ran", "train": "ran", "report": "ran"}
        again = demo.run()
        assert demo.statuses(again) == {"prepare": "cached", "train": "cached", "report": "cached"}
        from conveyor.pipeline.fastpath import check

        assert check(demo.root) is None  # the fast path is for the embedded SQLite store only
    finally:
        drop_database(url)


def test_missing_input_file_fails_before_anything_is_recorded(demo):
    from conveyor.exceptions import DataError
    from conveyor.store.metadata import Store

    (demo.root / "data" / "a.csv").unlink()
    with pytest.raises(DataError, match=r"^Data source 'raw': no file matches 'data/\*\.csv'"):
        demo.run()
    with Store(demo.config().store_url()) as store:
        assert store.runs() == []


def test_gc_of_old_runs_frees_what_only_they_used_and_keeps_the_newest_cached(demo):
    from conveyor.actions.runs import collect_garbage
    from conveyor.store.metadata import Store

    demo.run()
    demo.write("conveyor.yaml", CONFIG.replace("bias: 0", "bias: 5"))
    demo.run()
    demo.write("conveyor.yaml", CONFIG.replace("bias: 0", "bias: 7"))
    newest = demo.run()
    calls(demo)

    dry = collect_garbage(demo.config(), dry_run=True, runs_older_than_days=0, grace_hours=0)
    assert len(dry["runs_removed"]) == 2
    # The outputs of train and report for bias 0 and 5; prepare's output is still used, and the
    # (empty) logs are one shared object.
    assert len(dry["removed"]) == 4
    with Store(demo.config().store_url()) as store:
        assert len(store.runs()) == 3  # a dry run deletes nothing

    done = collect_garbage(demo.config(), runs_older_than_days=0, grace_hours=0)
    assert done["runs_removed"] == dry["runs_removed"]
    assert sorted(done["removed"]) == sorted(dry["removed"])
    with Store(demo.config().store_url()) as store:
        assert [r.id for r in store.runs()] == [newest.run_id]
        kinds = [e.kind for e in store.events()]
    assert kinds.count("run.deleted") == 2

    still = demo.run()  # the newest run's outputs are intact: nothing re-runs
    assert demo.statuses(still) == {"prepare": "cached", "train": "cached", "report": "cached"}
    demo.write("conveyor.yaml", CONFIG)  # bias 0 again: its cache entry went with its run
    again = demo.run()
    assert demo.statuses(again) == {"prepare": "cached", "train": "ran", "report": "ran"}
    assert calls(demo) == ["train", "report"]


def test_an_unknown_output_of_a_dict_step_names_what_the_step_returned(project):
    project.write(
        "conveyor.yaml",
        """
        project: p
        pipeline:
          prepare: {run: "steps:prepare"}
          train: {run: "steps:train", inputs: [prepare.trian]}
        """,
    )
    project.write(
        "steps.py",
        """
        import numpy as np

        def prepare():
            return {"train": np.arange(2), "test": np.arange(1)}

        def train(rows):
            return len(rows)
        """,
    )
    summary = project.run()
    assert not summary.ok
    failed = {s.name: s.error for s in summary.steps if s.status == "failed"}
    assert set(failed) == {"train"}
    assert (
        "'prepare.trian', but step 'prepare' returned the outputs: test, train" in failed["train"]
    )
