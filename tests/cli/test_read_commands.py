"""Read commands answer without the heavy imports, and say the same as the full store.

Each command runs in a fresh interpreter (as the executable would), which then reports which
heavy modules it loaded: pandas, scikit-learn, pyarrow, pandera, SQLAlchemy, Alembic, Rich, and
our pydantic config models (``conveyor.config``). pydantic itself is not on the list: Typer
0.29 imports it to coerce every command's options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("pandas", "sklearn", "pyarrow", "pandera", "sqlalchemy", "alembic", "rich")

_PROBE = """
import io, json, sys
from contextlib import redirect_stdout
from conveyor.cli.main import run
out = io.StringIO()
with redirect_stdout(out):
    code = run(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
heavy += ["conveyor.config"] if "conveyor.config" in sys.modules else []
sys.stderr.write(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
""".replace("HEAVY", repr(HEAVY))


def _probe(root: Path, *args: str, **env: str) -> dict:
    """Run ``conveyor ARGS -C root`` in a new interpreter: exit code, heavy modules, output."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args, "-C", str(root)],
        env={**os.environ, "COLUMNS": "500", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step project that ran twice (the second time through the fast path)."""
    root = tmp_path_factory.mktemp("reads")
    (root / "conveyor.yaml").write_text(
        'project: p\npipeline:\n  a: {cmd: "echo hi > x.txt", outs: [x.txt]}\n'
    )
    past = time.time() - 60
    os.utime(root / "conveyor.yaml", (past, past))
    for _ in range(2):
        done = _probe(root, "run")
        assert done["code"] == 0, done
    return root


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "--json"),
        ("runs",),
        ("show", "latest", "--json"),
        ("show", "latest"),
        ("events", "--json"),
        ("events", "--id", "nope", "--limit", "3"),
        ("models", "list", "--json"),
        ("releases", "--json"),
        ("releases", "-m", "nope", "--limit", "5", "--json"),
    ],
)
def test_read_commands_import_nothing_heavy(ran: Path, args: tuple[str, ...]) -> None:
    done = _probe(ran, *args)
    assert done["code"] == 0, done
    assert done["heavy"] == [], f"conveyor {' '.join(args)} imported {done['heavy']}"


def test_the_plain_reads_match_the_full_store(ran: Path) -> None:
    """The same rows whether read with sqlite3 or through SQLAlchemy (a store below head, as
    the full store sees it, is simulated by forcing the full path with the store's own code)."""
    from conveyor.actions import runs as views
    from conveyor.config import load_config

    config = load_config(ran / "conveyor.yaml")
    plain_runs = views.list_runs(config)
    plain_show = views.describe_run(config, "latest")
    plain_events = views.list_events(config, entity_id=plain_runs[0]["run_id"], limit=2)

    class Elsewhere:  # the same database under a URL the plain reader does not take
        project = config.project
        root = config.root

        def store_url(self) -> str:
            return config.store_url().replace("sqlite:", "sqlite+pysqlite:", 1)

        def __getattr__(self, name: str) -> object:
            return getattr(config, name)

    assert views.list_runs(Elsewhere()) == plain_runs
    assert views.describe_run(Elsewhere(), "latest") == plain_show
    assert (
        views.list_events(Elsewhere(), entity_id=plain_runs[0]["run_id"], limit=2) == plain_events
    )
    assert [e["kind"] for e in plain_events] == ["step.cached", "run.succeeded"]
    assert len(plain_runs) == 2 and plain_runs[0]["steps"] == {"cached": 1}


def test_an_edited_conveyor_yaml_is_read_again_not_taken_from_the_witness(ran: Path) -> None:
    config = ran / "conveyor.yaml"
    before = config.read_text()
    try:
        config.write_text(before.replace("project: p", "project: other"))
        done = _probe(ran, "runs", "--json")
        assert done["code"] == 0, done
        assert json.loads(done["out"]) == []  # runs are listed by project: 'other' has none
    finally:
        config.write_text(before)
