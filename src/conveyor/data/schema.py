"""A data schema a person can read, edit and commit: inferred once, then owned by the team.

``conveyor data infer`` writes one from a snapshot (``schema/loans.yaml``); validation checks
every later snapshot against it. The inferred bounds are the exact observed ones on purpose:
widening them is a decision for whoever commits the file, not a guess of ours.

pandas and PyYAML are imported inside the functions that need them, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import DataError

if TYPE_CHECKING:
    import pandas

DTYPES = ("int", "float", "bool", "string", "datetime")
COLUMN_KEYS = ("dtype", "nullable", "min", "max", "allowed", "unique")
HEADER = (
    "# Conveyor data schema. Inferred from the data, then yours: widen min/max, add or remove\n"
    "# allowed values, and commit this file. Validation checks every new snapshot against it.\n"
)


@dataclass
class ColumnSchema:
    """What one column must look like.

    ``min``/``max`` are numbers for int and float columns and ISO 8601 strings for datetime
    columns; ``allowed`` lists the only values a column may hold (None: any value).
    """

    name: str
    dtype: str
    nullable: bool = False
    min: Any = None
    max: Any = None
    allowed: list[Any] | None = None
    unique: bool = False


@dataclass
class Schema:
    """The expected columns of a data set, in order."""

    columns: list[ColumnSchema] = field(default_factory=list)

    def column(self, name: str) -> ColumnSchema:
        """Return the column called ``name``.

        Raises:
            KeyError: The schema has no such column.
        """
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def to_yaml(self) -> str:
        """Return the schema as a commented YAML document, one mapping per column."""
        import yaml

        columns: dict[str, dict[str, Any]] = {}
        for column in self.columns:
            entry: dict[str, Any] = {"dtype": column.dtype, "nullable": column.nullable}
            if column.min is not None:
                entry["min"] = column.min
            if column.max is not None:
                entry["max"] = column.max
            if column.allowed is not None:
                entry["allowed"] = list(column.allowed)
            entry["unique"] = column.unique
            columns[column.name] = entry
        body = yaml.dump(
            {"columns": columns}, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=100
        )
        return HEADER + body

    @classmethod
    def from_yaml(cls, text: str, *, file: str) -> Schema:
        """Parse a schema file written by :meth:`to_yaml` (and perhaps edited since).

        Args:
            text: The file's contents.
            file: Its path, for error messages.

        Raises:
            DataError: The text is not YAML, or a column or key is missing, unknown or of the
                wrong type; the message names the file, the column and the key.
        """
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise DataError(
                f"Schema file {file!r} is not valid YAML{where}: {exc}. Fix the syntax."
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise DataError(
                f"Schema file {file!r} must be a mapping with a 'columns' mapping at the top;"
                " regenerate it with 'conveyor data infer'."
            )
        unknown = sorted(set(data) - {"columns"}, key=str)
        if unknown:
            raise DataError(
                f"Schema file {file!r} has an unknown top-level key {unknown[0]!r};"
                " only 'columns' is allowed."
            )
        columns = [_parse_column(file, str(name), entry) for name, entry in data["columns"].items()]
        return cls(columns=columns)


def infer_schema(frame: pandas.DataFrame, *, categorical_max: int = 50) -> Schema:
    """Describe a DataFrame as a schema: types, nullability, exact ranges, categories, keys.

    Uniqueness is inferred only for int, string and datetime columns (the kinds that hold
    identifiers); a float column of measurements is unique by chance, and the constraint would
    fail on the next snapshot for no reason.

    Args:
        frame: The data, typically a snapshot loaded with ``conveyor.data.snapshot.load``.
        categorical_max: A string column with at most this many distinct values gets them as
            its ``allowed`` list.

    Raises:
        DataError: A column holds values of mixed kinds (say numbers and text), which no
            schema dtype describes.
    """
    import pandas as pd

    columns = []
    for name in frame.columns:
        series = frame[name]
        dtype = dtype_family(series)
        if dtype is None:
            kind = pd.api.types.infer_dtype(series, skipna=True)
            raise DataError(
                f"Column {str(name)!r} holds values of mixed kinds ({kind}); convert it to one"
                " type (for example with .astype(str)) before inferring a schema."
            )
        column = ColumnSchema(name=str(name), dtype=dtype, nullable=bool(series.isna().any()))
        values = series.dropna()
        if dtype in ("int", "float") and len(values):
            low, high = _python(values.min()), _python(values.max())
            column.min, column.max = (float(low), float(high)) if dtype == "float" else (low, high)
        if dtype == "datetime" and len(values):
            column.min = pd.Timestamp(values.min()).isoformat()
            column.max = pd.Timestamp(values.max()).isoformat()
        if dtype == "string":
            distinct = values.unique()
            if len(distinct) <= categorical_max:
                column.allowed = sorted(str(v) for v in distinct)
        if dtype in ("int", "string", "datetime") and len(series) > 1:
            column.unique = not bool(series.duplicated().any())
        columns.append(column)
    return Schema(columns=columns)


def dtype_family(series: pandas.Series) -> str | None:
    """Return the schema dtype of a column (one of DTYPES), or None for mixed object values."""
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return dtype_family(pd.Series(dtype.categories))
    if types.is_bool_dtype(dtype):
        return "bool"
    if types.is_integer_dtype(dtype):
        return "int"
    if types.is_float_dtype(dtype):
        return "float"
    if types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
        kind = types.infer_dtype(series, skipna=True)
        return _OBJECT_KINDS.get(kind)
    return None


# -- internals ------------------------------------------------------------------------------

_OBJECT_KINDS = {
    "string": "string",
    "empty": "string",
    "boolean": "bool",
    "integer": "int",
    "floating": "float",
    "mixed-integer-float": "float",
    "datetime": "datetime",
    "datetime64": "datetime",
}


def _flow_list(dumper: Any, data: list[Any]) -> Any:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _dumper() -> type:
    """A SafeDumper writing one key per line but lists on one line, for easy editing."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, _flow_list)
    return Dumper


def _python(value: Any) -> Any:
    """A NumPy scalar as the plain Python value, so YAML writes it as a number."""
    item = getattr(value, "item", None)
    return item() if item is not None else value


def _parse_column(file: str, name: str, entry: Any) -> ColumnSchema:
    def bad(key: str, message: str) -> DataError:
        return DataError(f"Schema file {file!r}, column {name!r}, key {key!r}: {message}")

    if not isinstance(entry, dict):
        raise bad("dtype", f"expected a mapping of keys, got {entry!r}.")
    for key in entry:
        if key not in COLUMN_KEYS:
            raise bad(str(key), f"unknown key; the keys are {', '.join(COLUMN_KEYS)}.")
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise bad("dtype", f"got {dtype!r}; expected one of {', '.join(DTYPES)}.")
    column = ColumnSchema(name=name, dtype=dtype)
    for key in ("nullable", "unique"):
        value = entry.get(key, False)
        if not isinstance(value, bool):
            raise bad(key, f"expected true or false, got {value!r}.")
        setattr(column, key, value)
    for key in ("min", "max"):
        value = entry.get(key)
        if value is not None:
            setattr(column, key, _bound(dtype, value, bad(key, _bound_hint(dtype, value))))
    if column.min is not None and column.max is not None and _above(column.min, column.max):
        raise bad("min", f"{column.min!r} is above max {column.max!r}; swap them.")
    allowed = entry.get("allowed")
    if allowed is not None:
        if dtype not in ("string", "int"):
            raise bad("allowed", f"only string and int columns take a list, not {dtype}.")
        if not isinstance(allowed, list):
            raise bad("allowed", f"expected a list of values, got {allowed!r}.")
        kind = str if dtype == "string" else int
        for item in allowed:
            if not isinstance(item, kind) or isinstance(item, bool):
                raise bad("allowed", f"{item!r} is not a {dtype}; quote it or remove it.")
        column.allowed = list(allowed)
    return column


def _bound_hint(dtype: str, value: Any) -> str:
    if dtype in ("int", "float"):
        return f"expected a number, got {value!r}."
    if dtype == "datetime":
        return f"expected an ISO 8601 date or time, got {value!r}."
    return f"a {dtype} column takes no bounds; remove the key (got {value!r})."


def _bound(dtype: str, value: Any, error: DataError) -> Any:
    import datetime

    if isinstance(value, bool):
        raise error
    if dtype == "int" and isinstance(value, int):
        return value
    if dtype in ("int", "float") and isinstance(value, int | float):
        return float(value) if dtype == "float" else value
    if dtype == "datetime" and isinstance(value, str | datetime.date):
        import pandas as pd

        try:
            return pd.Timestamp(value).isoformat()
        except ValueError as exc:
            raise error from exc
    raise error


def _above(low: Any, high: Any) -> bool:
    if isinstance(low, str):
        import pandas as pd

        try:
            return bool(pd.Timestamp(low) > pd.Timestamp(high))
        except TypeError:  # one bound has a time zone and the other not
            return False
    return bool(low > high)
