"""The plain sqlite3 readers behind `models list|show`, `releases` and `release show` give what
the registry and ``Releases`` give through SQLAlchemy: the same versions, releases and
timelines, and the same errors, read from one store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor.actions.models import open_registry
from conveyor.exceptions import ModelNotFound, ReleaseError
from conveyor.registry.registry import PlainReader as PlainRegistry
from conveyor.release.releases import Releases
from conveyor.release.views import PlainReader as PlainReleases
from tests.gateway.servers import gateway_project


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """num v1 (production) and v2 (staging), mixed v1; a direct release of num v2 to production."""
    config = gateway_project(tmp_path_factory.mktemp("plain") / "p")
    with open_registry(config) as registry:
        release = Releases(config, registry).start("num", 2, "production", reason="test")
    return config, release.id


def _connect(config: Any) -> sqlite3.Connection:
    path = config.store_url()[len("sqlite:///") :]
    return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)


def _error(call: Any, *args: Any) -> tuple[type, str]:
    try:
        call(*args)
    except (ModelNotFound, ReleaseError) as exc:
        return type(exc), str(exc)
    raise AssertionError("no error raised")


def test_versions_read_plainly_match_the_registry(store: tuple[Any, str]) -> None:
    config, _ = store
    conn = _connect(config)
    plain = PlainRegistry(conn)
    with open_registry(config) as full:
        assert plain.models() == full.models()
        assert plain.models(project="nope") == full.models(project="nope") == []
        assert plain.versions("num") == full.versions("num")
        for ref in (1, "2", "latest", "production", "staging"):
            assert plain.version("num", ref) == full.version("num", ref)
        assert plain.alias("num", "production") == full.alias("num", "production") == 2
        assert plain.alias("num", "nope") is full.alias("num", "nope") is None
        for model, ref in (("nope", "latest"), ("num", "canary"), ("num", 9), ("nope", "x")):
            assert _error(plain.version, model, ref) == _error(full.version, model, ref)
        assert _error(plain.versions, "nope") == _error(full.versions, "nope")
    conn.close()


def test_releases_read_plainly_match_releases(store: tuple[Any, str]) -> None:
    config, release_id = store
    conn = _connect(config)
    plain = PlainReleases(conn)
    with open_registry(config) as registry:
        full = Releases(config, registry)
        assert plain.list() == full.list()
        assert plain.list(model="num", limit=1) == full.list(model="num", limit=1)
        assert plain.list(model="nope") == full.list(model="nope") == []
        assert plain.get(release_id) == full.get(release_id)
        assert plain.get(release_id).to_dict()["state"] == "promoted"
        timeline = [
            {"at": e.at.isoformat(), "kind": e.kind, "payload": e.payload or {}}
            for e in full.timeline(release_id)
        ]
        assert plain.timeline(release_id) == timeline and timeline
        assert _error(plain.get, "r-nope") == _error(full.get, "r-nope")
        assert _error(plain.timeline, "r-nope") == _error(full.timeline, "r-nope")
    conn.close()
