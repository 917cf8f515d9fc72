"""The registry over a real store (SQLite file, and PostgreSQL): versions, aliases, events,
verified loading, and what garbage collection must keep."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from conveyor.exceptions import ModelNotFound, ModelTampered, RegistryError
from conveyor.registry.modelfile import save_model
from conveyor.registry.registry import NewVersion, Registry
from conveyor.store import models as m
from conveyor.store.artifacts import ArtifactStore
from conveyor.store.metadata import Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry(request, tmp_path: Path):
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'meta.db'}", None
    else:
        from tests.pg_server import drop_database, fresh_database, require_postgres

        url = fresh_database(require_postgres())
        drop = drop_database
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    artifacts.open()
    with Store(url) as store:
        yield Registry(store, artifacts)
    artifacts.close()
    if drop is not None:
        drop(url)


def _fitted(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 3))
    return LogisticRegression().fit(x, (x[:, 0] + rng.normal(size=200) > 0).astype(int))


def _new(registry: Registry, seed: int = 0, run_id: str = "r-1") -> NewVersion:
    file = save_model(_fitted(seed), registry.artifacts)
    return NewVersion(
        project="loans",
        model="loans-risk",
        run_id=run_id,
        task="classification",
        file=file,
        signature={"inputs": [{"name": "x0", "type": "number", "nullable": False}]},
        metrics={"roc_auc": 0.8 + seed / 100},
        lineage={"run_id": run_id, "git_commit": "abc", "git_dirty": False},
        holdout={"format": "parquet", "digest": file.digest, "size": file.size},
        plots={"roc": registry.artifacts.put_bytes(b"<svg/>").digest},
    )


def _events(registry: Registry, kind: str) -> list[dict]:
    return [e.payload for e in registry.store.events() if e.kind == kind]


def test_versions_are_numbered_and_registration_is_an_event(registry: Registry) -> None:
    first = registry.register(_new(registry, 0))
    second = registry.register(_new(registry, 1, "r-2"))
    assert (first.version, second.version) == (1, 2)
    assert [v.version for v in registry.versions("loans-risk")] == [2, 1]
    assert registry.version("loans-risk", "latest").version == 2
    assert registry.version("loans-risk", "1").metrics == {"roc_auc": 0.8}
    registered = _events(registry, "model.registered")
    assert [e["version"] for e in registered] == [1, 2]
    assert registered[0]["digest"] == first.file.digest
    [summary] = registry.models()
    assert (summary["model"], summary["latest"], summary["versions"]) == ("loans-risk", 2, 2)


def test_aliases_move_only_with_an_event(registry: Registry) -> None:
    registry.register(_new(registry, 0))
    registry.register(_new(registry, 1, "r-2"))
    assert registry.alias("loans-risk", "production") is None
    assert registry.set_alias("loans-risk", "production", 1, reason="first") is None
    assert registry.set_alias("loans-risk", "production", 2) == 1
    assert registry.version("loans-risk", "production").version == 2
    assert registry.version("loans-risk", 2).aliases == ["production"]
    moves = _events(registry, "alias.moved")
    assert [(e["from"], e["to"]) for e in moves] == [(None, 1), (1, 2)]
    assert registry.remove_alias("loans-risk", "production") == 2
    assert registry.alias("loans-risk", "production") is None
    assert _events(registry, "alias.removed")[0]["from"] == 2


def test_unknown_names_say_what_exists(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="No model 'nope' in the registry"):
        registry.version("nope", "latest")
    registry.register(_new(registry))
    with pytest.raises(ModelNotFound, match=r"has no version 7 \(latest is 1\)"):
        registry.version("loans-risk", 7)
    with pytest.raises(ModelNotFound, match="has no alias 'production' \\(aliases: none\\)"):
        registry.version("loans-risk", "production")
    with pytest.raises(ModelNotFound, match="has no version 3"):
        registry.set_alias("loans-risk", "staging", 3)
    for bad in ("Prod", "latest", "1", "", "a b"):
        with pytest.raises(RegistryError):
            registry.set_alias("loans-risk", bad, 1)
    assert _events(registry, "alias.moved") == []


def test_archived_versions_cannot_be_served(registry: Registry) -> None:
    registry.register(_new(registry))
    with registry.store.session() as s:
        s.query(m.ModelVersion).update({"status": "archived"})
    with pytest.raises(RegistryError, match="archived; only a registered version can be served"):
        registry.set_alias("loans-risk", "production", 1)


def test_load_verifies_the_hash_and_names_the_version(registry: Registry) -> None:
    version = registry.register(_new(registry))
    loaded = registry.load(version, allow_pickle=False)
    assert isinstance(loaded, LogisticRegression)
    path = registry.artifacts.path(version.file.digest, verify=False)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelTampered, match="model 'loans-risk' version 1"):
        registry.load(version, allow_pickle=False)


def test_a_file_missing_from_the_store_is_not_registered(registry: Registry) -> None:
    new = _new(registry)
    path = registry.artifacts.path(new.file.digest, verify=False)
    os.chmod(path, 0o644)
    path.unlink()
    with pytest.raises(RegistryError, match="is not in the artifact store"):
        registry.register(new)
    assert registry.models() == []


def test_concurrent_registrations_get_distinct_numbers(registry: Registry) -> None:
    news = [_new(registry, seed, f"r-{seed}") for seed in range(6)]
    numbers: list[int] = []
    errors: list[BaseException] = []

    def register(new: NewVersion) -> None:
        try:
            numbers.append(registry.register(new).version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n,)) for n in news]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


def test_gc_keeps_what_a_version_pins(registry: Registry) -> None:
    version = registry.register(_new(registry))
    kept = registry.store.referenced_digests()
    assert version.file.digest in kept
    assert version.plots["roc"] in kept
