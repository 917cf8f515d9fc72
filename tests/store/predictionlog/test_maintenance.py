"""Compaction never shows a reader a row twice or hides one; retention deletes whole old days;
the old tables' rows move into the log once, however often the migration runs or stops."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, insert, select

from conveyor.gateway.logtables import _migrate_requests, migrate_tables, write_requests
from conveyor.gateway.requestlog import RequestLog
from conveyor.store import models as m
from conveyor.store.metadata import Store
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.maintenance import apply_retention, compact
from conveyor.store.predictionlog.query import read_all, read_requests

SIGNATURE = {
    "inputs": [{"name": "x", "type": "number", "nullable": False}],
    "output": {"task": "regression", "returns": "value"},
}


def entry(i: int, at: float, *, version: int = 1) -> tuple:
    inputs = orjson.dumps([[float(i)]]).decode()
    outputs = orjson.dumps({"predictions": [i * 2.0]}).decode()
    return (f"r{i}", at, "m", version, "production", "serve", 200, 1.0, 1, inputs, outputs)


def write_files(files: LogFiles, count: int, per_file: int, at: float) -> None:
    for start in range(0, count, per_file):
        batch = [entry(i, at + i * 0.001) for i in range(start, start + per_file)]
        write_requests(files, batch, lambda _m, _v: SIGNATURE, "t")


def ids(files: LogFiles) -> list[str]:
    return read_requests(files, "m", "production").column("request_id").to_pylist()


def test_compaction_merges_small_files_and_readers_see_each_row_once(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    write_files(files, 300, 10, time.time())
    before = ids(files)
    assert len(before) == 300
    done = compact(files, min_age_s=0)
    assert (done.files_in, done.files_out, done.rows) == (30, 1, 300)
    assert ids(files) == before
    day = Path(layout.requests_dir(files.root, "m", "production", layout.day_of(time.time())))
    names = [p.name for p in day.iterdir()]
    assert len(names) == 1 and names[0].startswith(layout.COMPACTED_PREFIX)
    # more small files, then a second compaction that also takes the first compacted file
    write_files(files, 40, 10, time.time() + 1)
    assert len(ids(files)) == 340  # r0..r39 again: new rows under old ids, kept (no dedup by id)
    assert compact(files, min_files=2, min_age_s=0).files_in == 5
    assert len(ids(files)) == 340


def test_a_crash_between_rename_and_delete_hides_the_inputs_until_the_next_run(
    tmp_path: Path,
) -> None:
    files = LogFiles(str(tmp_path / "log"))
    write_files(files, 100, 10, time.time())
    day = Path(layout.requests_dir(files.root, "m", "production", layout.day_of(time.time())))
    inputs = sorted(p.name for p in day.iterdir())
    real_delete = files.delete
    files.delete = lambda paths: None  # the compactor dies before deleting its inputs
    compact(files, min_age_s=0)
    files.delete = real_delete
    assert len(list(day.iterdir())) == 11  # the 10 inputs and the compacted file
    assert sorted(ids(files)) == sorted(f"r{i}" for i in range(100))  # each row once
    compacted = next(p for p in day.iterdir() if p.name.startswith(layout.COMPACTED_PREFIX))
    replaces = json.loads(pq.read_metadata(compacted).metadata[layout.REPLACES_KEY])
    assert replaces == inputs
    compact(files, min_age_s=0)  # the next run finishes the deletes
    assert [p.name for p in day.iterdir()] == [compacted.name]
    assert sorted(ids(files)) == sorted(f"r{i}" for i in range(100))


def test_a_reader_whose_file_vanishes_lists_again(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    write_files(files, 50, 10, time.time())
    listed = files.list_files
    calls = []

    def list_then_compact(folder: str) -> list[str]:
        out = listed(folder)
        if not calls:  # the first listing goes stale: a compaction runs right after it
            calls.append(folder)
            files.list_files = listed
            compact(files, min_age_s=0)
        return out

    files.list_files = list_then_compact
    assert sorted(ids(files)) == sorted(f"r{i}" for i in range(50))
    assert calls


def test_young_files_are_left_to_the_gateways_that_wrote_them(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    write_files(files, 100, 10, time.time())
    assert compact(files).files_in == 0  # all younger than an hour: a gateway may merge them
    log = RequestLog(object(), gateway="g", log_url=files.root, merge_seconds=0.0)
    log._signatures[("m", 1)] = SIGNATURE
    for flush in range(3):
        for i in range(100 + flush * 10, 110 + flush * 10):
            e = entry(i, time.time())
            log.record(*e[:1], *e[2:])
        log.flush()
    assert log.merge_own() == 3  # its three files, not the ten others wrote
    assert sorted(ids(files)) == sorted(f"r{i}" for i in range(130))
    day = Path(layout.requests_dir(files.root, "m", "production", layout.day_of(time.time())))
    assert sum(p.name.startswith(layout.COMPACTED_PREFIX) for p in day.iterdir()) == 1
    assert len(list(day.iterdir())) == 11


def test_retention_deletes_whole_days_by_age_then_by_size(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    now = datetime.now(UTC)
    for days_ago in (40, 20, 10, 0):
        write_files(files, 20, 20, (now - timedelta(days=days_ago)).timestamp())
    done = apply_retention(files, retain_seconds=30 * 86400, now=now)
    assert len(done.days_deleted) == 1 and done.bytes_deleted > 0
    assert len(read_requests(files, "m", "production")) == 60
    size = sum(p.stat().st_size for p in Path(files.root).rglob("*.parquet"))
    done = apply_retention(files, retain_seconds=30 * 86400, max_bytes=size // 2, now=now)
    assert len(done.days_deleted) == 2  # the oldest first; today's is never deleted for size
    assert len(read_requests(files, "m", "production")) == 20
    days = [p.name for p in Path(files.root).rglob("date=*")]
    assert days == [f"date={layout.day_of(now)}"]


def old_rows(store: Store, n: int, at: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(m.RequestLog),
            [
                {
                    "request_id": f"o{i}", "at": at + timedelta(seconds=i), "model": "m",
                    "version": 1, "environment": "production", "role": "serve",
                    "status": 200 if i % 10 else 500, "latency_ms": 2.5, "rows": 1,
                    "inputs": json.dumps([[float(i)]]), "outputs":
                    json.dumps({"predictions": [i * 2.0]}) if i % 10 else "boom",
                    "gateway": f"g{i % 2}",
                }
                for i in range(n)
            ],
        )  # fmt: skip
        conn.execute(
            insert(m.Feedback),
            [
                {"request_id": f"o{i}", "at": at + timedelta(minutes=5), "labels": "[1]",
                 "actor": "api"}
                for i in range(0, n, 3)
            ],
        )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):
    with Store("sqlite:///" + str(tmp_path / "meta.db")) as store:
        yield store


def test_migration_moves_the_old_rows_once(store: Store, tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "log"))
    at = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)  # across midnight: two day partitions
    old_rows(store, 250, at)
    assert migrate_tables(store, files, chunk=100) == (250, 84)
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(m.RequestLog)) == 0
        assert conn.scalar(select(func.count()).select_from(m.Feedback)) == 0
    assert migrate_tables(store, files) == (0, 0)  # nothing left: a second run is a no-op
    rows = read_all(files).to_pylist()
    assert [r["request_id"] for r in rows] == [f"o{i}" for i in range(250)]
    o7, o10 = rows[7], rows[10]
    assert "in.x" not in o7  # no version 1 in this store, so no signature to type inputs by
    assert (o7["prediction"], o7["gateway"], o7["status"]) == (14.0, "g1", 200)
    assert o7["raw_inputs"] == "[[7.0]]"  # kept as sent
    assert (o10["status"], o10["raw_outputs"]) == (500, "boom")
    assert o7["at"] == at + timedelta(seconds=7)
    labels = read_all(files, "feedback").to_pylist()
    assert len(labels) == 84 and labels[0]["labels"] == "[1]" and labels[0]["actor"] == "api"


def test_a_migration_that_died_after_writing_does_not_double_rows(
    store: Store, tmp_path: Path
) -> None:
    files = LogFiles(str(tmp_path / "log"))
    old_rows(store, 120, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    with store.engine.connect() as conn:  # the first chunk's files are written, then it dies
        chunk = conn.execute(select(m.RequestLog).where(m.RequestLog.id < 51)).all()
    _migrate_requests(files, chunk, lambda _m, _v: None)
    migrate_tables(store, files, chunk=50)
    got = read_all(files).column("request_id").to_pylist()
    assert sorted(got) == sorted(f"o{i}" for i in range(120))
