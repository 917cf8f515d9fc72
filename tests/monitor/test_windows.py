"""Windows of the request log: rows in log order, bad rows skipped and counted, the bounds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from conveyor.exceptions import MonitorError
from conveyor.monitor import read_window
from tests.gateway.servers import NUM_FIELDS, gateway_project
from tests.monitor.logs import NOW, entry, registry_of, write

ROW = [0.5, -1.0, 2.0, 0.0, 1.5]


@pytest.fixture
def config(tmp_path: Path):
    return gateway_project(tmp_path / "p")


def test_rows_of_records_and_arrays_in_log_order_and_bad_rows_skipped(config) -> None:
    record = dict(zip(NUM_FIELDS, [9.0, 8.0, 7.0, 6.0, 5.0], strict=True))
    bad_record = {**record, "f0": "x"}
    write(
        config,
        [
            entry("r1", [ROW, [1, 2, 3, 4, 5]], [0, 1], ago=50),
            entry("r2", [record], [1], ago=40),
            entry("r3", None, raw_inputs="{not json", ago=39),
            entry("r4", [[1, 2]], [0], ago=38),  # two values where the signature has five
            entry("r5", [[1, 1, 1, 1, 1], bad_record, {**record, "extra": 1}], [1, 0, 0], ago=37),
            entry("r6", [[1]], status=422, latency_ms=0.5, ago=36),
            entry("r7", [ROW], status=500, latency_ms=30.0, ago=35),
            entry("r8", [ROW], [0], role="shadow", version=2, ago=34),
            entry("r9", [ROW], [0], environment="staging", version=2, ago=33),
            entry("r10", [ROW], [0], ago=7200),  # before the window
            entry("r11", [ROW], [0], ago=-5),  # after its end
            entry("r12", {"f0": 1}, [0], ago=32),  # not a list of rows
            entry("r13", [ROW], None, ago=31),  # no answer logged
        ],
    )
    with registry_of(config) as registry:
        window = read_window(registry.store, "num", "production", seconds=3600, now=NOW)
    assert list(window.inputs.columns) == NUM_FIELDS
    assert window.inputs.to_numpy().tolist() == [
        ROW,
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [9.0, 8.0, 7.0, 6.0, 5.0],
        [1.0, 1.0, 1.0, 1.0, 1.0],
        ROW,
    ]
    assert window.request_ids == ["r1", "r1", "r2", "r5", "r13"]
    assert window.positions == [0, 1, 0, 0, 0]
    assert window.predictions == [0, 1, 1, 1, None]
    assert window.versions == [1, 1, 1, 1, 1]
    # r3 (not JSON), r4 (a short row), r5's two bad records, r12 (not a list)
    assert window.skipped == 5 and window.rows == 5
    assert len(window.problems) == 5
    assert any("r3" in p and "not JSON" in p for p in window.problems)
    assert any("r5 row 1" in p and "'f0'" in p for p in window.problems)
    assert window.requests == 9  # r1-r7, r12 and r13: every request production answered
    assert sorted(window.statuses.tolist()) == [200] * 7 + [422, 500]
    assert window.start == NOW - timedelta(hours=1) and window.end == NOW
    assert window.request_rows["r5"] == 3 and "r3" not in window.served_at


def test_the_last_requests_and_one_version(config) -> None:
    write(
        config,
        [entry(f"a{i}", [ROW], [i % 2], version=1 + i % 2, ago=100 - i) for i in range(10)],
    )
    with registry_of(config) as registry:
        last = read_window(registry.store, "num", "production", last=3, now=NOW)
        v2 = read_window(registry.store, "num", "production", seconds=3600, now=NOW, version=2)
    assert last.request_ids == ["a7", "a8", "a9"]
    assert last.start == NOW - timedelta(seconds=93) and last.seconds is None
    assert v2.request_ids == ["a1", "a3", "a5", "a7", "a9"] and set(v2.versions) == {2}


def test_an_empty_window_has_the_signature_columns(config) -> None:
    with registry_of(config) as registry:
        window = read_window(registry.store, "mixed", "production", seconds=60, now=NOW)
    assert list(window.inputs.columns) == ["grade", "years", "amount"]
    assert (window.rows, window.requests, window.skipped) == (0, 0, 0)


def test_a_window_needs_one_bound_and_a_routed_environment(config) -> None:
    with registry_of(config) as registry:
        with pytest.raises(MonitorError, match="exactly one"):
            read_window(registry.store, "num", "production", now=NOW)
        with pytest.raises(MonitorError, match="exactly one"):
            read_window(registry.store, "num", "production", seconds=5, last=5)
        with pytest.raises(MonitorError, match="environment 'canary'.*it has: production, staging"):
            read_window(registry.store, "num", "canary", seconds=60)
        with pytest.raises(MonitorError, match="No model 'nope'"):
            read_window(registry.store, "nope", "production", seconds=60)


def test_a_hundred_thousand_rows_with_scattered_bad_ones(config) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(100_000, 5)).round(6).tolist()
    bad = set(range(7, 100_000, 997))  # about a hundred rows that do not fit
    logged = []
    for i, row in enumerate(values):
        sent = [row[:4]] if i in bad else [row]
        logged.append(entry(f"q{i}", sent, [i % 2], ago=100_000 - i))
    write(config, logged)
    with registry_of(config) as registry:
        window = read_window(registry.store, "num", "production", seconds=200_000, now=NOW)
    assert window.requests == 100_000
    assert window.skipped == len(bad) and window.rows == 100_000 - len(bad)
    kept = [i for i in range(100_000) if i not in bad]
    assert window.request_ids[:3] == [f"q{i}" for i in kept[:3]]
    assert np.array_equal(window.inputs.to_numpy(), np.array([values[i] for i in kept]))
    assert window.predictions[-1] == kept[-1] % 2


def test_problems_name_the_request_and_field(config) -> None:
    rows = [json.loads(json.dumps(ROW))]
    write(config, [entry("ok", rows, [1]), entry("odd", [[1, 2, 3, 4, True]], [1])])
    with registry_of(config) as registry:
        window = read_window(registry.store, "num", "production", seconds=60, now=NOW)
    assert window.request_ids == ["ok"] and window.skipped == 1
    assert window.problems == [
        "request odd row 0: the row, field 'f4': got the boolean true, which should be a number."
    ]


@pytest.mark.parametrize("batch_rows", [131_072, 7])
def test_a_window_of_files_written_out_of_order_is_in_log_order(
    config, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    """The window reads the log unordered and orders it itself (Arrow's sort on the key
    columns, then each input put in that order in place): the same rows, in the same order, as
    DuckDB's ORDER BY of the same files, with requests sharing a timestamp ordered by id;
    whether the rows come in one batch or in batches of 7."""
    from conveyor.monitor import windows
    from conveyor.store.predictionlog.query import log_of, read_requests

    monkeypatch.setattr(windows, "_BATCH_ROWS", batch_rows)

    rng = np.random.default_rng(7)
    logged = []
    for k in range(300):
        rows = [rng.normal(size=5).round(3).tolist() for _ in range(int(rng.integers(1, 4)))]
        logged.append(
            entry(
                f"q{int(rng.integers(0, 10**6)):06d}-{k}",
                rows,
                rng.integers(0, 2, len(rows)).tolist(),
                ago=float(rng.integers(1, 60)),  # many requests share a second
                status=500 if k % 37 == 0 else 200,
            )
        )
    order = rng.permutation(len(logged))
    for part in np.array_split(order, 3):  # three writes: three files, each out of order
        write(config, [logged[i] for i in part])
    with registry_of(config) as registry:
        window = read_window(registry.store, "num", "production", seconds=3600, now=NOW)
        table = read_requests(
            log_of(registry.store),
            "num",
            "production",
            since=NOW - timedelta(seconds=3600),
            until=NOW,
            roles=["serve"],
            inputs=NUM_FIELDS,
        )
    served = table.filter(np.asarray(table.column("status").to_numpy()) == 200)
    expected = np.column_stack([served.column(f"in.{n}").to_numpy() for n in NUM_FIELDS])
    assert (
        window.rows
        == served.num_rows
        == sum(len(json.loads(e["inputs"])) for e in logged if e["status"] == 200)
    )
    assert np.array_equal(window.inputs.to_numpy(), expected)
    assert window.request_ids == served.column("request_id").to_pylist()
    assert window.positions == served.column("row").to_pylist()
    assert window.predictions == served.column("prediction").to_pylist()
    firsts = np.asarray(table["row"].to_numpy()) == 0
    assert window.statuses.tolist() == np.asarray(table["status"].to_numpy())[firsts].tolist()
    ordered = sorted(logged, key=lambda e: (e["at"], e["request_id"]))
    assert [window.served_at[rid] for rid in dict.fromkeys(window.request_ids)] == [
        e["at"] for e in ordered if e["status"] == 200
    ]


def test_a_field_the_log_does_not_have_is_missing_in_every_row(config) -> None:
    """A signature with a field no logged file has (added since): a nullable one reads as NaN
    in every row; one that is not nullable skips every row, and the problems name it."""
    write(config, [entry(f"n{i}", [ROW], [0], ago=50 - i, status=500 if i == 2 else 200)
                   for i in range(5)])  # fmt: skip
    with registry_of(config) as registry:
        signature = dict(registry.version("num", 1).signature)
        extra = {"name": "f_new", "type": "number"}
        nullable = {**signature, "inputs": [*signature["inputs"], {**extra, "nullable": True}]}
        strict = {**signature, "inputs": [*signature["inputs"], {**extra, "nullable": False}]}
        lenient = read_window(
            registry.store, "num", "production", seconds=60, now=NOW, signature=nullable
        )
        skipped = read_window(
            registry.store, "num", "production", seconds=60, now=NOW, signature=strict
        )
    assert lenient.rows == 4 and lenient.skipped == 0
    assert lenient.request_ids == ["n0", "n1", "n3", "n4"]
    assert lenient.inputs[NUM_FIELDS].to_numpy().tolist() == [ROW] * 4
    assert np.isnan(lenient.inputs["f_new"].to_numpy()).all()
    assert skipped.rows == 0 and skipped.skipped == 4 and skipped.requests == 5
    assert skipped.problems[0] == (
        "request n0 row 0: field 'f_new' is missing, but the field is not nullable"
    )
