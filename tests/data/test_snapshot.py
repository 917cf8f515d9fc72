from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.data.hashing import FileHasher, hash_file
from conveyor.data.snapshot import (
    FileEntry,
    Snapshot,
    fingerprint_files,
    fingerprint_sql,
    load,
    profile,
)
from conveyor.data.state import StateDB
from conveyor.exceptions import DataError


@pytest.fixture
def hasher(tmp_path: Path):
    with StateDB(tmp_path / "state.db") as db:
        yield FileHasher(db)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, rows)
    x[rng.random(rows) < 0.1] = np.nan
    color = rng.choice(["red", "green", "blue", "amber", "teal", "pink", "gray"], rows)
    color = np.where(rng.random(rows) < 0.05, None, color)
    return pd.DataFrame(
        {
            "id": np.arange(seed * rows, (seed + 1) * rows),
            "x": x,
            "color": pd.Series(color, dtype="object"),
            "flag": rng.random(rows) < 0.3,
            "label": rng.integers(0, 5, rows),
        }
    )


# -- fingerprint_files -----------------------------------------------------------------------


def test_fingerprint_lists_relative_files_with_sizes_and_hashes(
    tmp_path: Path, hasher: FileHasher
) -> None:
    a = _write(tmp_path / "data/loans/a.csv", "id\n1\n")
    b = _write(tmp_path / "data/loans/b.csv", "id\n2\n3\n")
    snap = fingerprint_files("loans", "data/loans/*.csv", tmp_path, hasher)
    assert snap.kind == "files"
    assert snap.files == [
        FileEntry("data/loans/a.csv", a.stat().st_size, hash_file(a)),
        FileEntry("data/loans/b.csv", b.stat().st_size, hash_file(b)),
    ]
    again = fingerprint_files("loans", "data/loans/*.csv", tmp_path, hasher)
    assert again.content_hash == snap.content_hash


def test_new_file_in_the_glob_changes_the_content_hash(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "d/a.csv", "id\n1\n")
    before = fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash
    _write(tmp_path / "d/b.csv", "id\n2\n")
    assert fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash != before


def test_rename_changes_the_content_hash(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "d/a.csv", "id\n1\n")
    before = fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash
    (tmp_path / "d/a.csv").rename(tmp_path / "d/z.csv")
    assert fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash != before


def test_edit_changes_the_content_hash(tmp_path: Path, hasher: FileHasher) -> None:
    f = _write(tmp_path / "d/a.csv", "id\n1\n")
    old = time.time_ns() - 60_000_000_000
    os.utime(f, ns=(old, old))
    before = fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash
    f.write_text("id\n2\n")
    assert fingerprint_files("s", "d/*.csv", tmp_path, hasher).content_hash != before


def test_fingerprint_of_a_missing_source(tmp_path: Path, hasher: FileHasher) -> None:
    with pytest.raises(DataError, match="Data source 'loans': no file matches"):
        fingerprint_files("loans", "data/*.csv", tmp_path, hasher)


# -- fingerprint_sql -------------------------------------------------------------------------


@pytest.fixture
def sales_db(tmp_path: Path) -> Path:
    path = tmp_path / "sales.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sales (id INTEGER, region TEXT, amount REAL, paid INTEGER)")
    conn.executemany(
        "INSERT INTO sales VALUES (?, ?, ?, ?)",
        [(1, "north", 10.5, 1), (2, "south", None, 0), (3, "north", 7.0, 1)],
    )
    conn.commit()
    conn.close()
    return path


def test_sql_snapshot_hash_follows_the_rows(sales_db: Path) -> None:
    url, query = f"sqlite:///{sales_db}", "SELECT * FROM sales ORDER BY id"
    snap, table = fingerprint_sql("sales", url, query)
    assert snap.kind == "sql" and snap.files == []
    assert snap.row_count == 3
    assert snap.schema == {"id": "int64", "region": "string", "amount": "double", "paid": "int64"}
    assert table.num_rows == 3
    assert fingerprint_sql("sales", url, query)[0].content_hash == snap.content_hash

    conn = sqlite3.connect(sales_db)
    conn.execute("UPDATE sales SET amount = 11.5 WHERE id = 1")
    conn.commit()
    conn.close()
    assert fingerprint_sql("sales", url, query)[0].content_hash != snap.content_hash


def test_sql_snapshot_hash_ignores_chunking() -> None:
    from conveyor.data.snapshot import _hash_table

    table = pa.table({"a": [1, 2, 3, 4], "b": ["w", "x", "y", "z"]})
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert chunked.column("a").num_chunks == 2
    assert _hash_table(chunked) == _hash_table(table)
    assert _hash_table(table.slice(1)) != _hash_table(table)


def test_sql_bad_query_is_a_data_error(sales_db: Path) -> None:
    with pytest.raises(DataError, match="Data source 'sales'.*no such column: nope"):
        fingerprint_sql("sales", f"sqlite:///{sales_db}", "SELECT nope FROM sales")


def test_sql_profile_and_load_use_the_table(sales_db: Path, tmp_path: Path) -> None:
    snap, table = fingerprint_sql("sales", f"sqlite:///{sales_db}", "SELECT * FROM sales")
    done = profile(snap, tmp_path, table=table)
    assert done.profile is not None
    assert done.profile["amount"] == {
        "null_count": 1,
        "min": 7.0,
        "max": 10.5,
        "mean": 8.75,
        "std": pytest.approx(math.sqrt(((10.5 - 8.75) ** 2 + (7.0 - 8.75) ** 2) / 1)),
    }
    assert done.profile["region"]["top"] == [
        {"value": "north", "count": 2},
        {"value": "south", "count": 1},
    ]
    assert load(snap, tmp_path, table=table)["id"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="needs the table"):
        profile(snap, tmp_path)


# -- profile ---------------------------------------------------------------------------------


def _check_against_pandas(done: Snapshot, frame: pd.DataFrame) -> None:
    assert done.row_count == len(frame)
    prof = done.profile
    assert prof is not None
    json.dumps(prof, allow_nan=False)  # strict JSON
    for col in ("id", "x", "label"):
        series = frame[col]
        assert prof[col]["null_count"] == series.isna().sum()
        assert prof[col]["min"] == series.min()
        assert prof[col]["max"] == series.max()
        assert prof[col]["mean"] == pytest.approx(series.mean(), rel=1e-12)
        assert prof[col]["std"] == pytest.approx(series.std(), rel=1e-9)
    counts = frame["color"].value_counts()
    assert prof["color"]["null_count"] == frame["color"].isna().sum()
    assert prof["color"]["distinct"] == frame["color"].nunique()
    assert prof["color"]["distinct_exact"] is True
    top = prof["color"]["top"]
    assert len(top) == 5
    assert [t["count"] for t in top] == counts.head(5).tolist()
    assert all(counts[t["value"]] == t["count"] for t in top)
    assert prof["flag"] == {"null_count": 0, "true_count": int(frame["flag"].sum())}


def test_profile_of_csv_files_matches_pandas(tmp_path: Path, hasher: FileHasher) -> None:
    frames = [_frame(3000, seed) for seed in range(3)]
    for i, frame in enumerate(frames):
        frame.to_csv(tmp_path / f"part-{i}.csv", index=False)
    snap = fingerprint_files("loans", "part-*.csv", tmp_path, hasher)
    done = profile(snap, tmp_path)
    assert done.content_hash == snap.content_hash and done.files == snap.files
    assert done.schema == {
        "id": "int64",
        "x": "double",
        "color": "string",
        "flag": "bool",
        "label": "int64",
    }
    _check_against_pandas(done, pd.concat(frames, ignore_index=True))


def test_profile_of_parquet_with_nan_and_categories_matches_pandas(
    tmp_path: Path, hasher: FileHasher
) -> None:
    # Enough rows for several statistics groups, so their merge is what gets checked.
    frames = [_frame(150_000, seed) for seed in range(2)]
    for i, frame in enumerate(frames):
        # NaN stored as NaN (not as null), and a dictionary-encoded text column.
        table = pa.table(
            {
                "id": frame["id"].to_numpy(),
                "x": pa.array(frame["x"].to_numpy()),
                "color": pa.array(frame["color"], from_pandas=True).dictionary_encode(),
                "flag": frame["flag"].to_numpy(),
                "label": frame["label"].to_numpy(),
            }
        )
        assert pc.sum(pc.is_nan(table["x"])).as_py() > 0
        pq.write_table(table, tmp_path / f"part-{i}.parquet", row_group_size=40_000)
    snap = fingerprint_files("loans", ".", tmp_path, hasher)
    done = profile(snap, tmp_path)
    _check_against_pandas(done, pd.concat(frames, ignore_index=True))


def test_profile_of_tsv_and_temporal_columns(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "a.tsv", "day\tn\n2024-01-02\t1\n\t2\n2023-12-31\t3\n")
    done = profile(fingerprint_files("s", "a.tsv", tmp_path, hasher), tmp_path)
    assert done.profile is not None
    assert done.schema is not None and done.schema["day"].startswith("date32")
    assert done.profile["day"] == {"null_count": 1, "min": "2023-12-31", "max": "2024-01-02"}


def test_profile_widens_a_column_whose_type_changes_late(
    tmp_path: Path, hasher: FileHasher
) -> None:
    # Inference sees only the first 256 KiB: ints, then a decimal far down, then text.
    _write(tmp_path / "a.csv", "n,s\n" + "1,2\n" * 80_000 + "2.5,x\n")
    _write(tmp_path / "b.csv", "n,s\n" + "3,4\n" * 10)
    done = profile(fingerprint_files("s", "*.csv", tmp_path, hasher), tmp_path)
    assert done.schema == {"n": "double", "s": "string"}
    assert done.profile is not None
    assert done.profile["n"]["max"] == 3.0
    assert done.profile["s"]["top"][0] == {"value": "2", "count": 80_000}
    assert done.row_count == 80_011


def test_profile_names_the_file_that_does_not_parse(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "a.csv", "a,b\n1,2\n")
    _write(tmp_path / "b.csv", "a,b\n" + "1,2\n" * 100_000 + "3,4,5\n")
    snap = fingerprint_files("s", "*.csv", tmp_path, hasher)
    with pytest.raises(
        DataError, match=r"Data source 's': cannot read 'b\.csv' as CSV:.*Expected 2 columns, got 3"
    ):
        profile(snap, tmp_path)


def test_schema_mismatch_names_both_files_and_the_column(
    tmp_path: Path, hasher: FileHasher
) -> None:
    _write(tmp_path / "d/a.csv", "id,amount\n1,2\n")
    _write(tmp_path / "d/b.csv", "id,total\n1,2\n")
    snap = fingerprint_files("loans", "d/*.csv", tmp_path, hasher)
    with pytest.raises(
        DataError,
        match=r"Data source 'loans': Column 'amount' is in 'd/a\.csv' but not in 'd/b\.csv'",
    ):
        profile(snap, tmp_path)

    _write(tmp_path / "e/a.csv", "id,amount\n1,2\n")
    _write(tmp_path / "e/b.csv", "id,amount\n1,lots\n")
    snap = fingerprint_files("loans", "e/*.csv", tmp_path, hasher)
    with pytest.raises(
        DataError, match=r"column 'amount' is int64 in 'e/a\.csv' but string in 'e/b\.csv'"
    ):
        profile(snap, tmp_path)


def test_int_and_float_files_merge_to_double(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "a.csv", "v\n1\n2\n")
    _write(tmp_path / "b.csv", "v\n0.5\n")
    done = profile(fingerprint_files("s", "*.csv", tmp_path, hasher), tmp_path)
    assert done.schema == {"v": "double"}
    assert done.profile == {
        "v": {
            "null_count": 0,
            "min": 0.5,
            "max": 2.0,
            "mean": 3.5 / 3,
            "std": pytest.approx(0.7637626),
        }
    }


def test_profile_refuses_a_file_changed_since_the_snapshot(
    tmp_path: Path, hasher: FileHasher
) -> None:
    f = _write(tmp_path / "a.csv", "v\n1\n")
    snap = fingerprint_files("s", "a.csv", tmp_path, hasher)
    f.write_text("v\n1\n2\n")
    with pytest.raises(DataError, match="'a.csv' changed since the snapshot"):
        profile(snap, tmp_path)


# -- load ------------------------------------------------------------------------------------


def test_load_reads_exactly_the_snapshot_files(tmp_path: Path, hasher: FileHasher) -> None:
    _write(tmp_path / "d/a.csv", "id,x\n1,a\n")
    _write(tmp_path / "d/b.csv", "id,x\n2,b\n")
    snap = fingerprint_files("s", "d/*.csv", tmp_path, hasher)
    _write(tmp_path / "d/c.csv", "id,x\n3,c\n")  # arrives after the snapshot
    frame = load(snap, tmp_path)
    assert frame.to_dict("list") == {"id": [1, 2], "x": ["a", "b"]}


def test_load_refuses_changed_or_missing_files(tmp_path: Path, hasher: FileHasher) -> None:
    f = _write(tmp_path / "a.csv", "id\n1\n")
    snap = fingerprint_files("s", "a.csv", tmp_path, hasher)
    f.write_text("id\n7\n")  # same size: only the hash tells
    assert len(load(snap, tmp_path)) == 1
    with pytest.raises(DataError, match="'a.csv' changed since the snapshot"):
        load(snap, tmp_path, hasher=hasher)
    f.unlink()
    with pytest.raises(DataError, match="'a.csv' is gone"):
        load(snap, tmp_path)


# -- serialization ---------------------------------------------------------------------------

_text = st.text(max_size=20)
_json_scalars = st.none() | st.booleans() | st.integers() | _text
_json_scalars = _json_scalars | st.floats(allow_nan=False, allow_infinity=False)
_profiles = st.dictionaries(_text, st.dictionaries(_text, _json_scalars, max_size=4), max_size=4)


@given(
    source=_text,
    kind=st.sampled_from(["files", "sql"]),
    content_hash=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    files=st.lists(st.builds(FileEntry, _text, st.integers(0, 2**40), _text), max_size=4),
    schema=st.none() | st.dictionaries(_text, _text, max_size=4),
    row_count=st.none() | st.integers(0, 2**40),
    prof=st.none() | _profiles,
)
def test_snapshot_round_trips_through_json(
    source, kind, content_hash, files, schema, row_count, prof
) -> None:
    snap = Snapshot(source, kind, content_hash, files, schema, row_count, prof)
    data = json.loads(json.dumps(snap.to_dict(), allow_nan=False))
    assert Snapshot.from_dict(data) == snap


def test_from_dict_rejects_foreign_records() -> None:
    with pytest.raises(DataError, match="lacks the key 'content_hash'"):
        Snapshot.from_dict({"source": "s", "kind": "files"})
    with pytest.raises(DataError, match="unknown kind 'table'"):
        Snapshot.from_dict({"source": "s", "kind": "table", "content_hash": "x"})
