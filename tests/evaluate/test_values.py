"""The one number formatter and the one JSON helper that every surface uses."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.evaluate.values import (
    EMPTY,
    format_number,
    format_percent,
    format_signed,
    is_number,
    jsonable,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.81234567, "0.8123"),
        (0.001, "0.0010"),
        (0.00012345, "1.234e-04"),
        (0.0, "0.0000"),
        (-2.5, "-2.5000"),
        (12345.678, "12345.6780"),
        (7, "7"),
        (True, "yes"),
        (False, "no"),
        (None, EMPTY),
        (math.nan, "NaN"),
        (math.inf, "∞"),
        (-math.inf, "-∞"),
        ("abc", "abc"),
    ],
)
def test_format_number(value: object, text: str) -> None:
    assert format_number(value) == text


def test_numpy_scalars_read_as_the_python_numbers_they_hold() -> None:
    assert format_number(np.float32(0.5)) == format_number(0.5) == "0.5000"
    assert format_number(np.float64(0.81234567)) == "0.8123"
    assert format_number(np.int64(2000)) == "2000"
    assert format_number(np.bool_(True)) == "yes"
    assert format_number(np.float64("nan")) == "NaN"


def test_format_signed_and_percent() -> None:
    assert [format_signed(v) for v in (0.004, -0.018, 0.0, 3, 0.0001)] == [
        "+0.0040",
        "-0.0180",
        "+0.0000",
        "+3",
        "+1.000e-04",
    ]
    assert [format_percent(v) for v in (0.112, 1, 0, np.float64(0.3333))] == [
        "11.2%",
        "100.0%",
        "0.0%",
        "33.3%",
    ]
    assert format_percent(None) == EMPTY and format_percent(math.nan) == "NaN"


def test_is_number_excludes_bools() -> None:
    assert is_number(1) and is_number(0.5) and not is_number(True) and not is_number("1")


def test_jsonable_writes_valid_json_from_metrics_with_nan_and_numpy() -> None:
    metrics = {
        "roc_auc": math.nan,
        "rmse": np.float64(1.5),
        "n": np.int64(3),
        "flags": (np.bool_(True), -math.inf),
        1: {"nested": [np.float32(0.25), None, "x"]},
        "when": date(2026, 3, 2),
        "array": np.array([1, 2]),
    }
    clean = jsonable(metrics)
    assert clean == {
        "roc_auc": None,
        "rmse": 1.5,
        "n": 3,
        "flags": [True, None],
        "1": {"nested": [0.25, None, "x"]},
        "when": date(2026, 3, 2),  # left for the caller's default=
        "array": "[1 2]",
    }
    assert type(clean["rmse"]) is float and type(clean["n"]) is int
    assert json.loads(json.dumps(clean, allow_nan=False, default=str))["when"] == "2026-03-02"


_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_values = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(_values)
def test_jsonable_round_trips_through_strict_json(value: object) -> None:
    clean = jsonable(value)
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert jsonable(clean) == clean  # applying it twice changes nothing
