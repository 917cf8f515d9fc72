from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlalchemy.exc import SQLAlchemyError

from conveyor.data.sources import (
    FileScan,
    Rescan,
    detect_format,
    query_sql,
    read_frame,
    resolve_files,
)
from conveyor.exceptions import DataError


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a,b\n1,2\n")


# -- resolve_files ---------------------------------------------------------------------------


def test_glob_is_relative_to_root_and_sorted(tmp_path: Path) -> None:
    _touch(tmp_path, "data/loans/b.parquet", "data/loans/a.parquet", "data/loans/x.csv")
    files = resolve_files("loans", "data/loans/*.parquet", tmp_path)
    assert files == [tmp_path / "data/loans/a.parquet", tmp_path / "data/loans/b.parquet"]


def test_double_star_crosses_folders_and_absolute_patterns_work(tmp_path: Path) -> None:
    _touch(tmp_path, "d/2024/01/a.csv", "d/2024/02/b.csv", "d/top.csv", "d/.hidden.csv")
    expected = [tmp_path / "d/2024/01/a.csv", tmp_path / "d/2024/02/b.csv", tmp_path / "d/top.csv"]
    assert resolve_files("s", "d/**/*.csv", tmp_path) == expected
    assert resolve_files("s", str(tmp_path / "d/**/*.csv"), Path("/")) == expected


def test_a_single_file(tmp_path: Path) -> None:
    _touch(tmp_path, "loans.csv")
    assert resolve_files("loans", "loans.csv", tmp_path) == [tmp_path / "loans.csv"]


def test_a_directory_means_its_data_files(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "d/a.csv",
        "d/sub/b.parquet",
        "d/c.tsv",
        "d/notes.txt",
        "d/_SUCCESS",
        "d/.git/x.csv",
        "d/_temporary/y.csv",
    )
    assert resolve_files("s", "d", tmp_path) == [
        tmp_path / "d/a.csv",
        tmp_path / "d/c.tsv",
        tmp_path / "d/sub/b.parquet",
    ]


def test_nothing_matches_says_where_and_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_files("loans", "data/loans/*.parquet", tmp_path)
    assert str(info.value) == (
        f"Data source 'loans': no file matches 'data/loans/*.parquet' under"
        f" {tmp_path.resolve()}. Check the path in conveyor.yaml (data.loans.source)."
    )
    with pytest.raises(DataError, match="no file matches 'missing.csv'"):
        resolve_files("loans", "missing.csv", tmp_path)


def test_directory_without_data_files(tmp_path: Path) -> None:
    _touch(tmp_path, "d/readme.md")
    with pytest.raises(DataError, match=r"directory 'd' .* holds no \.csv"):
        resolve_files("loans", "d", tmp_path)


# -- detect_format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.csv.gz", "csv"),
        ("a.tsv", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_format_from_extension(name: str, fmt: str) -> None:
    assert detect_format(Path(name), None) == fmt


def test_explicit_format_wins() -> None:
    assert detect_format(Path("export.txt"), "csv") == "csv"
    assert detect_format(Path("a.csv"), "Parquet") == "parquet"


def test_unknown_format_names_the_file() -> None:
    with pytest.raises(DataError, match=r"Cannot tell the format of 'data/x\.xlsx'"):
        detect_format(Path("data/x.xlsx"), None)
    with pytest.raises(DataError, match=r"Unknown data format 'json' for 'a\.csv'"):
        detect_format(Path("a.csv"), "json")


# -- read_frame ------------------------------------------------------------------------------


def test_read_frame_concatenates_csv_tsv_gzip_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,x\n1,0.5\n2,1.5\n")
    (tmp_path / "b.tsv").write_text("id\tx\n3\t2.5\n")
    with gzip.open(tmp_path / "c.csv.gz", "wt") as f:
        f.write("id,x\n4,3.5\n")
    pd.DataFrame({"id": [5], "x": [4.5]}).to_parquet(tmp_path / "d.parquet")
    paths = [tmp_path / n for n in ("a.csv", "b.tsv", "c.csv.gz", "d.parquet")]
    frame = read_frame(paths)
    assert frame["id"].tolist() == [1, 2, 3, 4, 5]
    assert frame["x"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]


def test_read_frame_passes_options(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("id;x\n1;a\n")
    frame = read_frame([tmp_path / "a.txt"], "csv", {"sep": ";"})
    assert frame.to_dict("list") == {"id": [1], "x": ["a"]}


def test_csv_parse_error_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"Cannot parse '.*bad\.csv' as CSV: .*line 3"):
        read_frame([bad])


def test_csv_whose_type_changes_late_still_reads(tmp_path: Path) -> None:
    late = tmp_path / "late.csv"
    late.write_text("a\n" + "1\n" * 200_000 + "x\n")
    frame = read_frame([late])
    assert len(frame) == 200_001
    assert frame["a"].iloc[-1] == "x"


def test_broken_parquet_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"Cannot read '.*bad\.parquet' as Parquet"):
        read_frame([bad])


def test_files_with_different_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,x\n1,2\n")
    (tmp_path / "b.csv").write_text("id,y\n1,2\n")
    with pytest.raises(DataError, match=r"Column 'x' is in '.*a\.csv' but not in '.*b\.csv'"):
        read_frame([tmp_path / "a.csv", tmp_path / "b.csv"])


# -- query_sql -------------------------------------------------------------------------------


@pytest.fixture
def sales_db(tmp_path: Path) -> str:
    path = tmp_path / "sales.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sales (id INTEGER, region TEXT, amount REAL)")
    conn.executemany("INSERT INTO sales VALUES (?, ?, ?)", [(1, "north", 10.5), (2, "south", None)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def test_query_returns_an_arrow_table(sales_db: str) -> None:
    table = query_sql("sales", sales_db, "SELECT * FROM sales ORDER BY id")
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("region", pa.string()), ("amount", pa.float64())]
    )
    assert table.to_pydict() == {"id": [1, 2], "region": ["north", "south"], "amount": [10.5, None]}


def test_query_is_sent_as_written(sales_db: str) -> None:
    # ':30' would be a bind parameter to sqlalchemy.text(); '%' a placeholder to psycopg.
    table = query_sql("sales", sales_db, "SELECT '10:30' AS t, '5%' AS p")
    assert table.to_pydict() == {"t": ["10:30"], "p": ["5%"]}


def test_empty_result_keeps_its_columns(sales_db: str) -> None:
    table = query_sql("sales", sales_db, "SELECT id, region FROM sales WHERE id > 99")
    assert table.column_names == ["id", "region"]
    assert table.num_rows == 0


def test_bad_query_is_a_data_error_naming_the_source(sales_db: str) -> None:
    with pytest.raises(DataError, match="Data source 'sales': query on .* no such table: nope"):
        query_sql("sales", sales_db, "SELECT * FROM nope")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "nosuchdialect://host/db",
        "sqlite:////nonexistent-dir/deeper/x.db",
        # Port 1 on localhost refuses at once: a real driver error, no server needed.
        "postgresql+psycopg://ml:s3cret@127.0.0.1:1/loans?connect_timeout=2",
    ],
)
def test_no_sqlalchemy_error_escapes(url: str) -> None:
    with pytest.raises(DataError) as info:
        query_sql("sales", url, "SELECT 1")
    assert "Data source 'sales'" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value.__cause__, SQLAlchemyError | ImportError | ValueError)


def test_statement_without_rows(sales_db: str) -> None:
    with pytest.raises(DataError, match="returns no rows"):
        query_sql("sales", sales_db, "UPDATE sales SET amount = 1 WHERE id = -1")


def test_column_of_mixed_types_asks_for_a_cast(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (v)")  # no declared type: SQLite keeps each value's own
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), ("one",)])
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="column 'v' mixes value types.*CAST"):
        query_sql("mixed", f"sqlite:///{path}", "SELECT v FROM t")


def test_duplicate_column_names_ask_for_an_alias(sales_db: str) -> None:
    with pytest.raises(DataError, match="column 'id' twice"):
        query_sql("sales", sales_db, "SELECT id, id FROM sales")


# -- FileScan --------------------------------------------------------------------------------


def test_file_scan_streams_csv_and_parquet_under_one_schema(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,x\n1,2\n2,3\n")
    (tmp_path / "b.tsv").write_text("x\tid\n4\t3\n")  # other column order, other separator
    pd.DataFrame({"id": [4], "x": [0.5]}).to_parquet(tmp_path / "c.parquet")
    files = [(tmp_path / n, n) for n in ("a.csv", "b.tsv", "c.parquet")]
    scan = FileScan("s", files)
    assert scan.open() == pa.schema([("id", pa.int64()), ("x", pa.float64())])
    table = pa.Table.from_batches(list(scan.batches())).sort_by("id")
    assert table.to_pydict() == {"id": [1, 2, 3, 4], "x": [2.0, 3.0, 4.0, 0.5]}


def test_file_scan_widens_a_late_contradicted_column_and_asks_for_a_rescan(
    tmp_path: Path,
) -> None:
    # Types are inferred from the first 256 KiB; the float comes after that.
    (tmp_path / "a.csv").write_text("v\n" + "1\n" * 150_000 + "2.5\n")
    (tmp_path / "b.csv").write_text("v\n7\n")
    scan = FileScan("s", [(tmp_path / "a.csv", "a.csv"), (tmp_path / "b.csv", "b.csv")])
    assert scan.open().field("v").type == pa.int64()
    with pytest.raises(Rescan):
        list(scan.batches())
    assert scan.schema.field("v").type == pa.float64()
    values = pa.Table.from_batches(list(scan.batches()))["v"]
    assert len(values) == 150_002 and pc.max(values).as_py() == 7.0


def test_file_scan_needs_open_first(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="open"):
        _ = FileScan("s", [(tmp_path / "a.csv", "a.csv")]).schema
