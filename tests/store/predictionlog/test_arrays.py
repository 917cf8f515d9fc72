"""The log's columns built from NumPy buffers equal what ``pa.array`` built before, value for
value and type for type, on the values the gateway logs and on the odd ones handed back to it;
and writing a batch of requests never imports pandas (the worker's +46 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from conveyor.gateway.logtables import requests_table
from conveyor.store.predictionlog.files import (
    bool_array,
    float32_lists,
    inferred_array,
    number_array,
    string_array,
    time_array,
)

STRINGS: list[list[Any]] = [
    [],
    ["a", "", None, "é ü 中文 🚀", "x" * 10_000],
    [None, None],
    np.array(["r1", None, "r3"], dtype=object).tolist(),
    ["only", "strings", "é", ""],  # the all-str fast path
    [None] * 5,  # the all-None fast path
]
PREDICTIONS: list[list[Any]] = [
    [0, 1, None, 2**62],
    [0.5, 1, None],
    ["yes", None, "no"],
    [True, None, False],
    [None, None],
    [],
    [2**64],  # overflows int64: pa.array raises, so the caller keeps JSON text
    [2**60, 0.5],  # not exact as a float: pa.array raises
    [1, "a"],  # mixed: pa.array raises
    [[1, 2], None],  # lists: handed to pa.array
    [True, 1],
]


def _same(built: pa.Array, expected: pa.Array) -> None:
    assert built.type == expected.type
    assert built.null_count == expected.null_count
    assert repr(built.to_pylist()) == repr(expected.to_pylist())  # NaN != NaN, its repr matches
    assert built.is_null().equals(expected.is_null())


@pytest.mark.parametrize("values", STRINGS)
def test_strings_equal_pa_array(values: list[Any]) -> None:
    _same(string_array(values), pa.array(values, pa.string()))
    obj = np.array(values + [float("nan")], dtype=object)
    _same(string_array(obj, nan_is_null=True), pa.array(obj, pa.string(), from_pandas=True))


def test_strings_that_pa_array_refuses_are_still_refused() -> None:
    with pytest.raises(TypeError):  # pa.ArrowTypeError, as before: the caller keeps JSON
        string_array(["a", 3])
    with pytest.raises(UnicodeEncodeError):
        string_array(["\ud800"])
    with pytest.raises(UnicodeEncodeError):
        string_array(["a", "\ud800"])  # the all-str fast path refuses it too


@pytest.mark.parametrize(
    ("values", "type_", "nan_is_null"),
    [
        (np.array([1.5, np.nan, -0.0, np.inf]), pa.float64(), True),
        (np.array([1.5, np.nan]), pa.float64(), False),
        (np.array([0.1, 2.5e38], dtype=np.float32), pa.float32(), False),
        (np.arange(-3, 3, dtype=np.int32), pa.int32(), False),
        (np.array([200, 404, 503], dtype=np.int16), pa.int16(), False),
        (np.array([], dtype=np.float64), pa.float64(), True),
        (np.arange(10)[::3] - np.repeat(np.array([0, 2]), [2, 2]), pa.int32(), False),
    ],
)
def test_numbers_equal_pa_array(values: Any, type_: pa.DataType, nan_is_null: bool) -> None:
    expected = pa.array(values, type_, from_pandas=nan_is_null)
    _same(number_array(values, type_, nan_is_null=nan_is_null), expected)


def test_bools_and_times_equal_pa_array() -> None:
    values = np.array([True, None, False, float("nan")], dtype=object)
    _same(bool_array(values, nan_is_null=True), pa.array(values, pa.bool_(), from_pandas=True))
    _same(bool_array([True] * 17 + [False]), pa.array([True] * 17 + [False], pa.bool_()))
    micros = np.array([0, 1_780_000_000_123_456, -5], dtype=np.int64)
    _same(time_array(micros), pa.array(micros, pa.timestamp("us", tz="UTC")))


@pytest.mark.parametrize("values", PREDICTIONS)
def test_inferred_columns_equal_pa_array(values: list[Any]) -> None:
    try:
        expected = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            inferred_array(values)
        return
    _same(inferred_array(values), expected)


@pytest.mark.parametrize(
    "values",
    [
        [[0.25, 0.75], None, [], [1, 0]],
        [[0.1, 0.2, 0.7]] * 3,
        [None],
        [[2**30, 0.5]],  # an int float32 cannot hold exactly: pa.array decides
        [[True, 0.5]],
    ],
)
def test_probabilities_equal_pa_array(values: list[Any]) -> None:
    type_ = pa.list_(pa.float32())
    try:
        expected = pa.array(values, type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        with pytest.raises(type(exc)):
            float32_lists(values)
        return
    _same(float32_lists(values), expected)


_WRITE = """
import json, sys, time
from conveyor.gateway.logtables import requests_table
from conveyor.store.predictionlog.files import LogFiles
sig = json.loads(sys.argv[1])
now = time.time()
entries = [
    ("r1", now, "m", 1, "production", "serve", 200, 1.5, 2,
     json.dumps([[0.5, 1, "A", True], [None, 2, None, False]]),
     json.dumps({"predictions": ["yes", "no"], "probabilities": [[0.2, 0.8], [0.9, 0.1]]})),
    ("r2", now, "m", 1, "production", "serve", 200, 0.7, 1,
     json.dumps([{"amount": 2.0, "count": 3, "grade": "B", "member": False}]),
     json.dumps({"predictions": ["no"], "probabilities": [[0.6, 0.4]]})),
    ("r3", now, "m", 1, "production", "serve", 422, 0.1, 0, "", "{}"),
    ("r4", now, "m", 1, "production", "serve", 200, 0.3, 1, "not json", "[1]"),
]
table = requests_table(entries, sig, "g1")
LogFiles(sys.argv[2]).write_table(sys.argv[2], "x.parquet", table)
print(json.dumps({"pandas": "pandas" in sys.modules, "rows": table.num_rows}))
"""

SIGNATURE = {
    "inputs": [
        {"name": "amount", "type": "number", "nullable": True},
        {"name": "count", "type": "integer", "nullable": False},
        {"name": "grade", "type": "string", "nullable": True},
        {"name": "member", "type": "boolean", "nullable": False},
    ],
    "output": {"task": "classification", "classes": ["no", "yes"], "returns": "probability"},
}


def test_writing_requests_imports_no_pandas(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WRITE, json.dumps(SIGNATURE), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"pandas": False, "rows": 5}
    assert (tmp_path / "x.parquet").stat().st_size > 0


def test_a_request_table_equals_one_built_by_pa_array() -> None:
    """The table of a mixed batch, column by column, against the values pa.array reads back."""
    now = time.time()
    entries = [
        ("a", now, "m", 2, "production", "serve", 200, 1.25, 2,
         json.dumps([[0.5, 1, "A", True], [None, 2, None, False]]),
         json.dumps({"predictions": ["yes", "no"], "probabilities": [[0.2, 0.8], [0.9, 0.1]]})),
        ("b", now + 1, "m", 2, "production", "shadow", 200, 0.5, 1,
         json.dumps([[1.0, 3, "B", True]]), json.dumps({"predictions": [None]})),
        ("c", now + 2, "m", 2, "production", "serve", 500, 9.0, 1, "[[1]]", ""),
    ]  # fmt: skip
    table = requests_table(entries, SIGNATURE, "g")
    expected = {
        "request_id": pa.array(["a", "a", "b", "c"]),
        "row": pa.array([0, 1, 0, 0], pa.int32()),
        "rows": pa.array([2, 2, 1, 1], pa.int32()),
        "version": pa.array([2] * 4, pa.int32()),
        "role": pa.array(["serve", "serve", "shadow", "serve"]),
        "status": pa.array([200, 200, 200, 500], pa.int16()),
        "latency_ms": pa.array([1.25, 1.25, 0.5, 9.0], pa.float32()),
        "gateway": pa.array(["g"] * 4),
        "in.amount": pa.array([0.5, None, 1.0, None], pa.float64()),
        "in.count": pa.array([1.0, 2.0, 3.0, None], pa.float64()),
        "in.grade": pa.array(["A", None, "B", None]),
        "in.member": pa.array([True, False, True, None]),
        "prediction": pa.array(["yes", "no", None, None]),
        "probabilities": pa.array([[0.2, 0.8], [0.9, 0.1], None, None], pa.list_(pa.float32())),
        "raw_inputs": pa.array([None, None, None, "[[1]]"], pa.string()),
        "raw_outputs": pa.array([None, None, None, None], pa.string()),
    }
    for name, column in expected.items():
        assert table.column(name).combine_chunks().equals(column), name
    at = table.column("at").to_pylist()
    assert [t.timestamp() for t in at] == pytest.approx([now, now, now + 1, now + 2], abs=1e-6)
