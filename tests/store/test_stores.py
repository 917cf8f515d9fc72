"""open_stores(): a project's metadata store and artifact store, at the URLs its conveyor.yaml
resolves, opened and closed together."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import load_config
from conveyor.exceptions import ArtifactError, StoreError
from conveyor.store import models as m
from conveyor.store.stores import open_stores


def _project(root: Path, store: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(f"project: shop\n{store}")
    return root


def test_the_stores_are_where_conveyor_yaml_says_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(
        tmp_path / "shop", "store:\n  url: sqlite:///meta/db.sqlite\n  artifacts: blobs\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with open_stores(load_config(root)) as stores:
        digest = stores.artifacts.put_bytes(b"hello").digest
        assert stores.metadata.count(m.Event) == 0

    assert (root / "meta" / "db.sqlite").is_file()
    assert stores.artifacts.root == root / "blobs"
    assert (root / "blobs" / "objects").is_dir()
    assert list(elsewhere.iterdir()) == []
    with open_stores(load_config(root)) as again:
        assert again.artifacts.read_bytes(digest) == b"hello"


def test_reading_metadata_never_opens_the_artifact_store(tmp_path: Path) -> None:
    root = _project(tmp_path)

    with open_stores(load_config(root)) as stores:
        assert stores.metadata.runs() == []

    assert (root / ".conveyor" / "conveyor.db").is_file()
    assert not (root / ".conveyor" / "artifacts").exists()


def test_closing_closes_both_stores(tmp_path: Path) -> None:
    stores = open_stores(load_config(_project(tmp_path)))
    artifacts = stores.artifacts
    stores.close()

    with pytest.raises(StoreError, match="not open"):
        stores.metadata.session().__enter__()
    with pytest.raises(ArtifactError, match="is not open"):
        artifacts.put_bytes(b"late")


def test_an_unreachable_metadata_store_is_a_store_error_and_creates_no_artifact_folder(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path, "store:\n  url: postgresql+psycopg://bob:pw@127.0.0.1:1/none\n")

    with pytest.raises(StoreError, match=r"^Cannot open the metadata store .*bob:\*\*\*@"):
        open_stores(load_config(root))

    assert not (root / ".conveyor" / "artifacts").exists()
