from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from conveyor.data.schema import ColumnSchema, Schema, infer_schema
from conveyor.data.validation import CheckFailure, ValidationReport, to_pandera, validate


def _loans(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "loan_id": np.arange(rows, dtype=np.int64),
            "loan_amount": rng.integers(1000, 40001, rows),
            "rate": rng.uniform(0.05, 0.3, rows),
            "grade": pd.array(np.array(["A", "B", "C"])[rng.integers(0, 3, rows)], dtype="str"),
            "opened": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, rows), "D"),
        }
    )


def _schema() -> Schema:
    return Schema(
        [
            ColumnSchema("loan_id", "int", min=0, max=299, unique=True),
            ColumnSchema("loan_amount", "int", min=1000, max=40000),
            ColumnSchema("rate", "float", min=0.05, max=0.3),
            ColumnSchema("grade", "string", allowed=["A", "B", "C"]),
            ColumnSchema(
                "opened", "datetime", min="2024-01-01T00:00:00", max="2024-12-31T00:00:00"
            ),
        ]
    )


def test_a_clean_frame_passes() -> None:
    report = validate(_loans(), _schema())

    assert report == ValidationReport(ok=True, failures=[], rows=300, columns=5)
    assert report.to_text() == "Validation passed: 300 rows × 5 columns, every check holds."


def test_an_inferred_schema_accepts_its_own_data() -> None:
    frame = _loans()

    assert validate(frame, infer_schema(frame)).ok


def test_each_planted_problem_is_caught_with_exact_counts_and_examples() -> None:
    frame = _loans()
    frame.loc[[17, 204], "loan_amount"] = [50000, 0]
    frame.loc[[3, 8, 9, 10, 11, 12, 13], "rate"] = [0.9, np.nan, 0.5, 0.5, 0.5, 0.5, 0.5]
    frame.loc[[5, 6], "grade"] = ["Z", None]
    frame.loc[7, "opened"] = pd.Timestamp("2030-06-01")
    frame.loc[42, "loan_id"] = 41

    report = validate(frame, _schema())

    assert not report.ok
    assert report.failures == [
        CheckFailure("loan_id", "unique", 2, [{"row": 41, "value": 41}, {"row": 42, "value": 41}]),
        CheckFailure(
            "loan_amount",
            "in_range(1000, 40000)",
            2,
            [{"row": 17, "value": 50000}, {"row": 204, "value": 0}],
        ),
        CheckFailure("rate", "not_nullable", 1, [{"row": 8, "value": None}]),
        CheckFailure(
            "rate",
            "in_range(0.05, 0.3)",
            6,
            [
                {"row": r, "value": v}
                for r, v in [(3, 0.9), (9, 0.5), (10, 0.5), (11, 0.5), (12, 0.5)]
            ],
        ),
        CheckFailure("grade", "not_nullable", 1, [{"row": 6, "value": None}]),
        CheckFailure("grade", "allowed('A', 'B', 'C')", 1, [{"row": 5, "value": "Z"}]),
        CheckFailure(
            "opened",
            "in_range('2024-01-01T00:00:00', '2024-12-31T00:00:00')",
            1,
            [{"row": 7, "value": "2030-06-01T00:00:00"}],
        ),
    ]
    assert type(report.failures[1].examples[0]["value"]) is int


def test_to_text_prints_one_line_per_failing_check_and_a_summary() -> None:
    frame = _loans()
    frame.loc[[17, 204], "loan_amount"] = [50000, 0]
    frame.loc[[5, 6], "grade"] = ["Z", None]
    frame["notes"] = "x"
    frame = frame.drop(columns=["rate"])

    text = validate(frame, _schema()).to_text()

    assert text == (
        "loan_amount: in_range(1000, 40000) failed for 2 rows, e.g. row 17: 50000, row 204: 0\n"
        "rate: column is missing\n"
        "grade: not_nullable failed for 1 row, e.g. row 6: null\n"
        "grade: allowed('A', 'B', 'C') failed for 1 row, e.g. row 5: 'Z'\n"
        "notes: column is not in the schema\n"
        "Validation failed: 5 checks failed on 300 rows × 5 columns."
    )


def test_missing_and_extra_columns_are_failures() -> None:
    frame = _loans().drop(columns=["grade", "rate"]).assign(extra=1, more=2.0)

    report = validate(frame, _schema())

    assert [(f.column, f.check, f.failing_rows, f.examples) for f in report.failures] == [
        ("rate", "present", 300, []),
        ("grade", "present", 300, []),
        ("extra", "in_schema", 300, []),
        ("more", "in_schema", 300, []),
    ]


def test_a_wrong_dtype_reports_only_the_dtype() -> None:
    frame = _loans()
    frame["loan_amount"] = frame["loan_amount"].astype(str)
    frame["loan_id"] = frame["loan_id"].astype(float)

    report = validate(frame, _schema())

    assert report.failures == [
        CheckFailure("loan_id", "dtype(int)", 300),
        CheckFailure("loan_amount", "dtype(int)", 300),
    ]
    assert report.to_text().splitlines()[0] == "loan_id: dtype(int) failed for the whole column"


def test_an_int_column_is_accepted_where_floats_are_expected() -> None:
    frame = _loans().assign(rate=0)
    schema = Schema([ColumnSchema("rate", "float", min=0.0, max=1.0)])

    assert validate(frame[["rate"]], schema).ok


def test_examples_stop_at_five_and_use_the_frames_index_labels() -> None:
    frame = _loans(20).set_axis([f"r{i}" for i in range(20)])
    frame["loan_amount"] = 5

    failure = validate(frame, _schema()).failures[0]

    assert failure.failing_rows == 20
    assert failure.examples == [{"row": f"r{i}", "value": 5} for i in range(5)]


def test_a_schema_file_round_trip_validates_the_same(tmp_path: Path) -> None:
    frame = _loans()
    path = tmp_path / "loans.yaml"
    path.write_text(infer_schema(frame).to_yaml())
    frame.loc[0, "grade"] = "D"

    report = validate(frame, Schema.from_yaml(path.read_text(), file=str(path)))

    assert [(f.column, f.check, f.failing_rows) for f in report.failures] == [
        ("grade", "allowed('A', 'B', 'C')", 1)
    ]


def test_counts_agree_with_an_independent_pandas_computation() -> None:
    """Plant random problems and recount them with plain boolean masks."""
    rng = np.random.default_rng(7)
    frame = _loans(2000, seed=1)
    schema = infer_schema(frame)
    amount, rate, grade = (schema.column(n) for n in ("loan_amount", "rate", "grade"))
    frame.loc[rng.choice(2000, 37, replace=False), "loan_amount"] = 10**6
    frame.loc[rng.choice(2000, 23, replace=False), "rate"] = -1.0
    frame.loc[rng.choice(2000, 11, replace=False), "rate"] = np.nan
    frame.loc[rng.choice(2000, 19, replace=False), "grade"] = "Q"
    frame.loc[rng.choice(2000, 5, replace=False), "loan_id"] = 0

    report = validate(frame, schema)

    rates = frame["rate"].dropna()
    expected = {
        ("loan_id", "unique"): int(frame["loan_id"].duplicated(keep=False).sum()),
        ("loan_amount", f"in_range({amount.min}, {amount.max})"): int(
            (~frame["loan_amount"].between(amount.min, amount.max)).sum()
        ),
        ("rate", "not_nullable"): int(frame["rate"].isna().sum()),
        ("rate", f"in_range({rate.min}, {rate.max})"): int(
            (~rates.between(rate.min, rate.max)).sum()
        ),
        ("grade", "allowed('A', 'B', 'C')"): int((~frame["grade"].isin(grade.allowed)).sum()),
    }
    assert {(f.column, f.check): f.failing_rows for f in report.failures} == expected
    assert all(v > 0 for v in expected.values())


def test_to_pandera_is_a_usable_pandera_schema() -> None:
    frame = _loans()
    frame.loc[3, "loan_amount"] = 1

    with pytest.raises(pa.errors.SchemaErrors) as info:
        to_pandera(_schema()).validate(frame, lazy=True)

    cases = info.value.failure_cases
    assert cases[["column", "index"]].values.tolist() == [["loan_amount", 3]]


def test_the_benchmark_frame_reports_exactly_its_planted_problems() -> None:
    """benchmarks/validation_bench.py on a small frame, so the benchmark cannot rot unnoticed."""
    from benchmarks.validation_bench import make_frame, plain_pandera, plant_problems

    frame = make_frame(20_000)
    schema = infer_schema(frame)
    bad = plant_problems(frame)

    report = validate(bad, schema)

    assert [(f.column, f.check.split("(")[0], f.failing_rows) for f in report.failures] == [
        ("loan_id", "unique", 2),
        ("int_0", "in_range", 3),
        ("float_1", "not_nullable", 1),
        ("float_3", "in_range", 100),
        ("cat_0", "allowed", 2),
    ]
    assert report.failures[1].examples == [
        {"row": 17, "value": 50000},
        {"row": 204, "value": -1},
        {"row": 9000, "value": 99999},
    ]
    with pytest.raises(pa.errors.SchemaErrors) as info:
        plain_pandera(schema).validate(bad, lazy=True)
    assert len(info.value.failure_cases) == 2 + 3 + 1 + 100 + 2
