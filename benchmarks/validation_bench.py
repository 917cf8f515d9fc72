"""Validation of 1M rows × 25 columns against an inferred schema: Conveyor's ``validate`` and
pandera alone on the same data and checks (the target is ≤ 3 s).

Run with ``.venv/bin/python benchmarks/validation_bench.py [--rows N]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from conveyor.data.schema import Schema, infer_schema
from conveyor.data.validation import validate

GRADES = ["A", "B", "C", "D", "E", "F", "G"]
STATES = ["CA", "NY", "TX", "FL", "WA", "IL", "OH", "GA", "NC", "MI", "PA", "NJ"]
PURPOSES = ["car", "home", "debt", "medical", "education", "business", "other"]


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """20 numeric columns (an id, 9 ints, 10 floats, one with nulls) and 5 categorical ones."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {"loan_id": np.arange(rows, dtype=np.int64)}
    for i in range(9):
        data[f"int_{i}"] = rng.integers(0, 1000 * (i + 1), rows)
    for i in range(10):
        data[f"float_{i}"] = rng.normal(100.0 * i, 10.0 + i, rows)
    data["float_9"][rng.random(rows) < 0.01] = np.nan  # type: ignore[index]
    choices = [GRADES, STATES, PURPOSES, ["own", "rent", "mortgage"], ["36m", "60m"]]
    for i, values in enumerate(choices):
        codes = rng.integers(0, len(values), rows)
        data[f"cat_{i}"] = pd.array(np.array(values)[codes], dtype="str")
    return pd.DataFrame(data)


def plant_problems(frame: pd.DataFrame) -> pd.DataFrame:
    """Out-of-range values, unknown categories, nulls where none are allowed, a duplicate id."""
    frame = frame.copy()
    frame.loc[[17, 204, 9000], "int_0"] = [50_000, -1, 99_999]
    frame.loc[range(0, 1000, 10), "float_3"] = 1e9
    frame.loc[[5, 6], "cat_0"] = "Z"
    frame.loc[[3], "float_1"] = np.nan
    frame.loc[42, "loan_id"] = 41
    return frame


def plant_many(frame: pd.DataFrame) -> pd.DataFrame:
    """Every tenth row out of range in five columns: 500k failure cases to fold."""
    frame = frame.copy()
    for name in ("int_1", "int_2"):
        frame.loc[frame.index[::10], name] = 10**9
    for name in ("float_0", "float_2", "float_5"):
        frame.loc[frame.index[::10], name] = 1e12
    return frame


def plain_pandera(schema: Schema) -> pa.DataFrameSchema:
    """The same checks written directly in pandera, as a user of pandera alone would."""
    columns = {}
    for column in schema.columns:
        checks = []
        if column.min is not None:
            checks.append(pa.Check.in_range(column.min, column.max))
        if column.allowed is not None:
            checks.append(pa.Check.isin(column.allowed))
        dtype = {"int": "int64", "float": "float64", "string": "str"}[column.dtype]
        columns[column.name] = pa.Column(
            dtype, checks=checks, nullable=column.nullable, unique=column.unique
        )
    return pa.DataFrameSchema(columns, strict=True)


def median_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pandera_alone(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> None:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    frame = make_frame(args.rows)
    start = time.perf_counter()
    schema = infer_schema(frame)
    infer_s = time.perf_counter() - start
    bad = plant_problems(frame)
    many = plant_many(frame)
    direct = plain_pandera(schema)
    validate(bad.head(1000), schema)  # first call pays pandera's imports
    pandera_alone(direct, bad.head(1000))

    report = validate(bad, schema)
    rows = [
        ("infer_schema", infer_s),
        ("validate, clean frame", median_seconds(lambda: validate(frame, schema))),
        ("validate, planted problems", median_seconds(lambda: validate(bad, schema))),
        (
            "validate, 10% of rows failing in 5 columns",
            median_seconds(lambda: validate(many, schema)),
        ),
        ("pandera alone, clean frame", median_seconds(lambda: pandera_alone(direct, frame))),
        ("pandera alone, planted problems", median_seconds(lambda: pandera_alone(direct, bad))),
        (
            "pandera alone, 10% failing in 5 columns",
            median_seconds(lambda: pandera_alone(direct, many)),
        ),
    ]
    print(f"Validation of {len(frame):,} rows × {len(frame.columns)} columns (median of 3)\n")
    print("| what | seconds |")
    print("|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    print("\n```\n" + report.to_text() + "\n```")


if __name__ == "__main__":
    main()
