"""Check a DataFrame against a :class:`~conveyor.data.schema.Schema`, collecting every failure.

pandera does the checking: the schema becomes a pandera ``DataFrameSchema`` and is run with
lazy validation, so one pass reports every failing check instead of stopping at the first.
pandera's failure cases (one row per failing value) are then folded into one
:class:`CheckFailure` per check, with a count and a few example rows, which is what a person
reading a gate's evidence needs. On 1M rows × 25 columns this takes well under a second
(``benchmarks/validation_bench.py``), so no hand-written fast path is needed.

pandas and pandera are imported inside the functions, never at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.data.schema import ColumnSchema, Schema, dtype_family

if TYPE_CHECKING:
    import pandas
    import pandera.pandas

EXAMPLES = 5
PRESENT = "present"
KNOWN = "in_schema"
NOT_NULL = "not_nullable"
UNIQUE = "unique"
# Which actual dtypes each schema dtype accepts: an int column where floats are expected is
# a safe widening (a CSV of whole numbers reads as int), the reverse is not.
ACCEPTS = {
    "int": {"int"},
    "float": {"float", "int"},
    "bool": {"bool"},
    "string": {"string"},
    "datetime": {"datetime"},
}


@dataclass
class CheckFailure:
    """One check that failed: on which column, on how many rows, and a few of them.

    ``examples`` holds up to 5 ``{"row": index label, "value": offending value}`` dicts, in
    the frame's order; column-level failures (missing, extra, wrong dtype) have none.
    """

    column: str
    check: str
    failing_rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_text(self) -> str:
        """One line, such as ``amount: in_range(1000, 40000) failed for 12 rows, e.g. …``."""
        if self.check == PRESENT:
            return f"{self.column}: column is missing"
        if self.check == KNOWN:
            return f"{self.column}: column is not in the schema"
        if self.check.startswith("dtype(") and not self.examples:
            return f"{self.column}: {self.check} failed for the whole column"
        noun = "row" if self.failing_rows == 1 else "rows"
        line = f"{self.column}: {self.check} failed for {self.failing_rows} {noun}"
        if self.examples:
            shown = ", ".join(f"row {e['row']}: {_show(e['value'])}" for e in self.examples)
            line += f", e.g. {shown}"
        return line


@dataclass
class ValidationReport:
    """Every failing check of one validation; ``ok`` is True when there are none."""

    ok: bool
    failures: list[CheckFailure]
    rows: int = 0
    columns: int = 0

    def to_text(self) -> str:
        """One line per failing check, then a summary line."""
        lines = [failure.to_text() for failure in self.failures]
        size = f"{self.rows:,} rows × {self.columns} columns"
        if self.ok:
            lines.append(f"Validation passed: {size}, every check holds.")
        else:
            n = len(self.failures)
            lines.append(f"Validation failed: {n} check{'s' if n != 1 else ''} failed on {size}.")
        return "\n".join(lines)


def validate(frame: pandas.DataFrame, schema: Schema) -> ValidationReport:
    """Check ``frame`` against ``schema`` and report every failing check.

    Missing and extra columns are failures. A column of the wrong dtype reports only that:
    its range, category and uniqueness checks would be meaningless.

    Args:
        frame: The data to check.
        schema: What it must look like, from :func:`~conveyor.data.schema.infer_schema` or
            :meth:`~conveyor.data.schema.Schema.from_yaml`.
    """
    import pandera.pandas as pa

    try:
        to_pandera(schema).validate(frame, lazy=True)
        failures: list[CheckFailure] = []
    except pa.errors.SchemaErrors as exc:
        failures = _fold(exc.failure_cases, frame, schema)
    return ValidationReport(
        ok=not failures, failures=failures, rows=len(frame), columns=len(frame.columns)
    )


def to_pandera(schema: Schema) -> pandera.pandas.DataFrameSchema:
    """Build the pandera schema that :func:`validate` runs, for use in pandera-based code.

    The check order of each column is fixed (dtype, range, allowed values) because
    :func:`validate` maps pandera's ``check_number`` back to it.
    """
    import pandera.pandas as pa

    columns = {}
    for column in schema.columns:
        checks = [
            pa.Check(_dtype_test(column.dtype), element_wise=False, name=f"dtype({column.dtype})")
        ]
        low, high = _bounds(column)
        if low is not None and high is not None:
            checks.append(pa.Check.in_range(low, high))
        elif low is not None:
            checks.append(pa.Check.greater_than_or_equal_to(low))
        elif high is not None:
            checks.append(pa.Check.less_than_or_equal_to(high))
        if column.allowed is not None:
            checks.append(pa.Check.isin(column.allowed))
        columns[column.name] = pa.Column(
            None, checks=checks, nullable=column.nullable, unique=column.unique, required=True
        )
    return pa.DataFrameSchema(columns, strict=True)


def check_names(column: ColumnSchema) -> list[str]:
    """The names :func:`validate` reports for a column's checks, in pandera's check order."""
    names = [f"dtype({column.dtype})"]
    low, high = column.min, column.max
    if low is not None and high is not None:
        names.append(f"in_range({_show(low)}, {_show(high)})")
    elif low is not None:
        names.append(f">= {_show(low)}")
    elif high is not None:
        names.append(f"<= {_show(high)}")
    if column.allowed is not None:
        names.append(f"allowed({_show_list(column.allowed)})")
    return names


# -- internals ------------------------------------------------------------------------------


def _dtype_test(expected: str) -> Any:
    accepted = ACCEPTS[expected]

    def test(series: pandas.Series) -> bool:
        return dtype_family(series) in accepted

    return test


def _bounds(column: ColumnSchema) -> tuple[Any, Any]:
    if column.dtype != "datetime":
        return column.min, column.max
    import pandas as pd

    def stamp(value: Any) -> Any:
        return None if value is None else pd.Timestamp(value)

    return stamp(column.min), stamp(column.max)


# The order failures are listed in, within one column.
_ORDER = {PRESENT: 0, "dtype": 1, NOT_NULL: 2, "check": 3, UNIQUE: 9, KNOWN: 10}


def _fold(cases: pandas.DataFrame, frame: pandas.DataFrame, schema: Schema) -> list[CheckFailure]:
    """One CheckFailure per failing check, from pandera's one row per failing value.

    Counting and picking examples are grouped operations, so a check failing on 100k rows
    costs milliseconds, not a Python loop over each row.
    """
    import pandas as pd

    position = {c.name: i for i, c in enumerate(schema.columns)}
    names = {c.name: check_names(c) for c in schema.columns}
    failures: list[tuple[tuple[int, int], CheckFailure]] = []

    structural = cases["check"].isin(["column_in_dataframe", "column_in_schema"])
    for check, value in zip(
        cases.loc[structural, "check"], cases.loc[structural, "failure_case"], strict=True
    ):
        name, kind = str(value), PRESENT if check == "column_in_dataframe" else KNOWN
        failure = CheckFailure(column=name, check=kind, failing_rows=len(frame))
        failures.append(((position.get(name, len(position)), _ORDER[kind]), failure))

    cases = cases.loc[~structural]
    if frame.index.is_unique:
        # Examples are the first failing rows in the frame's order: pandera lists its failure
        # cases in an order that changed between pandas 2 and 3.
        where = frame.index.get_indexer(cases["index"])
        cases = cases.iloc[where.argsort(kind="stable")]
    number = pd.to_numeric(cases["check_number"], errors="coerce").fillna(-1).astype(int)
    cases = cases.assign(number=number)
    grouped = cases.groupby(["column", "check", "number"], sort=False)
    counts = grouped.size()
    heads = grouped.head(EXAMPLES)
    examples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for column, check, n, row, value in zip(
        heads["column"],
        heads["check"],
        heads["number"],
        heads["index"],
        heads["failure_case"],
        strict=True,
    ):
        example = {"row": _python(row), "value": _example_value(frame, column, row, value)}
        examples.setdefault((column, check, n), []).append(example)
    wrong_dtype = {column for column, _, n in counts.index if n == 0}
    for (column, check, n), count in counts.items():
        if check == NOT_NULL:
            kind, order = NOT_NULL, _ORDER[NOT_NULL]
        elif check == "field_uniqueness":
            kind, order = UNIQUE, _ORDER[UNIQUE]
        elif n == 0:
            kind, order = names[column][0], _ORDER["dtype"]
        else:
            kind, order = names[column][n], _ORDER["check"] + n
        if column in wrong_dtype and n != 0:
            continue  # value checks on the wrong type are noise (or a comparison error)
        failure = CheckFailure(column=column, check=kind, failing_rows=int(count))
        if n == 0:
            failure.failing_rows = len(frame)
        else:
            failure.examples = examples[(column, check, n)]
        failures.append(((position.get(column, len(position)), order), failure))
    return [failure for _, failure in sorted(failures, key=lambda item: item[0])]


def _example_value(frame: pandas.DataFrame, column: str, row: Any, reported: Any) -> Any:
    """The offending value, read from the frame where the row label is unambiguous.

    pandera collects every failure case into one column, where ints may come back as floats.
    """
    if column in frame.columns and frame.index.is_unique:
        try:
            return _python(frame.at[row, column])
        except (KeyError, TypeError):
            pass
    return _python(reported)


def _python(value: Any) -> Any:
    """A plain Python value for reports: NumPy scalars unwrapped, NaN and NaT as None."""
    import numpy as np
    import pandas as pd

    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    item = getattr(value, "item", None)
    if isinstance(value, np.generic) and item is not None:
        value = item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _show_list(values: list[Any]) -> str:
    shown = ", ".join(_show(v) for v in values[:EXAMPLES])
    if len(values) > EXAMPLES:
        shown += f", … {len(values) - EXAMPLES} more"
    return shown
