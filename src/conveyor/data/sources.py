"""Finding and reading the data a source in conveyor.yaml points at: files, globs or SQL.

Independent of the config module: every function takes explicit arguments, and the source's
name is passed only so that errors can say which ``data.<name>`` entry to fix. pandas, pyarrow
and SQLAlchemy are imported inside the functions that need them, so that resolving paths (done
on every ``conveyor run``) stays cheap.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import DataError

if TYPE_CHECKING:
    import pandas
    import pyarrow

logger = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "csv",
    ".tsv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_GLOB_CHARS = frozenset("*?[")


def resolve_files(name: str, pattern: str, root: Path) -> list[Path]:
    """Return the absolute paths of the files a source's path or glob matches, sorted.

    Args:
        name: The source's name in conveyor.yaml, for error messages.
        pattern: A file, a directory (every CSV/Parquet file under it), or a glob such as
            ``data/loans/*.parquet`` (``**`` crosses directories). Relative to ``root`` unless
            absolute. Hidden files are skipped by globs.
        root: The project directory.

    Raises:
        DataError: Nothing matches.
    """
    root = Path(root).resolve()
    expanded = os.path.expanduser(pattern)
    absolute = os.path.isabs(expanded)
    base = Path(expanded) if absolute else root / expanded

    if _GLOB_CHARS.intersection(expanded):
        if absolute:
            matches = [Path(m) for m in glob.glob(expanded, recursive=True)]
        else:
            matches = [root / m for m in glob.glob(expanded, root_dir=root, recursive=True)]
        found: set[Path] = set()
        for match in matches:
            if match.is_dir():
                found.update(_data_files_under(match))
            elif match.is_file():
                found.add(match)
        files = sorted(found, key=lambda p: p.as_posix())
    elif base.is_dir():
        files = _data_files_under(base)
        if not files:
            raise DataError(
                f"Data source {name!r}: directory {pattern!r} under {root} holds no .csv, .tsv"
                f" or .parquet file. Check the path in conveyor.yaml (data.{name}.source)."
            )
    elif base.is_file():
        files = [base]
    else:
        files = []

    if not files:
        where = "" if absolute else f" under {root}"
        raise DataError(
            f"Data source {name!r}: no file matches {pattern!r}{where}."
            f" Check the path in conveyor.yaml (data.{name}.source)."
        )
    return files


def detect_format(path: Path, explicit: str | None) -> str:
    """Return ``"csv"`` or ``"parquet"`` for a file, from ``explicit`` or from its extension.

    ``.csv``, ``.csv.gz``, ``.tsv`` and ``.tsv.gz`` are CSV (tab-separated for ``.tsv``);
    ``.parquet`` and ``.pq`` are Parquet.

    Args:
        path: The data file.
        explicit: The format given in conveyor.yaml, if any; it wins over the extension.

    Raises:
        DataError: ``explicit`` is not a known format, or the extension is not recognised.
    """
    if explicit is not None:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise DataError(
                f"Unknown data format {explicit!r} for {str(path)!r}. Use 'csv' or 'parquet'."
            )
        return fmt
    fmt = _EXTENSIONS.get(_extension(path))
    if fmt is None:
        raise DataError(
            f"Cannot tell the format of {str(path)!r} from its extension. Use a .csv, .tsv or"
            " .parquet file, or set the source's format in conveyor.yaml to 'csv' or 'parquet'."
        )
    return fmt


def csv_delimiter(path: Path) -> str:
    """Return the field separator implied by a CSV file's name: tab for .tsv, else comma."""
    return "\t" if _extension(path).startswith(".tsv") else ","


def read_frame(
    paths: list[Path], fmt_override: str | None = None, options: dict[str, Any] | None = None
) -> pandas.DataFrame:
    """Read every file into one DataFrame, in order, with the pyarrow engine.

    Args:
        paths: The files, as returned by :func:`resolve_files`.
        fmt_override: ``"csv"`` or ``"parquet"`` for every file, instead of the extensions.
        options: Keyword arguments for ``pandas.read_csv`` / ``pandas.read_parquet``.

    Raises:
        DataError: A file cannot be read or parsed, or the files have different columns.
    """
    import pandas as pd

    if not paths:
        raise DataError("No data files to read. Check the source's path in conveyor.yaml.")
    frames = []
    first_columns: tuple[Path, list[str]] | None = None
    for path in paths:
        fmt = detect_format(path, fmt_override)
        frame = _read_csv(path, options) if fmt == "csv" else _read_parquet(path, options)
        columns = [str(c) for c in frame.columns]
        if first_columns is None:
            first_columns = (path, columns)
        elif set(columns) != set(first_columns[1]):
            raise DataError(column_mismatch(first_columns[0], first_columns[1], path, columns))
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def column_mismatch(path_a: Path, cols_a: list[str], path_b: Path, cols_b: list[str]) -> str:
    """Describe the first column that one file has and the other lacks."""
    only_a = [c for c in cols_a if c not in cols_b]
    if only_a:
        return (
            f"Column {only_a[0]!r} is in {str(path_a)!r} but not in {str(path_b)!r}. Every file"
            " of a source must have the same columns; fix the files or split the source."
        )
    only_b = [c for c in cols_b if c not in cols_a]
    return (
        f"Column {only_b[0]!r} is in {str(path_b)!r} but not in {str(path_a)!r}. Every file"
        " of a source must have the same columns; fix the files or split the source."
    )


def query_sql(name: str, url: str, query: str) -> pyarrow.Table:
    """Run a source's SQL query through SQLAlchemy and return the rows as an Arrow table.

    Column types are inferred from the values, so a column mixing, say, numbers and text
    (possible in SQLite) is an error: CAST it in the query.

    Args:
        name: The source's name in conveyor.yaml, for error messages.
        url: A SQLAlchemy URL, e.g. ``sqlite:///data/loans.db`` or ``postgresql+psycopg://...``.
        query: The SELECT to run. Add ORDER BY if the row order can vary, or the snapshot hash
            will too.

    Raises:
        DataError: The URL is invalid, the driver is missing, the database cannot be reached,
            the query fails, or a column's values have no single type.
    """
    import pyarrow as pa
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    shown = _safe_url(url)
    try:
        engine = sqlalchemy.create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DataError(
            f"Data source {name!r}: cannot use database URL {shown!r}: {_reason(exc)}."
            f" Check data.{name}.url in conveyor.yaml (and that its driver is installed)."
        ) from exc
    try:
        with engine.connect() as conn:
            # Sent as written: text() would read ':30' in '10:30' as a bind parameter, and
            # no_parameters keeps psycopg from reading '%' as a placeholder.
            result = conn.execution_options(no_parameters=True).exec_driver_sql(query)
            if not result.returns_rows:
                raise DataError(
                    f"Data source {name!r}: the query returns no rows to read. Use a SELECT"
                    f" in data.{name}.query."
                )
            columns = [str(c) for c in result.keys()]
            rows = result.fetchall()
    except (SQLAlchemyError, ImportError) as exc:
        raise DataError(
            f"Data source {name!r}: query on {shown} failed: {_reason(exc)}."
            f" Check data.{name}.query and data.{name}.url in conveyor.yaml."
        ) from exc
    finally:
        engine.dispose()

    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DataError(
            f"Data source {name!r}: the query returns column {dup!r} twice. Give it an alias"
            " (AS ...) in the query."
        )
    arrays = []
    values_by_column = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    for column, values in zip(columns, values_by_column, strict=True):
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"Data source {name!r}: column {column!r} mixes value types ({exc})."
                f" CAST it to one type in the query."
            ) from exc
    return pa.Table.from_arrays(arrays, names=columns)


# -- helpers --------------------------------------------------------------------------------


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in (".csv.gz", ".tsv.gz"):
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1]


def _data_files_under(directory: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        # Hidden and underscore folders hold metadata (.git, _delta_log, Spark's _temporary).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for filename in filenames:
            if filename.startswith((".", "_")):
                continue
            path = Path(dirpath, filename)
            if _extension(path) in _EXTENSIONS:
                found.append(path)
    return sorted(found, key=lambda p: p.as_posix())


def _read_csv(path: Path, options: dict[str, Any] | None) -> pandas.DataFrame:
    import pandas as pd

    kwargs: dict[str, Any] = {"sep": csv_delimiter(path)}
    kwargs.update(options or {})
    try:
        return pd.read_csv(path, engine="pyarrow", **kwargs)
    except Exception as exc:  # any pyarrow failure: let the C parser decide
        # The pyarrow engine rejects some options and some files the C parser reads (short
        # rows, types that change late in a file) and reports no line numbers. The C parser
        # either reads the file or says which line is wrong.
        logger.debug("pyarrow could not read %s (%s); retrying with the C parser", path, exc)
    try:
        return pd.read_csv(path, engine="c", **kwargs)
    except (ValueError, UnicodeDecodeError, OSError, TypeError) as exc:
        raise DataError(
            f"Cannot parse {str(path)!r} as CSV: {_reason(exc)}. Fix the file, or set the"
            " source's format and read options in conveyor.yaml."
        ) from exc


def _read_parquet(path: Path, options: dict[str, Any] | None) -> pandas.DataFrame:
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path, engine="pyarrow", **(options or {}))
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise DataError(
            f"Cannot read {str(path)!r} as Parquet: {_reason(exc)}. Check that the file is"
            " complete and really Parquet, or set the source's format in conveyor.yaml."
        ) from exc


def _reason(exc: BaseException) -> str:
    """The first line of a foreign error's message, without a trailing period."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
    text = str(orig if orig is not None else exc).strip()
    if not text:
        text = type(exc).__name__
    return text.splitlines()[0].strip().rstrip(".")


def _safe_url(url: str) -> str:
    """The URL with its password hidden, fit for an error message."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown only past any credentials
        return url.split("@")[-1] if "@" in url else url
