"""Finding and reading the data a source in conveyor.yaml points at: files, globs or SQL.

Files are read whole as a DataFrame (:func:`read_frame`, for steps) or streamed as Arrow
batches in bounded memory (:class:`FileScan`, for profiles).

Independent of the config module: every function takes explicit arguments, and the source's
name is passed only so that errors can say which ``data.<name>`` entry to fix. pandas, pyarrow
and SQLAlchemy are imported inside the functions that need them, so that resolving paths (done
on every ``conveyor run``) stays cheap.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import DataError, foreign_reason, safe_url

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
CSV_BLOCK_SIZE = 4 << 20
CSV_INFER_BLOCK_SIZE = 256 << 10  # CSV types are inferred from this much of each file
PARQUET_BATCH_ROWS = 64 * 1024


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
    by_extension = _EXTENSIONS.get(_extension(path))
    if by_extension is None:
        raise DataError(
            f"Cannot tell the format of {str(path)!r} from its extension. Use a .csv, .tsv or"
            " .parquet file, or set the source's format in conveyor.yaml to 'csv' or 'parquet'."
        )
    return by_extension


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

    shown = safe_url(url)
    try:
        engine = sqlalchemy.create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DataError(
            f"Data source {name!r}: cannot use database URL {shown!r}: {foreign_reason(exc)}."
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
            f"Data source {name!r}: query on {shown} failed: {foreign_reason(exc)}."
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


# -- streaming a file source as Arrow batches ------------------------------------------------


class Rescan(Exception):
    """:meth:`FileScan.batches` widened a column type: discard what was read and scan again."""


class FileScan:
    """A file source (CSV and/or Parquet files) as one stream of Arrow record batches.

    Memory stays bounded whatever the size of the files: batches are a few MiB each and only
    a few are read ahead. Every batch has :attr:`schema`, one schema all files fit (an int
    column in one file and a float column in another become float64).

    CSV types are inferred from each file's first block, and a value further down can
    contradict them. Then :meth:`batches` widens that column (null -> int64 -> float64 ->
    string), and raises :class:`Rescan`: the caller drops what it has read and iterates again.
    Several CSV files are parsed at once through ``pyarrow.dataset`` (1.5 s instead of 2.6 s
    for 1 GB in 100 files on two cores); when such a scan fails without saying which file or
    column, it is repeated file by file, which does.
    """

    def __init__(self, name: str, files: list[tuple[Path, str]], fmt: str | None = None) -> None:
        """Describe the scan; nothing is read until :meth:`open`.

        Args:
            name: The source's name in conveyor.yaml, for error messages.
            files: (path, label) pairs; the label (e.g. the path relative to the project)
                names the file in error messages.
            fmt: ``"csv"`` or ``"parquet"`` for every file, instead of the extensions.
        """
        self.name = name
        self.files = files
        self.fmt = fmt
        self._schema: pyarrow.Schema | None = None
        self._columns: list[list[str]] = []  # each file's own column order
        self._fmts: list[str] = []
        self._one_by_one = False
        self.rescans_left = 0

    @property
    def schema(self) -> pyarrow.Schema:
        if self._schema is None:
            raise RuntimeError("FileScan.open() must be called before reading the schema.")
        return self._schema

    def open(self) -> pyarrow.Schema:
        """Read each file's schema (a Parquet footer, a CSV file's first block) and unify them.

        Raises:
            DataError: A file cannot be parsed, or the files disagree on columns or on types
                that cannot be unified; the message names both files and the column.
        """
        import pyarrow as pa

        if not self.files:
            raise DataError(f"Data source {self.name!r}: no files to read.")
        self._fmts = [detect_format(path, self.fmt) for path, _ in self.files]
        schemas = [self._file_schema(i) for i in range(len(self.files))]
        self._columns = [s.names for s in schemas]
        schema, first = schemas[0], self.files[0][1]
        for (_, label), own in zip(self.files[1:], schemas[1:], strict=True):
            if set(own.names) != set(schema.names):
                raise DataError(
                    f"Data source {self.name!r}: "
                    + column_mismatch(Path(first), schema.names, Path(label), own.names)
                )
            for f in own:
                current = schema.field(f.name).type
                merged = _merge_types(current, f.type)
                if merged is None:
                    raise DataError(
                        f"Data source {self.name!r}: column {f.name!r} is {current} in"
                        f" {first!r} but {f.type} in {label!r}. Every file of a source must"
                        " have the same column types; fix the files or split the source."
                    )
                if merged != current:
                    schema = schema.set(schema.get_field_index(f.name), pa.field(f.name, merged))
        self._schema = schema
        self.rescans_left = 3 * len(schema) + 1  # each column widens at most 3 times
        return schema

    def batches(self) -> Iterator[pyarrow.RecordBatch]:
        """Yield every file's batches in :attr:`schema`'s column order and types.

        Raises:
            Rescan: A column was widened (or the scan must go file by file); iterate again.
            DataError: A file cannot be parsed; the message names it.
        """
        files = list(zip(self.files, self._fmts, self._columns, strict=True))
        for (path, label), fmt, _ in files:
            if fmt == "parquet":
                yield from self._parquet(path, label)
        for delimiter in (",", "\t"):
            group = [f for f in files if f[1] == "csv" and csv_delimiter(f[0][0]) == delimiter]
            if self._one_by_one or len(group) == 1:
                for (path, label), _, columns in group:
                    yield from self._csv_file(path, label, columns, delimiter)
            elif group:
                yield from self._csv_dataset([f[0][0] for f in group], group, delimiter)

    # -- internals -----------------------------------------------------------------------

    def _file_schema(self, i: int) -> pyarrow.Schema:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        (path, label), fmt = self.files[i], self._fmts[i]
        try:
            if fmt == "parquet":
                return pq.read_schema(path)
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=CSV_INFER_BLOCK_SIZE, use_threads=False),
                parse_options=pcsv.ParseOptions(delimiter=csv_delimiter(path)),
                convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
            )
            schema = reader.schema
            reader.close()
            return schema
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(label, fmt, exc) from exc

    def _parquet(self, path: Path, label: str) -> Iterator[pyarrow.RecordBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(path)
            for batch in reader.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=self.schema.names
            ):
                yield _conform(batch, self.schema)
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(label, "parquet", exc) from exc

    def _csv_options(self, delimiter: str) -> tuple[Any, Any, Any]:
        import pyarrow.csv as pcsv

        return (
            pcsv.ReadOptions(block_size=CSV_BLOCK_SIZE),
            pcsv.ParseOptions(delimiter=delimiter),
            # An empty field is missing in text columns too, as pandas reads it.
            pcsv.ConvertOptions(column_types=self.schema, strings_can_be_null=True),
        )

    def _csv_file(
        self, path: Path, label: str, columns: list[str], delimiter: str
    ) -> Iterator[pyarrow.RecordBatch]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        read, parse, convert = self._csv_options(delimiter)
        try:
            reader = pcsv.open_csv(
                path, read_options=read, parse_options=parse, convert_options=convert
            )
            for batch in reader:
                yield _conform(batch, self.schema)
        except pa.ArrowInvalid as exc:
            self._maybe_widen(exc, columns)
            raise self._unreadable(label, "csv", exc) from exc
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(label, "csv", exc) from exc

    def _csv_dataset(
        self, paths: list[Path], group: list[Any], delimiter: str
    ) -> Iterator[pyarrow.RecordBatch]:
        import pyarrow as pa
        import pyarrow.dataset as ds

        read, parse, convert = self._csv_options(delimiter)
        fmt = ds.CsvFileFormat(parse_options=parse, convert_options=convert, read_options=read)
        dataset = ds.dataset([str(p) for p in paths], schema=self.schema, format=fmt)
        try:
            # Modest read-ahead bounds memory (~2 files x 4 batches x 4 MiB of parsed data).
            for batch in dataset.to_batches(fragment_readahead=2, batch_readahead=4):
                yield _conform(batch, self.schema)
        except pa.ArrowException as exc:
            orders = {tuple(columns) for _, _, columns in group}
            if isinstance(exc, pa.ArrowInvalid) and len(orders) == 1:
                # Same column order in every file: the error's column index is enough.
                self._maybe_widen(exc, list(orders.pop()))
            self._one_by_one = True
            self._rescan(exc)

    def _maybe_widen(self, exc: BaseException, columns: list[str]) -> None:
        import pyarrow as pa

        match = _CONVERSION_ERROR.search(str(exc))
        if match and int(match.group(1)) < len(columns):
            column = columns[int(match.group(1))]
            wider = _wider(self.schema.field(column).type)
            if wider is not None:
                index = self.schema.get_field_index(column)
                self._schema = self.schema.set(index, pa.field(column, wider))
                self._one_by_one = False
                self._rescan(exc)

    def _rescan(self, exc: BaseException) -> None:
        if self.rescans_left <= 0:
            raise DataError(
                f"Data source {self.name!r}: column types never settled while reading ({exc})."
            ) from exc
        self.rescans_left -= 1
        raise Rescan() from exc

    def _unreadable(self, label: str, fmt: str, exc: BaseException) -> DataError:
        return DataError(
            f"Data source {self.name!r}: cannot read {label!r} as {fmt.upper()}: "
            f"{foreign_reason(exc)}. Fix the file, or set the source's format in conveyor.yaml."
        )


_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): .*CSV conversion error")


def _conform(batch: pyarrow.RecordBatch, schema: pyarrow.Schema) -> pyarrow.RecordBatch:
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    arrays = []
    for f in schema:
        column = batch.column(f.name)
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _merge_types(a: pyarrow.DataType, b: pyarrow.DataType) -> pyarrow.DataType | None:
    """The narrowest type holding both, within safe promotions; None if there is none."""
    import pyarrow as pa
    import pyarrow.types as t

    if a == b:
        return a
    if t.is_null(a):
        return b
    if t.is_null(b):
        return a
    if t.is_dictionary(a) or t.is_dictionary(b):
        va = a.value_type if t.is_dictionary(a) else a
        vb = b.value_type if t.is_dictionary(b) else b
        return _merge_types(va, vb)
    if t.is_integer(a) and t.is_integer(b):
        if t.is_unsigned_integer(a) and t.is_unsigned_integer(b):
            return pa.uint64()
        return pa.int64()
    if (t.is_integer(a) or t.is_floating(a)) and (t.is_integer(b) or t.is_floating(b)):
        return pa.float64()
    if (t.is_string(a) or t.is_large_string(a)) and (t.is_string(b) or t.is_large_string(b)):
        return pa.large_string()
    return None


def _wider(type_: pyarrow.DataType) -> pyarrow.DataType | None:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_null(type_):
        return pa.int64()
    if t.is_integer(type_):
        return pa.float64()
    if t.is_string(type_) or t.is_large_string(type_):
        return None
    return pa.string()


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
            f"Cannot parse {str(path)!r} as CSV: {foreign_reason(exc)}. Fix the file, or set the"
            " source's format and read options in conveyor.yaml."
        ) from exc


def _read_parquet(path: Path, options: dict[str, Any] | None) -> pandas.DataFrame:
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path, engine="pyarrow", **(options or {}))
    except (pa.ArrowException, ValueError, OSError, TypeError) as exc:
        raise DataError(
            f"Cannot read {str(path)!r} as Parquet: {foreign_reason(exc)}. Check that the file is"
            " complete and really Parquet, or set the source's format in conveyor.yaml."
        ) from exc
