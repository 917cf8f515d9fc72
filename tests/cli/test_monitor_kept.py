"""`conveyor monitor` answers from its kept report while nothing it was computed from changed.

The project is the gateway tests' (num v1 in production, v2 in staging), its log written by the
gateway's own writer (``tests/monitor/logs.py``) at times just before now. A look runs the
executable in a fresh interpreter, which reports the heavy modules it loaded; a change is
checked both by the fast path's check (``cli/reads.py``, sqlite3) and by the full command's
(``monitor/kept.py``, through the store).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.actions.models import open_registry, set_alias
from conveyor.cli import reads
from conveyor.config import load_config
from conveyor.config.monitor import WindowConfig
from conveyor.monitor.kept import kept_report as full_check
from conveyor.monitor.kept import look
from conveyor.store import kept as keeper
from tests.gateway.servers import gateway_project, trained
from tests.monitor.logs import entry, feedback, served_rows, write

HEAVY = ("pandas", "scipy", "sqlalchemy", "duckdb", "pyarrow", "typer", "sklearn", "rich")

_PROBE = """
import io, json, sys
from contextlib import redirect_stdout
from conveyor.cli.main import run
out = io.StringIO()
with redirect_stdout(out):
    code = run(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
sys.stderr.write(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
""".replace("HEAVY", repr(HEAVY))


def probe(root: Path, *args: str) -> dict[str, Any]:
    """``conveyor monitor ARGS -C root`` in a new interpreter: exit code, heavy modules, output."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "monitor", *args, "-C", str(root)],
        env={**os.environ, "COLUMNS": "500"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def logged(first: int, count: int, *, oldest_ago: float, prefix: str = "r") -> list[dict]:
    """``count`` requests of 5 held-out rows each, answered by num v1, 5 s apart, the first
    ``oldest_ago`` seconds before now."""
    t = trained()
    frame = t["num_holdout"][first * 5 : (first + count) * 5]
    rows, predictions = served_rows(frame), t["num_v1"].predict(frame).tolist()
    now = datetime.now(UTC)
    out = []
    for k in range(count):
        e = entry(f"{prefix}{first + k}", rows[k * 5 : k * 5 + 5], predictions[k * 5 : k * 5 + 5])
        e["at"] = now - timedelta(seconds=oldest_ago - 5 * k)
        out.append(e)
    return out


@pytest.fixture
def served(tmp_path: Path) -> Any:
    config = gateway_project(tmp_path / "p")
    write(config, logged(0, 40, oldest_ago=400))
    return config


def fast(config: Any, *args: str) -> dict | None:
    """The fast path's answer: the kept report as of now, or None (the full command runs)."""
    read = reads.parse(["monitor", "-m", "num", *args, "-C", str(config.root)])
    return None if read is None else read.options["report"]


def full(config: Any, window: WindowConfig | None = None) -> dict | None:
    """The full command's check of the kept report, through the store."""
    key = keeper.Key(
        "num", "production", *((window.seconds, window.last) if window else (3600.0, None))
    )
    with open_registry(config) as registry:
        return full_check(config, registry.store, key)


def compute(config: Any, window: WindowConfig | None = None) -> dict:
    with open_registry(config) as registry:
        seen = look(config, registry, model="num", window=window, fresh=True)
    assert seen.seen is not None and seen.kept is None
    return dict(seen.report)


def without_now(report: dict) -> dict:
    """A report as `--json` prints it, without what moves with the clock: its window's span and
    the kept field."""
    report = json.loads(json.dumps(report, default=str))
    out = {k: v for k, v in report.items() if k != keeper.FIELD}
    out["window"] = {k: v for k, v in report["window"].items() if k not in ("start", "end")}
    return out


def test_a_second_look_answers_from_the_kept_report_without_heavy_imports(served) -> None:
    root = Path(served.root)
    cold = probe(root, "-m", "num", "--json")
    assert cold["code"] == 0 and "pandas" in cold["heavy"] and "scipy" in cold["heavy"]
    computed = json.loads(cold["out"])
    assert keeper.FIELD not in computed and computed["requests"] == 40

    warm = probe(root, "-m", "num", "--json")
    assert warm["code"] == 0 and warm["heavy"] == [], warm["heavy"]
    kept = json.loads(warm["out"])
    assert kept[keeper.FIELD]["computed_at"] == computed["window"]["end"]
    assert kept[keeper.FIELD]["by"] == "conveyor monitor" and kept[keeper.FIELD]["age_s"] >= 0
    assert without_now(kept) == without_now(computed)
    # its span is the one a computation now would have: the last hour up to now
    end = datetime.fromisoformat(kept["window"]["end"])
    assert end > datetime.fromisoformat(computed["window"]["end"])
    assert datetime.fromisoformat(kept["window"]["start"]) == end - timedelta(hours=1)

    text = probe(root, "-m", "num")
    assert text["heavy"] == [] and "num@production serving version 1: last 3600s" in text["out"]
    assert "ago by conveyor monitor; the log has not changed since" in text["out"]

    # --metrics is the full command's, which checks the kept report through the store and
    # writes its gauges without computing
    prom = root / "monitor.prom"
    metrics = probe(root, "-m", "num", "--metrics", str(prom))
    assert metrics["code"] == 0 and "by conveyor monitor" in metrics["out"]
    assert not {"pandas", "scipy", "duckdb", "pyarrow"} & set(metrics["heavy"])
    assert 'conveyor_monitor_rows{environment="production",model="num"} 200.0' in prom.read_text()

    again = probe(root, "-m", "num", "--json", "--fresh")
    assert "pandas" in again["heavy"] and keeper.FIELD not in json.loads(again["out"])
    assert without_now(json.loads(again["out"])) == without_now(computed)


def test_each_change_of_what_it_was_computed_from_makes_the_next_look_compute(served) -> None:
    compute(served)
    assert fast(served) is not None and full(served) is not None

    def changed(config: Any) -> dict:
        """Neither check holds; a computation keeps the new report, and both hold again."""
        assert fast(config) is None and full(config) is None
        report = compute(config)
        assert without_now(fast(config) or {}) == without_now(report)
        assert without_now(full(config) or {}) == without_now(report)
        return report

    write(served, logged(40, 2, oldest_ago=60, prefix="n"))  # a new log file
    assert changed(served)["requests"] == 42

    labels = feedback("r0", [1, 0, 1, 1, 0])
    labels["at"] = datetime.now(UTC)
    write(served, [], [labels])  # a feedback file
    assert changed(served)["quality"]["labelled"] == 5

    set_alias(served, "num", 2, "production")  # a promotion
    assert changed(served)["version"] == 2

    config_file = Path(served.root) / "conveyor.yaml"
    config_file.write_text(config_file.read_text() + "monitor: {min_rows: 10000}\n")
    served = load_config(config_file)  # the monitor section changed
    assert changed(served)["enough"] is False

    # a look with other options is another report, computed and kept beside this one
    assert fast(served, "--last", "7") is None
    compute(served, WindowConfig(last=7))
    assert fast(served, "--last", "7")["requests"] == 7
    assert fast(served) is not None


def test_a_window_of_seconds_holds_until_its_oldest_row_leaves_it(served) -> None:
    window = WindowConfig(seconds=600)
    report = compute(served, window)
    key = keeper.Key("num", "production", 600.0, None)
    record = json.loads((Path(served.root) / ".conveyor" / "monitor" / key.file_name()).read_text())
    expires = datetime.fromisoformat(record["expires_at"])
    computed = datetime.fromisoformat(report["window"]["end"])
    # the oldest row was logged 400 s before the log was written, a moment before computing
    assert timedelta(seconds=150) < expires - computed < timedelta(seconds=205)
    with open_registry(served) as registry:
        just_before = full_check(
            served, registry.store, key, now=expires - timedelta(microseconds=1)
        )
        assert just_before is not None
        assert datetime.fromisoformat(just_before["window"]["start"]) == expires - timedelta(
            seconds=600, microseconds=1
        )
        assert full_check(served, registry.store, key, now=expires) is None
        assert full_check(served, registry.store, key, now=computed - timedelta(seconds=1)) is None
    assert fast(served, "--window", "10m") is not None  # now is well before the expiry
    path = Path(served.root) / ".conveyor" / "monitor" / key.file_name()
    record["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    path.write_text(json.dumps(record))
    assert fast(served, "--window", "10m") is None  # its oldest row has left the window


def test_a_kept_report_that_cannot_be_trusted_is_computed_again(served) -> None:
    compute(served)
    folder = Path(served.root) / ".conveyor" / "monitor"
    path = folder / keeper.Key("num", "production", 3600.0, None).file_name()
    path.write_text(path.read_text()[:100])  # cut short
    assert fast(served) is None and full(served) is None
    compute(served)
    assert fast(served) is not None

    # the project copied elsewhere: the record names the other project's store and log
    copy = Path(served.root).parent / "copy"
    shutil.copytree(served.root, copy)
    assert reads.parse(["monitor", "-m", "num", "-C", str(copy)]) is None

    # an option the fast path does not take, or a value the full command refuses, goes there
    for args in (["--html", "x.html"], ["--window", "2x"], ["--window", "1h", "--last", "3"]):
        assert reads.parse(["monitor", "-m", "num", *args, "-C", str(served.root)]) is None


def test_the_report_prints_as_rich_would(served, capsys, monkeypatch) -> None:
    from rich.console import Console

    from conveyor.cli import console as cli_console

    report = compute(served)
    monkeypatch.setenv("COLUMNS", "200")
    cli_console.print_monitor(report)  # type: ignore[arg-type]
    plain = capsys.readouterr().out
    rich_out = io.StringIO()
    monkeypatch.setattr(cli_console, "_plain_width", lambda: None)
    monkeypatch.setattr(
        cli_console.console, "_console", Console(file=rich_out, width=200, highlight=False)
    )
    cli_console.print_monitor(report)  # type: ignore[arg-type]
    assert plain == rich_out.getvalue() and "f0       numeric  ks" in plain


@pytest.mark.parametrize(
    "text",
    ["30s", "5m", "1.5h", "2d", "250ms", "90", " 2h ", "1.0 d", "5x", "-1m", "h", "", "3 mm"],
)
def test_the_fast_path_reads_a_window_as_the_config_does(text: str) -> None:
    """store/kept.py keeps its own copy of the duration grammar (importing conveyor.config
    loads pydantic, which the fast path avoids): both must read every text alike."""
    from conveyor.config.deploy import parse_duration
    from conveyor.store.kept import parse_window

    try:
        expected: float | None = parse_duration(text)
    except ValueError:
        expected = None
    assert parse_window(text) == expected
