"""A real PostgreSQL server for the tests that need one, and a clean database per test.

The server comes from $CONVEYOR_TEST_POSTGRES_URL when set (CI sets it), else this process starts
a private throwaway cluster with scripts/postgres-for-tests.sh and stops it at exit. A private
cluster, not the script's shared default one, so that two pytest sessions never stop each other's
server. Tests skip only when no server can exist here (no binaries, and installing them is not
allowed); on CI they fail instead, so a missing PostgreSQL cannot pass unnoticed.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import make_url

ENV_URL = "CONVEYOR_TEST_POSTGRES_URL"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres-for-tests.sh"
FRESH_PREFIX = "conveyor_t_"  # drop_database() drops only databases with this prefix
_TRUTHY = {"1", "true", "yes", "on"}

# The server this process started: its result and cluster directory, and who may stop it.
_started: tuple[str | None, str] | None = None
_cluster_dir: str | None = None
_owner_pid: int | None = None
_failure: str | None = None  # why starting failed, so later calls fail fast with the same reason


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def on_ci() -> bool:
    """True on a CI machine, where a missing PostgreSQL is a failure rather than a skip."""
    return _flag("CI")


def server_binaries_exist() -> bool:
    """True when PostgreSQL's server programs (initdb, postgres) are installed."""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None


def postgres_url() -> tuple[str | None, str]:
    """Return the URL of a running PostgreSQL server for this test session, and where it is from.

    The first call may start a server (about 1-3 s, longer if the package must be installed);
    later calls return the same answer. Installing Debian's package changes the machine, so it
    is allowed only with CONVEYOR_INSTALL_POSTGRES=1, or on CI (CI=true) unless that is 0.

    Returns:
        (url, reason): url is a SQLAlchemy URL such as
        ``postgresql+psycopg://postgres@127.0.0.1:54329/conveyor_test``, or None when no server
        can be had here; reason says where the URL came from, or why there is none.

    Raises:
        RuntimeError: the binaries exist but the script failed to start a server; its log is in
            the message. A broken setup must show, not skip.
    """
    global _started, _failure
    if url := os.environ.get(ENV_URL, "").strip():
        return url, f"from ${ENV_URL}"
    if _failure is not None:  # fail every test the same way, without retrying each time
        raise RuntimeError(_failure)
    if _started is None:
        try:
            _started = _start_private_server()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            _failure = str(exc)
            raise
    return _started


def _start_private_server() -> tuple[str | None, str]:
    global _cluster_dir, _owner_pid
    # An explicit CONVEYOR_INSTALL_POSTGRES (1 or 0) wins; otherwise install only on CI.
    explicit = os.environ.get("CONVEYOR_INSTALL_POSTGRES", "").strip()
    may_install = _flag("CONVEYOR_INSTALL_POSTGRES") if explicit else on_ci()
    if not server_binaries_exist() and not may_install:
        return None, (
            "no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb); run "
            f"'bash {SCRIPT.relative_to(SCRIPT.parents[1])}' (installs them) or set {ENV_URL}"
        )
    # Not pytest's tmp_path: as root the server runs as `postgres`, which cannot enter it.
    cluster_dir = tempfile.mkdtemp(prefix="conveyor-pg-")
    _cluster_dir, _owner_pid = cluster_dir, os.getpid()
    atexit.register(stop_postgres)
    env = {
        **os.environ,
        "CONVEYOR_PG_PORT": str(_free_port()),
        "CONVEYOR_INSTALL_POSTGRES": "1" if may_install else "0",
    }
    # Files, not pipes: a server the script starts could inherit a pipe and keep it open, and
    # reading it to the end would then never finish.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(
            ["bash", str(SCRIPT), "start", cluster_dir],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=900,  # room for apt-get install on a cold CI machine
        )
        out.seek(0)
        err.seek(0)
        lines, log = out.read().strip().splitlines(), err.read().strip()
    if done.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT.name} failed (exit {done.returncode}) starting PostgreSQL in "
            f"{cluster_dir!r}:\n{log}"
        )
    if not lines or not lines[-1].startswith("postgresql"):
        # The script's own words say why (not root, no sudo, install not allowed).
        return None, log or f"{SCRIPT.name} printed no URL"
    return lines[-1], f"private server in {cluster_dir}"


def _free_port() -> int:
    # The script moves on to the next port if this one is taken by the time the server binds.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_postgres() -> None:
    """Stop the server postgres_url() started in this process, and delete its cluster.

    Registered with atexit when the server starts, so it cannot outlive the test session;
    calling it earlier is harmless. A forked child never stops its parent's server.
    """
    global _started, _cluster_dir
    if _cluster_dir is None or os.getpid() != _owner_pid:
        return
    subprocess.run(
        ["bash", str(SCRIPT), "stop", _cluster_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    _started, _cluster_dir = None, None


def require_postgres() -> str:
    """Return the server URL for a test, or skip it (fail it on CI) with the reason.

    Raises:
        pytest.skip.Exception: no server can be had here, or psycopg is not installed.
        pytest.fail.Exception: the same, but on CI.
    """
    url, reason = postgres_url()
    if url is None:
        _skip_or_fail(f"PostgreSQL unavailable: {reason}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("psycopg is not installed; install the 'postgres' extra (psycopg[binary]).")
    return url


def _skip_or_fail(reason: str) -> NoReturn:
    if on_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def fresh_database(url: str) -> str:
    """Create an empty database with a unique name on the server at `url`; return its URL.

    Args:
        url: SQLAlchemy URL of any existing database on the server (e.g. from postgres_url()).

    Returns:
        The same URL pointing at the new database. Pass it to drop_database() when done.
    """
    from psycopg import sql

    name = f"{FRESH_PREFIX}{uuid.uuid4().hex[:16]}"
    with _connect(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by fresh_database(), closing any connections still open to it.

    Args:
        url: a URL returned by fresh_database().

    Raises:
        ValueError: the URL names a database that fresh_database() did not make; dropping
            it could destroy real data.
    """
    name = make_url(url).database or ""
    if not name.startswith(FRESH_PREFIX):
        raise ValueError(
            f"Refusing to drop database {name!r}: only databases made by fresh_database() "
            f"(named {FRESH_PREFIX}...) are dropped."
        )
    from psycopg import sql

    # Connect to the maintenance database: one cannot drop the database one is connected to.
    with _connect(url, database="postgres") as conn:
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(name)))


def _connect(url: str, database: str | None = None) -> Any:
    """Open an autocommit psycopg connection (CREATE/DROP DATABASE refuse transactions)."""
    import psycopg

    parsed = make_url(url)
    params: dict[str, Any] = {
        key: value for key, value in parsed.query.items() if isinstance(value, str)
    }
    params.update(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=database or parsed.database,
    )
    params = {key: value for key, value in params.items() if value is not None}
    return psycopg.connect(autocommit=True, connect_timeout=10, **params)
