"""The PostgreSQL test server: it starts, hands out clean databases, and cleans up after itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.pg_server import (
    SCRIPT,
    drop_database,
    fresh_database,
    require_postgres,
    server_binaries_exist,
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = fresh_database(require_postgres())
    yield url
    drop_database(url)


def _database_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_fresh_database_round_trips_a_row_and_is_dropped() -> None:
    server = require_postgres()
    url = fresh_database(server)
    name = url.rsplit("/", 1)[-1]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE runs (id integer PRIMARY KEY, step text NOT NULL)"))
            conn.execute(text("INSERT INTO runs VALUES (1, 'train')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, step FROM runs")).all() == [(1, "train")]
            assert conn.execute(text("SELECT current_database()")).scalar() == name
    finally:
        engine.dispose()
    assert name in _database_names(server)
    drop_database(url)
    assert name not in _database_names(server)


@pytest.mark.postgres
def test_each_fresh_database_starts_empty(pg_url: str) -> None:
    other = fresh_database(pg_url)
    try:
        engine = create_engine(pg_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE only_here (x integer)"))
        finally:
            engine.dispose()
        engine = create_engine(other)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).all()
        finally:
            engine.dispose()
        assert other != pg_url
        assert tables == []
    finally:
        drop_database(other)


@pytest.mark.postgres
def test_drop_database_closes_connections_left_open(pg_url: str) -> None:
    # A test that forgets engine.dispose() must not make the drop fail or hang.
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    drop_database(pg_url)
    drop_database(pg_url)  # already gone: still fine, so the fixture's own drop is harmless
    engine.dispose()


def test_drop_database_refuses_databases_it_did_not_make() -> None:
    with pytest.raises(ValueError, match="Refusing to drop database 'conveyor_test'"):
        drop_database("postgresql+psycopg://postgres@127.0.0.1:1/conveyor_test")


def _script(*args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVEYOR_INSTALL_POSTGRES": "0"}
    if port is not None:
        env["CONVEYOR_PG_PORT"] = str(port)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_script_refuses_to_delete_a_directory_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    done = _script("stop", str(foreign))
    assert done.returncode == 1
    assert f"'{foreign}' exists but was not made by this script" in done.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.postgres
@pytest.mark.slow
def test_script_reuses_a_running_server_and_rebuilds_a_crashed_one() -> None:
    if not server_binaries_exist():
        pytest.skip("no PostgreSQL server binaries here; the script would have to install them")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Not tmp_path: as root the server runs as `postgres`, which cannot enter it.
    cluster = Path(tempfile.mkdtemp(prefix="conveyor-pg-test-"))
    try:
        first = _script("start", str(cluster), port=port)
        assert first.returncode == 0, first.stderr
        url = first.stdout.strip().splitlines()[-1]
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/conveyor_test"
        assert "creating a cluster" in first.stderr

        again = _script("start", str(cluster), port=port)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().splitlines()[-1] == url
        assert "reusing the server already running" in again.stderr

        pid = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)  # a crash: the stale pid file and data stay behind
        time.sleep(0.2)
        rebuilt = _script("start", str(cluster), port=port)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "creating a cluster" in rebuilt.stderr
        assert _database_names(rebuilt.stdout.strip().splitlines()[-1]) >= {"conveyor_test"}
    finally:
        stopped = _script("stop", str(cluster))
    assert stopped.returncode == 0, stopped.stderr
    assert not cluster.exists()
