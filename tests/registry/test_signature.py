from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.exceptions import InvalidInput, RegistryError
from conveyor.registry.signature import (
    _frame,
    _frame_public,
    frame_from_rows,
    infer_signature,
)


def _mixed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [1.5, np.nan, 3.0, 4.0],
            "term": [36, 60, 36, 36],
            "years": [1.0, np.nan, 3.0, 4.0],  # ints with a missing value, as pandas loads them
            "children": pd.array([1, None, 0, 2], dtype="Int64"),
            "grade": ["B", "A", None, "B"],
            "home": pd.Categorical(["RENT", "OWN", "RENT", "RENT"], categories=["RENT", "OWN"]),
            "verified": [True, False, True, True],
            "issued": pd.to_datetime(["2024-01-01", "2024-02-01", None, "2024-03-05"]),
        }
    )


SIGNATURE = infer_signature(_mixed(), task="classification", classes=np.array([0, 1]))


def test_infers_types_nullability_and_categories() -> None:
    assert SIGNATURE == {
        "inputs": [
            {"name": "amount", "type": "number", "nullable": True},
            {"name": "term", "type": "integer", "nullable": False},
            {"name": "years", "type": "number", "nullable": True},
            {"name": "children", "type": "integer", "nullable": True},
            {"name": "grade", "type": "string", "nullable": True, "categories": ["A", "B"]},
            {"name": "home", "type": "string", "nullable": False, "categories": ["RENT", "OWN"]},
            {"name": "verified", "type": "boolean", "nullable": False},
            {"name": "issued", "type": "datetime", "nullable": True},
        ],
        "output": {"task": "classification", "returns": "probability", "classes": [0, 1]},
    }
    assert json.loads(json.dumps(SIGNATURE)) == SIGNATURE
    assert type(SIGNATURE["output"]["classes"][0]) is int


def test_categories_only_up_to_the_limit() -> None:
    frame = pd.DataFrame({"city": [f"c{i}" for i in range(60)], "y": np.arange(60.0)})
    sig = infer_signature(frame, task="regression", categorical_max=50)
    assert sig["inputs"][0] == {"name": "city", "type": "string", "nullable": False}
    assert sig["output"] == {"task": "regression", "returns": "value"}
    assert (
        "categories" in infer_signature(frame, task="regression", categorical_max=60)["inputs"][0]
    )


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        (pd.DataFrame({"a": [1.0]}), {"task": "ranking"}, "Unknown task 'ranking'"),
        (pd.DataFrame({"a": [1.0]}), {"task": "classification"}, r"classes=list\(model"),
        (pd.DataFrame({0: [1.0]}), {"task": "regression"}, r"column 0 is named by a int"),
        (pd.DataFrame({"a": ["x", 1]}), {"task": "regression"}, r"'a' holds values of mixed"),
        (pd.DataFrame({"a": pd.to_timedelta([1], "s")}), {"task": "regression"}, "dtype"),
    ],
)
def test_inference_refuses_what_it_cannot_describe(frame, kwargs, match) -> None:
    with pytest.raises(RegistryError, match=match):
        infer_signature(frame, **kwargs)


ROW = {
    "amount": 1200.5,
    "term": 36,
    "years": None,
    "children": 2,
    "grade": "G",  # not a category seen in training: the model decides
    "home": "OWN",
    "verified": False,
    "issued": "2024-03-01T10:00:00+01:00",
}


def test_records_become_the_frame_the_model_reads() -> None:
    shuffled = dict(reversed(list(ROW.items())))  # key order in a record does not matter
    frame = frame_from_rows(SIGNATURE, [ROW, shuffled])
    assert list(frame.columns) == [f["name"] for f in SIGNATURE["inputs"]]
    assert frame.dtypes.astype(str).to_dict() == {
        "amount": "float64",
        "term": "float64",
        "years": "float64",
        "children": "float64",
        "grade": "object",
        "home": "object",
        "verified": "bool",
        "issued": "datetime64[ns]",
    }
    assert frame.loc[0, "amount"] == 1200.5
    assert math.isnan(frame.loc[1, "years"])
    assert frame.loc[0, "grade"] == "G"
    assert frame.loc[0, "issued"] == pd.Timestamp("2024-03-01 09:00:00")  # UTC


def test_list_rows_in_signature_order_and_json_round_trip() -> None:
    sig = json.loads(json.dumps(SIGNATURE))
    by_record = frame_from_rows(sig, [ROW])
    by_list = frame_from_rows(sig, [[ROW[f["name"]] for f in sig["inputs"]]])
    pd.testing.assert_frame_equal(by_record, by_list)


def test_integer_fields_take_whole_floats_and_numpy_numbers() -> None:
    sig = {"inputs": [{"name": "n", "type": "integer", "nullable": False}], "output": {}}
    frame = frame_from_rows(sig, [{"n": 3.0}, {"n": np.int64(4)}, {"n": 5}])
    assert frame["n"].tolist() == [3.0, 4.0, 5.0]


def test_nullable_strings_and_booleans_hold_nan() -> None:
    sig = {
        "inputs": [
            {"name": "s", "type": "string", "nullable": True},
            {"name": "b", "type": "boolean", "nullable": True},
        ],
        "output": {},
    }
    frame = frame_from_rows(sig, [["x", True], [None, None]])
    assert frame.dtypes.astype(str).tolist() == ["object", "object"]
    assert frame["s"].iloc[0] == "x" and frame["b"].iloc[0] is True
    assert frame.isna().iloc[1].all()


def test_timezone_fields_keep_their_zone() -> None:
    sig = {"inputs": [{"name": "t", "type": "datetime", "nullable": False, "timezone": "UTC"}]}
    frame = frame_from_rows(sig, [["2024-01-01T00:00:00+02:00"], [dt.datetime(2024, 1, 2)]])
    assert str(frame["t"].dtype) == "datetime64[ns, UTC]"
    assert frame["t"].iloc[0] == pd.Timestamp("2023-12-31 22:00", tz="UTC")


def _row(**changes: Any) -> dict[str, Any]:
    return {**ROW, **changes}


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in ROW.items() if k != name}


@pytest.mark.parametrize(
    ("rows", "field", "row", "match"),
    [
        ([ROW, _without("term")], "term", 1, "missing the field 'term'"),
        ([ROW, {**_without("term"), "trm": 36}], "term", 1, r"it has 'trm'"),
        ([_row(extra=1)], "extra", 0, "'extra', which is not in the model's signature"),
        ([ROW, ROW, _row(amount="12")], "amount", 2, "the string '12', which should be a num"),
        ([_row(amount=True)], "amount", 0, "the boolean true, which should be a number"),
        ([_row(amount=[1])], "amount", 0, "an array, which should be a number"),
        ([_row(term=None)], "term", 0, "null, which is missing, but the field is not nullable"),
        ([ROW, _row(term=float("nan"))], "term", 1, "NaN, which is missing"),
        ([_row(term=2.5)], "term", 0, "the number 2.5, which should be an integer"),
        ([_row(amount=float("inf"))], "amount", 0, "the number inf, which should be a number"),
        ([_row(amount=10**400)], "amount", 0, "too large"),
        ([_row(home=3)], "home", 0, "the number 3, which should be a string"),
        ([_row(home=None)], "home", 0, "null, which is missing"),
        ([_row(verified="yes")], "verified", 0, "'yes', which should be true or false"),
        ([_row(verified=1)], "verified", 0, "the number 1, which should be true or false"),
        ([ROW, _row(issued="yesterday")], "issued", 1, "ISO 8601"),
        ([_row(issued=5)], "issued", 0, "the number 5, which should be an ISO 8601"),
        ([ROW, [1, 2]], None, 1, "is an array, not a record"),
        ([ROW, "x"], None, 1, "is the string 'x', not a record"),
        (["x"], None, 0, "not a record or an array"),
        ([[1] * 8, [1] * 7], None, 1, "has 7 values; the signature has 8 fields"),
        ([[1] * 8, ROW], None, 1, "is an object, but row 0 is an array"),
    ],
)
def test_each_bad_row_names_field_and_row(rows, field, row, match) -> None:
    with pytest.raises(InvalidInput, match=match) as err:
        frame_from_rows(SIGNATURE, rows)
    assert (err.value.field, err.value.row) == (field, row)
    assert f"Row {row} (0-based)" in str(err.value)
    if field is not None:
        assert repr(field) in str(err.value)
    assert err.value.status == 422


def test_empty_and_too_many_rows() -> None:
    with pytest.raises(InvalidInput, match="empty") as err:
        frame_from_rows(SIGNATURE, [])
    assert (err.value.field, err.value.row) == (None, None)
    with pytest.raises(InvalidInput, match=r"Got 3 rows; at most 2 .*row 2, 0-based") as err:
        frame_from_rows(SIGNATURE, [ROW] * 3, max_rows=2)
    assert err.value.row == 2
    with pytest.raises(InvalidInput, match="Expected a list of rows, got a dict"):
        frame_from_rows(SIGNATURE, ROW)


def test_public_constructor_fallback_builds_the_same_frame() -> None:
    frame = frame_from_rows(SIGNATURE, [ROW, ROW])
    names = tuple(frame.columns)
    arrays = [frame[c].array if frame[c].dtype.kind == "M" else frame[c].to_numpy() for c in names]
    pd.testing.assert_frame_equal(_frame(names, arrays, 2), frame)
    pd.testing.assert_frame_equal(_frame_public(names, arrays, frame.index), frame)


# -- property: valid rows always give the signature's columns and dtypes ------------------------

_DTYPES = {"integer": "float64", "number": "float64", "string": "object", "datetime": "<M8[ns]"}


def _value(kind: str) -> st.SearchStrategy[Any]:
    if kind == "integer":
        return st.integers(-(2**53), 2**53)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6)
    if kind == "string":
        return st.text(max_size=8)
    if kind == "boolean":
        return st.booleans()
    stamps = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
    return stamps.map(dt.datetime.isoformat)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[dict[str, Any], list[Any]]:
    fields = [
        {
            "name": f"f{i}",
            "type": draw(st.sampled_from(["integer", "number", "string", "boolean", "datetime"])),
            "nullable": draw(st.booleans()),
        }
        for i in range(draw(st.integers(1, 6)))
    ]
    records = []
    for _ in range(draw(st.integers(1, 12))):
        record = {}
        for f in fields:
            value = _value(f["type"])
            record[f["name"]] = draw(st.none() | value if f["nullable"] else value)
        records.append(record)
    rows = [list(r.values()) for r in records] if draw(st.booleans()) else records
    return {"inputs": fields, "output": {"task": "regression", "returns": "value"}}, rows


@settings(max_examples=150, deadline=None)
@given(_requests())
def test_valid_rows_give_the_signature_columns_and_dtypes(request) -> None:
    signature, rows = request
    frame = frame_from_rows(json.loads(json.dumps(signature)), rows)
    assert list(frame.columns) == [f["name"] for f in signature["inputs"]]
    assert len(frame) == len(rows)
    for f in signature["inputs"]:
        want = _DTYPES.get(f["type"]) or ("object" if f["nullable"] else "bool")
        assert frame[f["name"]].dtype == np.dtype(want), f
    for i, row in enumerate(rows):
        values = row.values() if isinstance(row, dict) else row
        for f, value in zip(signature["inputs"], values, strict=True):
            got = frame[f["name"]].iloc[i]
            if value is None:
                assert pd.isna(got)
            elif f["type"] in ("integer", "number"):
                assert got == float(value)
            elif f["type"] == "datetime":
                assert got == pd.Timestamp(value)
            else:
                assert got == value


def test_dict_subclass_records_are_records() -> None:
    from collections import OrderedDict

    frame = frame_from_rows(SIGNATURE, [OrderedDict(ROW), ROW])
    assert len(frame) == 2 and frame["term"].tolist() == [36.0, 36.0]
