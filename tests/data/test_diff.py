from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conveyor.data.diff import diff_profiles
from conveyor.data.hashing import FileHasher
from conveyor.data.snapshot import fingerprint_files, profile
from conveyor.data.state import StateDB
from conveyor.exceptions import DataError


def _snapshot(tmp_path: Path, name: str, frame: pd.DataFrame) -> dict:
    """Profile a real Parquet file, as ``conveyor run`` does."""
    frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    with StateDB(tmp_path / "state.db") as db:
        snap = fingerprint_files(name, f"{name}.parquet", tmp_path, FileHasher(db))
    return profile(snap, tmp_path).to_dict()


def test_diff_of_two_real_snapshots(tmp_path: Path) -> None:
    before = pd.DataFrame(
        {
            "amount": [10.0, 20.0, 30.0, None],
            "grade": ["A", "A", "B", "C"],
            "term": [36, 36, 60, 60],
            "old": [1, 2, 3, 4],
        }
    )
    after = pd.DataFrame(
        {
            "amount": [10.0, 20.0, 30.0, 40.0, 50.0, None],
            "grade": ["A", "B", "B", "D", "D", "D"],
            "term": ["36", "36", "60", "60", "60", "60"],
            "new": [True] * 6,
        }
    )

    diff = diff_profiles(_snapshot(tmp_path, "a", before), _snapshot(tmp_path, "b", after))

    assert diff["rows"] == {"before": 4, "after": 6, "added": 2, "removed": 0}
    # pandas 3's str dtype is Arrow's large_string, pandas 2's object strings are string
    text = pa.Table.from_pandas(after[["term"]], preserve_index=False).schema.field("term").type
    assert diff["columns"] == {
        "added": ["new"],
        "removed": ["old"],
        "type_changed": {"term": {"before": "int64", "after": str(text)}},
    }
    amount = diff["changes"]["amount"]
    assert amount["null_share"] == pytest.approx(
        {"before": 0.25, "after": 1 / 6, "change": 1 / 6 - 0.25}
    )
    assert amount["mean"] == pytest.approx({"before": 20.0, "after": 30.0, "change": 10.0})
    assert amount["std"]["before"] == pytest.approx(10.0)
    assert amount["std"]["after"] == pytest.approx(pd.Series([10, 20, 30, 40, 50.0]).std())
    top = diff["changes"]["grade"]["top"]
    assert top["before"][0] == {"value": "A", "count": 2, "share": 0.5}
    assert top["after"][0] == {"value": "D", "count": 3, "share": 0.5}
    assert top["entered"] == ["D"]
    assert top["left"] == ["C"]
    assert "mean" not in diff["changes"]["term"] and "top" not in diff["changes"]["term"]
    assert set(diff["changes"]) == {"amount", "grade", "term"}


def test_rows_removed_is_the_net_shrink(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(10)})

    diff = diff_profiles(_snapshot(tmp_path, "a", frame), _snapshot(tmp_path, "b", frame.head(3)))

    assert diff["rows"] == {"before": 10, "after": 3, "added": 0, "removed": 7}
    assert diff["changes"]["x"]["null_share"] == {"before": 0.0, "after": 0.0, "change": 0.0}


def test_an_unprofiled_snapshot_is_a_data_error() -> None:
    bare = {"source": "loans", "row_count": None, "profile": None, "schema": None}

    with pytest.raises(DataError, match="The first snapshot \\(source 'loans'\\) has no profile"):
        diff_profiles(bare, bare)
