"""How the CLI shows runs: a live step table on a terminal, plain lines in CI logs.

Rich takes ~0.1 s to import, half the budget of a read command; so `runs`, `show` and
`releases`, printed to a pipe or a file, write the very text Rich would (``_plain_width``,
``_plain_table``) and fall back to Rich for a terminal, for markup, and for lines Rich would
wrap or shorten.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from conveyor.evaluate.values import format_number, format_percent, format_signed

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from conveyor.monitor.report import MonitorReport
    from conveyor.registry.story import VersionStory
    from conveyor.release.strategies import Outcome


class _LazyConsole:
    """A Rich console created on first use, so that importing this module stays cheap."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def _new_table(**options: Any) -> Table:
    from rich.table import Table

    return Table(**options)


MARKS = {
    "pending": "[dim]·[/]",
    "running": "[cyan]▶[/]",
    "ran": "[green]✓[/]",
    "cached": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "blocked": "[yellow]–[/]",
    "interrupted": "[red]![/]",
    "up-to-date": "[green]✓[/]",
    "stale": "[yellow]●[/]",
    "never-ran": "[yellow]●[/]",
}


#: What Rich makes of the MARKS and of the markup the plain printers use, outside a terminal.
_TAGS = re.compile(r"\[(?:/|dim|bold|green|red|yellow|cyan)\]")
#: Text Rich would treat specially: other markup, or an emoji code such as :smile:.
_SPECIAL = re.compile(r"\[|\]|:[\w+-]*[A-Za-z][\w+-]*:")


def _plain_width() -> int | None:
    """The width Rich would render stdout at when it is not a terminal, or None: use Rich.

    Rich's own rules (rich 15, ``Console.is_terminal`` and ``Console.size``): TTY_COMPATIBLE
    and FORCE_COLOR decide first, then isatty; the width is the first standard stream's
    terminal size, overridden by COLUMNS, else 80.
    """
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible == "1" or (tty_compatible != "0" and os.environ.get("FORCE_COLOR")):
        return None
    if tty_compatible != "0":
        try:
            if sys.stdout.isatty():
                return None
        except ValueError:
            pass
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isascii() and columns.isdigit():
        width = int(columns)
    return width or 80


def _plain(text: str) -> str | None:
    """``text`` as Rich prints it outside a terminal, or None when only Rich knows."""
    text = _TAGS.sub("", text)
    return None if not text.isascii() and not _marks_only(text) or _SPECIAL.search(text) else text


_MARK_CHARS = frozenset("·▶✓✗–●→")


def _marks_only(text: str) -> bool:
    return all(c.isascii() or c in _MARK_CHARS for c in text)


def _plain_lines(lines: list[str]) -> bool:
    """Write ``lines`` (with the markup above) as Rich would, if Rich would not wrap or alter
    them; False when Rich must print them."""
    width = _plain_width()
    if width is None:
        return False
    out = [_plain(line) for line in lines]
    if any(line is None or len(line) > width for line in out):
        return False
    sys.stdout.write("".join(f"{line}\n" for line in out))
    return True


def _plain_table(
    header: list[str], rows: list[list[str]], *, right: frozenset[int] = frozenset()
) -> str | None:
    """A ``Table(box=None, pad_edge=False)`` as Rich renders it outside a terminal, or None
    when Rich would do more (markup, wide characters, a table wider than the console)."""
    width = _plain_width()
    if width is None:
        return None
    cells = [[_plain(c) for c in row] for row in [header, *rows]]
    if any(c is None for row in cells for c in row):
        return None
    widths = [max(1, *(len(row[i]) for row in cells)) for i in range(len(header))]  # type: ignore[arg-type]
    if sum(widths) + 2 * (len(widths) - 1) > width:
        return None
    return "".join(
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)  # type: ignore[union-attr]
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        + "\n"
        for row in cells
    )


class RunDisplay:
    """Listener for the engine: redraws a step table live, or prints one line per change."""

    def __init__(self, steps: list[str], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows: dict[str, dict[str, Any]] = {s: {"status": "pending"} for s in steps}
        self._live: Any = None  # a rich Live while drawing on a terminal
        self._started: dict[str, float] = {}

    def __enter__(self) -> RunDisplay:
        if self.enabled and console.is_terminal:
            from rich.live import Live

            self._live = Live(
                self._table(), console=console.get(), refresh_per_second=8, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, step: str, status: str, details: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = self.rows.setdefault(step, {})
        row.update(status=status, **details)
        if status == "running":
            self._started[step] = time.monotonic()
        if self._live is not None:
            self._live.update(self._table())
        elif status != "pending":
            extra = details.get("reason") if status in ("running", "blocked") else ""
            if status == "ran":
                extra = f"{details.get('duration_s', 0):.2f} s"
            console.print(f"  {MARKS.get(status, status)} {step}  {status}  [dim]{extra or ''}[/]")

    def _table(self) -> Table:
        table = _new_table(box=None, show_header=False, pad_edge=False)
        for step, row in self.rows.items():
            status = row["status"]
            note = row.get("reason") or ""
            if status == "running":
                note = (
                    f"{time.monotonic() - self._started.get(step, time.monotonic()):.1f} s  {note}"
                )
            table.add_row(MARKS.get(status, status), step, status, f"[dim]{note}[/]")
        return table


def _step_metric(value: Any) -> str:
    """A metric a step logged, in the one number format (``evaluate/values.py``); the store
    keeps every metric as a float, so a whole number (a count of rows) reads as the integer
    it was logged as rather than ``8000.0000``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return format_number(int(value))
    return format_number(value)


def print_summary(summary: Any) -> None:
    table = _new_table(box=None, pad_edge=False)
    for column in ("", "step", "status", "time", "why / metrics"):
        table.add_column(column)
    for outcome in summary.steps:
        if outcome.status == "ran":
            note = outcome.reason
        elif outcome.status == "cached":
            note = "restored from cache"
        else:
            note = outcome.error or outcome.reason
        metrics = ", ".join(f"{k}={_step_metric(v)}" for k, v in list(outcome.metrics.items())[:4])
        if metrics:
            note = f"{note}  [dim]{metrics}[/]" if note else metrics
        duration = f"{outcome.duration_s:.2f} s" if outcome.status == "ran" else ""
        table.add_row(MARKS.get(outcome.status, ""), outcome.name, outcome.status, duration, note)
    console.print(table)
    cached = sum(1 for o in summary.steps if o.status == "cached")
    ran = sum(1 for o in summary.steps if o.status == "ran")
    if summary.ok:
        what = (
            f"nothing changed; all {cached} steps restored from cache"
            if ran == 0
            else f"{ran} ran, {cached} restored from cache"
        )
        console.print(
            f"Run {summary.run_id} [green]succeeded[/]: {what} in {summary.duration_s:.2f} s."
        )
        return
    for outcome in summary.steps:
        if outcome.status == "failed":
            err.print(f"\n[red]Step '{outcome.name}' failed[/]: {outcome.error}", soft_wrap=True)
            if outcome.traceback:
                err.print(outcome.traceback.rstrip(), markup=False, soft_wrap=True)
            if outcome.log_path:
                show = f"conveyor show {summary.run_id} --log {outcome.name}"
                err.print(f"Log: {outcome.log_path}  ({show})", soft_wrap=True)
    err.print(f"Run {summary.run_id} [red]failed[/] after {summary.duration_s:.2f} s.")


def print_status(rows: list[dict[str, Any]]) -> None:
    table = _new_table(box=None, pad_edge=False)
    for column in ("", "step", "state", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(MARKS.get(row["state"], ""), row["step"], row["state"], row["reason"])
    console.print(table)
    stale = [r for r in rows if r["state"] != "up-to-date"]
    if stale:
        console.print(f"{len(stale)} of {len(rows)} steps would run. Run 'conveyor run'.")
    else:
        console.print("Everything is up to date.")


def print_runs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        if not _plain_lines(["No runs yet. Run 'conveyor run'."]):
            console.print("No runs yet. Run 'conveyor run'.")
        return
    cells = []
    for row in rows:
        steps = ", ".join(f"{n} {s}" for s, n in sorted(row["steps"].items()))
        duration = f"{row['duration_s']:.2f} s" if row["duration_s"] is not None else ""
        commit = (row["git_commit"] or "")[:8] + ("*" if row["git_dirty"] else "")
        cells.append([row["run_id"], row["status"], duration, commit, steps])
    text = _plain_table(["run", "status", "time", "commit", "steps"], cells, right=frozenset({2}))
    if text is not None:
        sys.stdout.write(text)
        return
    table = _new_table(box=None, pad_edge=False)
    table.add_column("run", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("commit", no_wrap=True)
    table.add_column("steps")
    for row in rows:
        steps = ", ".join(f"{n} {s}" for s, n in sorted(row["steps"].items()))
        duration = f"{row['duration_s']:.2f} s" if row["duration_s"] is not None else ""
        commit = (row["git_commit"] or "")[:8] + ("*" if row["git_dirty"] else "")
        table.add_row(row["run_id"], row["status"], duration, commit, steps)
    console.print(table)


def print_run(info: dict[str, Any]) -> None:
    head = [f"[bold]Run {info['run_id']}[/]  {info['status']}  project {info['project']}"]
    head.append(f"  started {info['started_at']}, finished {info['finished_at'] or '-'}")
    commit = info["git_commit"] or "no git"
    head.append(
        f"  commit {commit}{' (dirty)' if info['git_dirty'] else ''}, env {info['env_hash'][:12]}"
    )
    if info["error"]:
        head.append(f"  [red]error[/]: {info['error']}")
    columns = ["", "step", "status", "time", "why", "outputs"]
    cells = []
    for step in info["steps"]:
        outs = ", ".join(
            f"{n} ({d['format']}, {d['digest'][:10]})" for n, d in step["outputs"].items()
        )
        duration = f"{step['duration_s']:.2f} s" if step["duration_s"] else ""
        cells.append(
            [
                MARKS.get(step["status"], ""),
                step["step"],
                step["status"],
                duration,
                step["reason"] or step["error"] or "",
                outs,
            ]
        )
    tail = []
    for step, values in info["metrics"].items():
        shown = ", ".join(
            f"{k}={_step_metric(v['last'] if isinstance(v, dict) else v)}"
            for k, v in values.items()
        )
        tail.append(f"  metrics {step}: {shown}")
    for step, values in info["params"].items():
        tail.append(f"  params {step}: {values}")
    for snap in info["snapshots"]:
        rows = snap["row_count"] if snap["row_count"] is not None else "?"
        tail.append(
            f"  data {snap['source']}: {snap['files']} files, {rows} rows, "
            f"{snap['columns']} columns, hash {snap['content_hash'][:12]}"
        )
    width = _plain_width()
    plain = [_plain(line) for line in head + tail]
    table = _plain_table(columns, cells)
    if (
        width is not None
        and table is not None
        and all(line is not None and len(line) <= width for line in plain)
    ):
        text = "\n".join(plain[: len(head)]) + "\n" + table  # type: ignore[arg-type]
        sys.stdout.write(text + "".join(f"{line}\n" for line in plain[len(head) :]))
    else:
        for line in head:
            console.print(line)
        rich_table = _new_table(box=None, pad_edge=False, title=None)
        for column in columns:
            rich_table.add_column(column)
        for row in cells:
            rich_table.add_row(*row)
        console.print(rich_table)
        for line in tail:
            console.print(line)
    for step in info["steps"]:
        if step["traceback"]:
            err.print(f"\n[red]{step['step']} failed[/]: {step['error']}", soft_wrap=True)
            err.print(step["traceback"].rstrip(), markup=False, soft_wrap=True)


# -- data, models and gates -------------------------------------------------------------------

VERDICTS = {
    "pass": "[green]✓ pass[/]",
    "fail": "[red]✗ fail[/]",
    "inconclusive": "[yellow]? inconclusive[/]",
    "skipped": "[dim]– skipped[/]",
    "error": "[red]! error[/]",
    # a metric `models compare` could not test (too few rows of a class): neither pass nor fail
    "not_compared": "[yellow]– not compared[/]",
}


def _num(value: Any) -> str:
    """A metric as every surface shows it (``evaluate/values.py``): the card, the PR comment."""
    return format_number(value)


def print_gate(result: Any) -> None:
    """One line per gate as soon as it is judged."""
    console.print(
        f"  {VERDICTS.get(result.verdict, result.verdict)}  {result.name}: {result.summary}",
        markup=True,
        soft_wrap=True,
    )


def print_ci(outcome: Any) -> None:
    report = outcome.report
    failed = [g for g in report["gates"] if g.get("blocks")]
    if outcome.passed and outcome.already_registered:
        console.print(
            f"[green]All {len(report['gates'])} gates passed[/]: the model is version "
            f"{report['version']} of {report['model']} already; nothing new to register."
        )
    elif outcome.passed and report["version"] is not None:
        console.print(
            f"[green]All {len(report['gates'])} gates passed[/]: registered "
            f"{report['model']} version {report['version']}."
        )
    elif outcome.passed:
        console.print(f"[green]All {len(report['gates'])} gates passed[/] (not registered).")
    else:
        console.print(
            f"[red]{len(failed)} of {len(report['gates'])} gates did not pass[/]: the candidate of "
            f"{report['model']} is rejected."
        )
        for gate in failed:
            console.print(f"  ✗ {gate['name']}: {gate['summary']}", soft_wrap=True, markup=False)
    for path in outcome.written:
        console.print(f"  wrote {path}", markup=False)


def print_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("No registered models yet. Run 'conveyor ci'.")
        return
    table = _new_table(box=None, pad_edge=False)
    for column in ("model", "latest", "versions", "aliases", "updated"):
        table.add_column(column)
    for row in rows:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(row["aliases"].items()))
        table.add_row(
            row["model"], str(row["latest"]), str(row["versions"]), aliases, row["updated_at"]
        )
    console.print(table)


def print_versions(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("No versions registered yet. Run 'conveyor ci'.")
        return
    table = _new_table(box=None, pad_edge=False)
    for column in ("version", "aliases", "created", "metrics", "commit", "run", "format"):
        table.add_column(column)
    for row in rows:
        metrics = ", ".join(f"{k} {_num(v)}" for k, v in row["metrics"].items())
        commit = (row["git_commit"] or "")[:8] + ("*" if row["git_dirty"] else "")
        fmt = row["format"] + (" + onnx" if row["onnx"] else "")
        table.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            row["created_at"][:19],
            metrics,
            commit,
            row["run_id"],
            fmt,
        )
    console.print(table)


def print_version(story: VersionStory) -> None:
    aliases = f"  ({', '.join(story['aliases'])})" if story["aliases"] else ""
    console.print(f"[bold]{story['model']} version {story['version']}[/]{aliases}")
    console.print(f"  {story['task']} of {story['target']!r}, created {story['created_at']}")
    model = story["artifacts"]["model"]
    onnx = story["artifacts"]["onnx"]
    if model is not None:
        console.print(
            f"  file {model['format']} sha256 {model['digest']} ({model['size']} bytes)"
            + (f"; ONNX {str(onnx['digest'])[:12]}" if onnx else ""),
            markup=False,
            soft_wrap=True,  # a digest cut in two cannot be copied
        )
    why = story["artifacts"]["onnx_not_exported"]
    if onnx is None and why:
        console.print(f"  no ONNX copy: {why}", markup=False, soft_wrap=True)
    console.print(
        "  metrics: " + ", ".join(f"{k} {_num(v)}" for k, v in story["metrics"].items()),
        soft_wrap=True,
    )
    for gate in story["gates"]:
        console.print(
            f"  {VERDICTS.get(gate['verdict'], gate['verdict'])}  {gate['name']}: "
            f"{gate['summary']}",
            soft_wrap=True,
        )
    lin = story["lineage"]
    commit = lin.get("git_commit") or "no git"
    console.print(
        f"  lineage: run {lin.get('run_id')}, commit {commit}"
        f"{' (dirty)' if lin.get('git_dirty') else ''}, env {str(lin.get('env_hash'))[:12]}, "
        f"python {lin.get('python')}",
        markup=False,
    )
    for snap in story["data"]["snapshots"]:
        console.print(
            f"  data {snap['source']}: {snap['id']}, {snap['row_count']} rows", markup=False
        )
    for step, params in (lin.get("params") or {}).items():
        if params:
            console.print(f"  params {step}: {params}", markup=False)
    inputs = story["signature"].get("inputs", [])
    console.print(
        f"  signature: {len(inputs)} inputs ("
        + ", ".join(f"{i['name']}:{i['type']}" for i in inputs[:8])
        + (", …" if len(inputs) > 8 else "")
        + f") -> {story['signature'].get('output', {}).get('returns')}",
        markup=False,
        soft_wrap=True,
    )


def print_comparison(result: dict[str, Any]) -> None:
    a, b = result["a"]["version"], result["b"]["version"]
    console.print(f"[bold]{result['model']}[/]: v{a} (a) vs v{b} (b) on {result['holdout']}")
    table = _new_table(box=None, pad_edge=False)
    for column in ("metric", f"v{a}", f"v{b}", "b − a", "95% CI", "p", "test"):
        table.add_column(column)
    for c in result["comparisons"]:
        table.add_row(
            c["metric"],
            _num(c["a"]),
            _num(c["b"]),
            format_signed(c["diff"]),
            f"[{format_signed(c['ci_low'])}, {format_signed(c['ci_high'])}]",
            _num(c["p_value"]),
            c["method"],
        )
    console.print(table)
    for metric, why in (result.get("not_compared") or {}).items():
        console.print(f"  {metric}: {VERDICTS['not_compared']}: {why}", markup=True, soft_wrap=True)


def print_data_diff(result: dict[str, Any]) -> None:
    rows = result["rows"]
    console.print(f"[bold]{result['a']['id']}[/] → [bold]{result['b']['id']}[/]", markup=True)
    console.print(
        f"  rows {rows['before']:,} → {rows['after']:,} "
        f"(+{rows['added']:,} / −{rows['removed']:,} net)"
    )
    cols = result["columns"]
    if cols["added"]:
        console.print(f"  columns added: {', '.join(cols['added'])}", markup=False)
    if cols["removed"]:
        console.print(f"  columns removed: {', '.join(cols['removed'])}", markup=False)
    for name, change in cols["type_changed"].items():
        console.print(f"  type of {name}: {change['before']} → {change['after']}", markup=False)
    table = _new_table(box=None, pad_edge=False)
    for column in ("column", "nulls", "mean", "std", "top values"):
        table.add_column(column)
    for name, entry in result["changes"].items():

        def pair(key: str, entry: dict[str, Any] = entry) -> str:
            item = entry.get(key)
            if not item or item.get("before") is None and item.get("after") is None:
                return ""
            return f"{_num(item['before'])} → {_num(item['after'])}"

        top = entry.get("top")
        moved = ""
        if top:
            moved = ", ".join(
                [f"+{v}" for v in top["entered"][:3]] + [f"−{v}" for v in top["left"][:3]]
            )
        table.add_row(name, pair("null_share"), pair("mean"), pair("std"), moved)
    console.print(table)


def print_releases(rows: list[dict[str, Any]]) -> None:
    if not rows:
        empty = "No releases yet. Start one with 'conveyor deploy MODEL VERSION --to ENV'."
        if not _plain_lines([empty]):
            console.print(empty)
        return
    # plain aligned lines: ids must never be cut, whatever the terminal's width
    table = [("id", "model@env", "from → to", "strategy", "state", "step", "weight")]
    for row in rows:
        table.append(
            (
                row["id"],
                f"{row['model']}@{row['environment']}",
                f"{row['from_version'] or '-'} → {row['to_version']}",
                row["strategy"],
                row["state"],
                str(row["step"]),
                f"{row['weight']:g}%",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    texts = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    # soft_wrap and no markup: outside a terminal Rich adds nothing but an emoji code's glyph
    if _plain_width() is not None and not any(_SPECIAL.search(t) for t in texts):
        sys.stdout.write("".join(f"{text}\n" for text in texts))
        return
    for text in texts:
        console.print(text, highlight=False, soft_wrap=True, markup=False)


def print_release(release: dict[str, Any], events: list[dict[str, Any]]) -> None:
    console.print(
        f"[bold]{release['id']}[/]  {release['model']}@{release['environment']}  "
        f"v{release['from_version'] or '-'} → v{release['to_version']}  {release['strategy']}  "
        f"[bold]{release['state']}[/] (step {release['step']}, candidate {release['weight']:g}%)"
    )
    last = release.get("last_verdict")
    if last:
        console.print(f"  last analysis: {last['decision']}: {last['summary']}")
    for event in events:
        payload = {k: v for k, v in event["payload"].items() if k not in ("model", "environment")}
        detail = payload.get("why") or ", ".join(
            f"{k} {v}" for k, v in payload.items() if v is not None and k != "verdict"
        )
        console.print(f"  {event['at'][:19]}  {event['kind']:<20} {detail}", soft_wrap=True)


def print_outcomes(outcomes: list[Outcome]) -> None:
    if not outcomes:
        console.print("No active release.")
    for outcome in outcomes:
        verdict = outcome.get("verdict") or {}
        why = outcome.get("why") or verdict.get("summary") or ""
        console.print(f"{outcome['id']}: {outcome['action']}  {why}", soft_wrap=True)


def print_monitor(report: MonitorReport) -> None:
    """The report; to a pipe or a file as the very text Rich would write, without Rich (a kept
    report answers in a fraction of a second, and Rich takes 0.1 s to import)."""
    window = report["window"]
    span = (
        f"last {window['last']} requests"
        if window["last"]
        else (f"last {window['seconds'] or 0:g}s")
    )
    head = [
        f"[bold]{report['model']}@{report['environment']}[/] serving version "
        f"{report['version']}: {span} ({window['start'][:19]} .. {window['end'][:19]}), "
        f"{report['requests']:,} requests, {report['rows']:,} rows"
    ]
    p99 = report.get("p99_ms")
    head.append(
        f"  error rate {format_percent(report['error_rate'])}, p99 "
        f"{'-' if p99 is None else f'{p99:.2f} ms'}"
        + ("" if report["enough"] else "  (fewer rows than monitor.min_rows: no verdicts)")
    )
    header = ["feature", "kind", "test", "p (adjusted)", "psi", "drifted"]
    cells: list[list[str]] = []
    tail: list[str] = []
    drift = report.get("drift")
    if drift:
        for name, entry in drift["columns"].items():
            stats = entry["stats"]
            test = next((m for m in ("ks", "chi2") if m in stats), None)
            p_adj = stats[test].get("p_adjusted") if test else None
            psi = stats["psi"]["statistic"] if "psi" in stats else None
            cells.append(
                [
                    name,
                    entry["kind"],
                    test or "-",
                    _num(p_adj),
                    _num(psi),
                    "[red]yes[/]" if entry["drifted"] else "no",
                ]
            )
        tail.append(
            f"  drift: {len(drift['drifted'])} of {len(drift['columns'])} features "
            f"({format_percent(drift['share_drifted'])}); data set drifted: "
            f"{'yes' if drift['drifted_overall'] else 'no'}"
        )
    prediction = report.get("prediction_drift")
    if prediction:
        tail.append(
            f"  predictions: psi {_num(prediction['psi'])}, "
            f"{'shifted' if prediction['drifted'] else 'not shifted'}"
        )
    quality = report["quality"]
    metrics = quality["metrics"]
    if quality["labelled"]:
        delay = quality["label_delay_s_p50"]
        tail.append(
            f"  live quality on {quality['labelled']:,} labelled rows "
            f"({format_percent(quality['labelled_share'])}, median delay "
            f"{'-' if delay is None else f'{delay:.1f}s'}): "
            + ", ".join(f"{k} {_num(v)}" for k, v in metrics.items())
        )
    else:
        tail.append("  live quality: no labels yet (POST /v1/feedback)")
    if _print_plain(head, (header, cells) if drift else None, tail):
        return
    for line in head:
        console.print(line)
    if drift:
        table = _new_table(box=None, pad_edge=False)
        for column in header:
            table.add_column(column)
        for row in cells:
            table.add_row(*row)
        console.print(table)
    for line in tail:
        console.print(line)


def _print_plain(
    head: list[str], table: tuple[list[str], list[list[str]]] | None, tail: list[str]
) -> bool:
    """Write lines, a table, lines as Rich would outside a terminal; False (nothing written)
    when only Rich knows how."""
    width = _plain_width()
    if width is None:
        return False
    lines = [_plain(line) for line in (*head, *tail)]
    if any(line is None or len(line) > width for line in lines):
        return False
    text = _plain_table(*table) if table is not None else ""
    if text is None:
        return False
    top = "".join(f"{line}\n" for line in lines[: len(head)])
    bottom = "".join(f"{line}\n" for line in lines[len(head) :])
    sys.stdout.write(top + text + bottom)
    return True


def print_kept(kept: dict[str, Any]) -> None:
    """The line under a report answered from its kept copy: when it was computed, by whom."""
    age = float(kept.get("age_s") or 0.0)
    when = (
        f"{age:.0f} s"
        if age < 120
        else (f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h")
    )
    line = (
        f"  computed {when} ago by {kept.get('by') or 'conveyor'}; the log has not changed "
        "since (--fresh computes it again)"
    )
    if not _plain_lines([line]):
        console.print(line)
