from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.data.schema import ColumnSchema, Schema, infer_schema
from conveyor.exceptions import DataError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "loan_id": [10, 11, 12, 13],
            "amount": [1000.5, 2500.0, np.nan, 40000.0],
            "grade": ["B", "A", "B", None],
            "opened": pd.to_datetime(["2024-01-05", "2024-03-01", "2023-12-31", "2024-02-10"]),
            "defaulted": [True, False, False, True],
            "term": [36, 60, 36, 60],
        }
    )


def test_infer_each_dtype_with_exact_ranges_nulls_and_keys() -> None:
    schema = infer_schema(_frame())

    assert schema.columns == [
        ColumnSchema("loan_id", "int", nullable=False, min=10, max=13, unique=True),
        ColumnSchema("amount", "float", nullable=True, min=1000.5, max=40000.0),
        ColumnSchema("grade", "string", nullable=True, allowed=["A", "B"]),
        ColumnSchema(
            "opened",
            "datetime",
            min="2023-12-31T00:00:00",
            max="2024-03-01T00:00:00",
            unique=True,
        ),
        ColumnSchema("defaulted", "bool"),
        ColumnSchema("term", "int", min=36, max=60),
    ]
    assert type(schema.column("loan_id").min) is int
    assert type(schema.column("amount").min) is float


def test_infer_reads_pandas_extension_and_object_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "cat": pd.Categorical(["x", "y", "x"]),
            "obj": pd.Series(["p", "q", "r"], dtype=object),
            "utc": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", None]),
        }
    )

    schema = infer_schema(frame)

    assert [(c.dtype, c.nullable) for c in schema.columns] == [
        ("int", True),
        ("bool", True),
        ("string", False),
        ("string", False),
        ("datetime", True),
    ]
    assert schema.column("n").min == 1 and schema.column("n").max == 3
    assert schema.column("cat").allowed == ["x", "y"]
    assert schema.column("obj").unique is True
    assert schema.column("utc").max == "2024-01-02T00:00:00+00:00"


def test_categories_stop_at_categorical_max() -> None:
    frame = pd.DataFrame({"city": [f"c{i % 4}" for i in range(20)]})

    assert infer_schema(frame, categorical_max=4).column("city").allowed == [
        "c0",
        "c1",
        "c2",
        "c3",
    ]
    assert infer_schema(frame, categorical_max=3).column("city").allowed is None


def test_uniqueness_needs_two_rows_no_duplicates_and_an_identifier_kind() -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "dup": [1, 1, 2], "x": [0.1, 0.2, 0.3]})

    schema = infer_schema(frame)

    assert schema.column("id").unique is True
    assert schema.column("dup").unique is False
    assert schema.column("x").unique is False  # floats are unique by chance, not by design
    assert infer_schema(frame.head(1)).column("id").unique is False


def test_an_all_null_column_and_an_empty_frame() -> None:
    frame = pd.DataFrame({"empty": [None, None]})

    column = infer_schema(frame).column("empty")

    assert (column.dtype, column.nullable, column.min, column.allowed) == ("string", True, None, [])
    assert infer_schema(pd.DataFrame({"a": pd.Series([], dtype="int64")})).columns == [
        ColumnSchema("a", "int")
    ]


def test_mixed_object_column_is_a_data_error_naming_it() -> None:
    frame = pd.DataFrame({"mess": pd.Series([1, "two", 3.0], dtype=object)})

    with pytest.raises(DataError, match="Column 'mess' holds values of mixed kinds"):
        infer_schema(frame)


def test_yaml_is_readable_and_round_trips(tmp_path: Path) -> None:
    schema = infer_schema(_frame())
    path = tmp_path / "schema" / "loans.yaml"
    path.parent.mkdir()
    path.write_text(schema.to_yaml())

    text = path.read_text()

    assert text.startswith("# Conveyor data schema.")
    assert "  grade:\n    dtype: string\n    nullable: true\n    allowed: [A, B]\n" in text
    assert "    min: '2023-12-31T00:00:00'\n" in text
    assert Schema.from_yaml(text, file=str(path)) == schema


def test_hand_edits_are_read_and_normalised() -> None:
    text = """
columns:
  amount: {dtype: float, min: 0, max: 50000}
  opened: {dtype: datetime, min: 2020-01-01}
  code: {dtype: int, allowed: [1, 2, 3]}
"""
    schema = Schema.from_yaml(text, file="schema/loans.yaml")

    assert schema.columns == [
        ColumnSchema("amount", "float", min=0.0, max=50000.0),
        ColumnSchema("opened", "datetime", min="2020-01-01T00:00:00"),
        ColumnSchema("code", "int", allowed=[1, 2, 3]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "columns:\n  amount: {dtype: float, min: lots}\n",
            "Schema file 'schema/loans.yaml', column 'amount', key 'min': expected a number,"
            " got 'lots'.",
        ),
        (
            "columns:\n  amount: {dtype: decimal}\n",
            "Schema file 'schema/loans.yaml', column 'amount', key 'dtype': got 'decimal';"
            " expected one of int, float, bool, string, datetime.",
        ),
        (
            "columns:\n  amount: {dtype: float, maximum: 3}\n",
            "Schema file 'schema/loans.yaml', column 'amount', key 'maximum': unknown key;"
            " the keys are dtype, nullable, min, max, allowed, unique.",
        ),
        (
            "columns:\n  amount: {dtype: int, nullable: maybe}\n",
            "Schema file 'schema/loans.yaml', column 'amount', key 'nullable': expected true or"
            " false, got 'maybe'.",
        ),
        (
            "columns:\n  amount: {dtype: int, min: 5, max: 1}\n",
            "Schema file 'schema/loans.yaml', column 'amount', key 'min': 5 is above max 1;"
            " swap them.",
        ),
        (
            "columns:\n  grade: {dtype: string, allowed: [A, 3]}\n",
            "Schema file 'schema/loans.yaml', column 'grade', key 'allowed': 3 is not a string;"
            " quote it or remove it.",
        ),
        (
            "columns:\n  day: {dtype: datetime, max: someday}\n",
            "Schema file 'schema/loans.yaml', column 'day', key 'max': expected an ISO 8601"
            " date or time, got 'someday'.",
        ),
        (
            "- amount\n",
            "Schema file 'schema/loans.yaml' must be a mapping with a 'columns' mapping",
        ),
        ("columns: {a: [\n", "Schema file 'schema/loans.yaml' is not valid YAML at line 2"),
    ],
)
def test_malformed_schema_file_names_file_column_and_key(text: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        Schema.from_yaml(text, file="schema/loans.yaml")

    assert str(info.value).startswith(message)


_names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
_ints = st.integers(-(2**62), 2**62)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_stamps = st.datetimes(
    min_value=pd.Timestamp("1700-01-01").to_pydatetime(),
    max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
).map(lambda d: pd.Timestamp(d).isoformat())


@st.composite
def _columns(draw: st.DrawFn, name: str) -> ColumnSchema:
    dtype = draw(st.sampled_from(["int", "float", "bool", "string", "datetime"]))
    column = ColumnSchema(name, dtype, nullable=draw(st.booleans()), unique=draw(st.booleans()))
    bound = {"int": _ints, "float": _floats, "datetime": _stamps}.get(dtype)
    if bound is not None:
        low, high = sorted([draw(bound), draw(bound)])
        column.min = draw(st.sampled_from([low, None]))
        column.max = draw(st.sampled_from([high, None]))
    if dtype == "string":
        column.allowed = draw(st.none() | st.lists(_names, max_size=5))
    if dtype == "int":
        column.allowed = draw(st.none() | st.lists(_ints, max_size=5))
    return column


@st.composite
def _schemas(draw: st.DrawFn) -> Schema:
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    return Schema(columns=[draw(_columns(name)) for name in names])


@settings(max_examples=150, deadline=None)
@given(_schemas())
def test_any_schema_round_trips_through_yaml(schema: Schema) -> None:
    assert Schema.from_yaml(schema.to_yaml(), file="s.yaml") == schema
