"""The read commands answered before Typer loads: `runs`, `show`, `events`, `status`,
`models list|show`, `releases`, `release show`, and `monitor` while its kept report holds.

Typer (which imports pydantic to coerce options) costs ~0.12 s at start-up, more than half of a
read command's 0.2 s budget. So the executable first hands its arguments to :func:`parse`: a
command line in one of the plain forms below is answered here, calling the same library
functions and printers as the Typer command and writing the same bytes; anything else (``--help``,
an unknown or malformed option, a value Click would refuse) returns None, and Typer parses it
and says what is wrong exactly as before.

    runs [--limit N] [--json] [-C DIR]
    show RUN_ID [--json] [-C DIR]
    events [--limit N] [--id ID] [--json] [-C DIR]
    status [--json] [-C DIR]
    models list [NAME] [--json] [-C DIR]
    models show [NAME] [VERSION] [--json] [-C DIR]
    releases [-m NAME] [--limit N] [--json] [-C DIR]
    release show RELEASE_ID [--json] [-C DIR]
    monitor [-m NAME] [--env ENV] [--window D] [--last N] [--json] [-C DIR]

`monitor` is answered here only from its kept report (``store/kept.py``), when the report's
fingerprint still matches, read with ``sqlite3`` and a listing of the log's folders; ``parse``
checks that, and on any miss (no kept report, a change, a store that is not a SQLite file at
head) returns None, so the full command computes the report, importing pandas, SciPy,
SQLAlchemy and DuckDB.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Read", "answer", "parse"]

_PROJECT = ("-C", "--project")


@dataclass(frozen=True)
class _Form:
    """One command's plain form: its value options (long and short names → key), positionals."""

    values: dict[str, str]
    ints: frozenset[str]
    positionals: tuple[str, ...]
    required: int


_FORMS: dict[tuple[str, ...], _Form] = {
    ("runs",): _Form({"--limit": "limit"}, frozenset({"limit"}), (), 0),
    ("show",): _Form({}, frozenset(), ("run_id",), 1),
    ("events",): _Form({"--limit": "limit", "--id": "entity_id"}, frozenset({"limit"}), (), 0),
    ("status",): _Form({}, frozenset(), (), 0),
    ("models", "list"): _Form({}, frozenset(), ("name",), 0),
    ("models", "show"): _Form({}, frozenset(), ("name", "version"), 0),
    ("releases",): _Form(
        {"--model": "name", "-m": "name", "--limit": "limit"}, frozenset({"limit"}), (), 0
    ),
    ("release", "show"): _Form({}, frozenset(), ("release_id",), 1),
    ("monitor",): _Form(
        {"--model": "name", "-m": "name", "--env": "env", "--window": "window", "--last": "last"},
        frozenset({"last"}),
        (),
        0,
    ),
}


@dataclass(frozen=True)
class Read:
    """A parsed read command: its words, its options, ``--json`` and ``-C``."""

    command: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    as_json: bool = False
    project: Path | None = None


def parse(argv: list[str]) -> Read | None:
    """The read command ``argv`` asks for, or None: let Typer parse it (help, errors, others)."""
    for words, form in _FORMS.items():
        if tuple(argv[: len(words)]) == words:
            read = _parse_form(words, form, argv[len(words) :])
            if read is not None and words == ("monitor",):
                return _with_kept_report(read)
            return read
    return None


def _parse_form(words: tuple[str, ...], form: _Form, rest: list[str]) -> Read | None:
    options: dict[str, Any] = {}
    positionals: list[str] = []
    as_json = False
    project: Path | None = None
    rest = list(rest)
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--json":
            as_json = True
        elif name in _PROJECT or name in form.values:
            if eq:
                value = inline
            elif rest and not rest[0].startswith("-"):
                value = rest.pop(0)
            else:
                return None  # a missing value, or one Click may read otherwise: Typer says
            if name in _PROJECT:
                project = Path(value)
                continue
            key = form.values[name]
            if key in form.ints:
                try:
                    options[key] = int(value)
                except ValueError:
                    return None
            else:
                options[key] = value
        elif arg.startswith("-"):
            return None  # --help, --log, a typo, "--": all Typer's to answer
        else:
            positionals.append(arg)
    if not form.required <= len(positionals) <= len(form.positionals):
        return None
    options.update(zip(form.positionals, positionals, strict=False))
    return Read(words, options, as_json, project)


def answer(read: Read) -> None:
    """Print what the Typer command would for this read.

    Raises:
        ConveyorError: as the command does (the caller prints it and picks the exit code).
    """
    _HANDLERS[read.command](read)


def _echo_json(data: object) -> None:
    """``options.echo_json`` without Typer: the same text."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _runs(read: Read) -> None:
    from conveyor.actions.runs import list_runs, read_project
    from conveyor.cli.console import print_runs

    rows = list_runs(read_project(read.project), limit=read.options.get("limit", 20))
    _echo_json(rows) if read.as_json else print_runs(rows)


def _show(read: Read) -> None:
    from conveyor.actions.runs import describe_run, read_project
    from conveyor.cli.console import print_run

    info = describe_run(read_project(read.project), read.options["run_id"])
    _echo_json(info) if read.as_json else print_run(info)


def _events(read: Read) -> None:
    from conveyor.actions.runs import list_events, read_project

    rows = list_events(
        read_project(read.project),
        limit=read.options.get("limit", 50),
        entity_id=read.options.get("entity_id"),
    )
    if read.as_json:
        _echo_json(rows)
        return
    sys.stdout.write("".join(event_line(row) + "\n" for row in rows))


def event_line(row: dict[str, Any]) -> str:
    """One event as `conveyor events` prints it."""
    payload = json.dumps(row["payload"], sort_keys=True) if row["payload"] else ""
    return f"{row['at']}  {row['kind']:<18} {row['entity_id']}  {payload}"


def status_rows(project: Path | None) -> list[dict[str, Any]]:
    """What `conveyor status` lists: from the fast path's witness while it holds (every step
    cached, and SQLAlchemy, pydantic and the planner need not load to say so), else planned."""
    from conveyor.pipeline.fastpath import check
    from conveyor.project import find_root

    root = find_root(project)
    if not os.environ.get("CONVEYOR_NO_FASTPATH") and check(root) is not None:
        from conveyor.data.state import StateDB
        from conveyor.project import Paths

        with StateDB(Paths(root).state_db) as state:
            steps = [s[0] for s in json.loads(state.get("fastpath") or "{}").get("steps", [])]
        return [{"step": s, "state": "up-to-date", "reason": "cached"} for s in steps]
    from conveyor.config import load_config
    from conveyor.pipeline.status import pipeline_status
    from conveyor.project import CONFIG_FILE

    return [s.to_dict() for s in pipeline_status(load_config(root / CONFIG_FILE))]


def _status(read: Read) -> None:
    rows = status_rows(read.project)
    if read.as_json:
        _echo_json(rows)
        return
    from conveyor.cli.console import print_status

    print_status(rows)


def _models_list(read: Read) -> None:
    from conveyor.actions.models import list_models, list_versions
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_models, print_versions

    config = read_project(read.project, need_model=True)
    name = read.options.get("name")
    if name is None and config.model is None:
        rows = list_models(config)
        _echo_json(rows) if read.as_json else print_models(rows)
        return
    rows = list_versions(config, name)
    _echo_json(rows) if read.as_json else print_versions(rows)


def _models_show(read: Read) -> None:
    from conveyor.actions.models import version_story
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_version

    story = version_story(
        read_project(read.project, need_model=True),
        read.options.get("name"),
        read.options.get("version", "latest"),
    )
    if read.as_json:
        _echo_json({k: v for k, v in story.items() if k != "plots"})
    else:
        print_version(story)


def _releases(read: Read) -> None:
    from conveyor.actions.models import list_releases
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_releases

    rows = list_releases(
        read_project(read.project),
        model=read.options.get("name"),
        limit=read.options.get("limit", 20),
    )
    _echo_json(rows) if read.as_json else print_releases(rows)


def _release_show(read: Read) -> None:
    from conveyor.actions.models import describe_release
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_release

    release, events = describe_release(read_project(read.project), read.options["release_id"])
    if read.as_json:
        _echo_json({"release": release, "timeline": events})
    else:
        print_release(release, events)


def _with_kept_report(read: Read) -> Read | None:
    """``read`` holding the kept monitoring report as of now, or None: the full command
    computes it (or says what is wrong with the command line)."""
    try:
        report = kept_monitor_report(read)
    except Exception:  # a cache never fails the command: the full path decides
        return None
    if report is None:
        return None
    return Read(read.command, {**read.options, "report": report}, read.as_json, read.project)


def kept_monitor_report(read: Read) -> dict[str, Any] | None:
    """The kept report of `conveyor monitor` with these options, as of now, if it holds."""
    from datetime import UTC, datetime

    from conveyor.actions.runs import QuickProject, plain_store
    from conveyor.project import CONFIG_FILE, Paths, find_root
    from conveyor.store import kept as keeper

    options = read.options
    if "window" in options and "last" in options:
        return None
    seconds = keeper.parse_window(options["window"]) if "window" in options else None
    last = options.get("last")
    if (seconds is not None and seconds <= 0) or (last is not None and last < 1):
        return None
    if "window" in options and seconds is None:
        return None
    root = find_root(read.project)
    config_file = root / CONFIG_FILE
    state = Paths(root).state_dir
    model, env = options.get("name"), options.get("env")
    if model is None or env is None or ("window" not in options and last is None):
        default = keeper.defaults(state, root, config_file, model, env)
        if default is None:
            return None
        if "window" not in options and last is None:
            seconds, last = default.seconds, default.last
        model, env = default.model, default.environment
    record = keeper.read_record(state, keeper.Key(model, env, seconds, last))
    now = datetime.now(UTC)
    if (
        record is None
        or not keeper.same_project(record["project"], root, config_file)
        or not keeper.time_holds(record, now)
    ):
        return None
    url = str(record["project"]["store_url"])
    if not url.startswith("sqlite:///"):
        return None  # another database: the full command checks the kept report through it
    db = url[len("sqlite:///") :]
    with plain_store(QuickProject(root, "", db, "", None)) as conn:
        if conn is None:
            return None
        routing = keeper.routing_plain(conn, model, env)
    log = keeper.log_stamp(
        str(record["project"]["artifacts_url"]), model, env, record["log"].get("first_day")
    )
    if not keeper.holds(record, routing, log):
        return None
    return keeper.as_of(record, now)


def _monitor(read: Read) -> None:
    from conveyor.store.kept import FIELD

    report = read.options["report"]
    if read.as_json:
        _echo_json(report)
        return
    from conveyor.cli.console import print_kept, print_monitor

    print_monitor(report)
    print_kept(report[FIELD])


_HANDLERS: dict[tuple[str, ...], Callable[[Read], None]] = {
    ("runs",): _runs,
    ("show",): _show,
    ("events",): _events,
    ("status",): _status,
    ("models", "list"): _models_list,
    ("models", "show"): _models_show,
    ("releases",): _releases,
    ("release", "show"): _release_show,
    ("monitor",): _monitor,
}
