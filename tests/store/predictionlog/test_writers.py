"""Real writer processes on one log root: nothing lost or doubled, and a killed writer loses at
most its last flush interval and leaves no file a reader cannot read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.query import read_all, read_requests

REPO = Path(__file__).resolve().parents[3]


def writer(root: Path, name: str, count: int, flush_seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.predictionlog.writer_child", str(root), name,
         str(count), str(flush_seconds)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "started", child.stderr.read() if child.stderr else line
    return child


def test_two_writer_processes_at_once_lose_and_double_nothing(tmp_path: Path) -> None:
    root = tmp_path / "prediction-log" / "v1"
    children = [writer(root, name, 6000, 0.05) for name in ("a", "b")]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "done 6000"
    table = read_all(LogFiles(str(root)))
    ids = table.column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 12_000
    assert set(ids) == {f"{name}-{i}" for name in ("a", "b") for i in range(6000)}
    rows = {r["request_id"]: r for r in table.to_pylist()}
    assert rows["b-41"]["in.x"] == 20.5 and rows["b-41"]["in.n"] == 41.0
    assert rows["b-41"]["in.s"] == "s6" and rows["b-41"]["prediction"] == 1
    assert rows["a-8"]["gateway"] == "a" and rows["a-8"]["raw_inputs"] is None
    names = [p.name for p in root.rglob("*") if p.is_file()]
    assert names and all(n.endswith(".parquet") and not n.startswith(".") for n in names)


def test_a_killed_writer_loses_at_most_one_flush_interval_and_no_file_is_corrupt(
    tmp_path: Path,
) -> None:
    root = tmp_path / "prediction-log" / "v1"
    flush = 0.5
    child = writer(root, "k", 0, flush)
    time.sleep(3.0)
    killed_at = time.time()
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)  # reaps it and closes its pipes
    assert child.returncode == -signal.SIGKILL
    for path in root.rglob("*"):  # every file a reader lists opens whole
        if path.is_file() and not path.name.startswith("."):
            assert pq.read_metadata(path).num_rows > 0
    table = read_requests(LogFiles(str(root)), "m", "production")
    numbers = sorted(int(rid.split("-")[1]) for rid in table.column("request_id").to_pylist())
    assert numbers, "nothing was written in 3 s"
    assert numbers == list(range(len(numbers)))  # no gap, no double: a prefix of what was sent
    last = table.column("at")[-1].as_py().timestamp()
    # what is lost is what arrived after the last flush: one interval, plus the write itself
    assert killed_at - last <= flush + 1.0, (killed_at - last, flush)
