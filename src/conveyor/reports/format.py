"""How report values read as text: numbers, changes, table cells, gate evidence and lineage.

The CI comment (``markdown.py``) and the model card (``card.py``) both format through these
functions, so the two never disagree on how a value reads; a single number reads as
``conveyor.evaluate.values.format_number`` writes it, as in the terminal and the monitoring page.
Everything here is a pure function of the candidate report dict, so one candidate always gives
the same text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.config.metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER, METRIC_ORDER
from conveyor.evaluate.values import EMPTY, format_number, format_signed, is_number, jsonable

PLOT_TITLES = {"roc": "ROC curve", "calibration": "Calibration", "residuals": "Residuals"}
VERDICT_ICONS = {
    "pass": "✅",
    "fail": "❌",
    "inconclusive": "⚠️",
    "skipped": "⏭️",
    "error": "💥",
}
NOT_BLOCKING = frozenset({"pass", "skipped"})  # any other verdict, even unknown, stops a candidate
MAX_ROWS = 25  # a PR comment is capped at 65,536 characters (GitHub); long tables are cut
MAX_CELL = 200


# -- metrics and changes --------------------------------------------------------------------------


def direction(metric: str) -> bool | None:
    """True if a higher value of ``metric`` is better, False for a loss, None if unknown."""
    if metric in HIGHER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    return None


def metric_label(metric: str) -> str:
    """The metric's name, saying so when lower is better, so a falling loss reads as good news."""
    return f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric


def format_diff(metric: str, diff: Any) -> str:
    """A signed change with an arrow, and whether it is better or worse for this metric."""
    if not is_number(diff) or math.isnan(diff):
        return EMPTY
    if diff == 0:
        return "±0 (same)"
    arrow = "↑" if diff > 0 else "↓"
    higher = direction(metric)
    if higher is None:
        return f"{format_signed(diff)} {arrow}"
    verdict = "better" if (diff > 0) == higher else "worse"
    return f"{format_signed(diff)} {arrow} {verdict}"


def format_change(metric: str, new: Any, old: Any) -> str:
    """``format_diff`` of ``new - old``; a dash when either is missing."""
    if not is_number(new) or not is_number(old):
        return EMPTY
    return format_diff(metric, new - old)


def format_bytes(size: Any) -> str:
    """A size in KiB/MiB with the exact byte count, which is what a budget gate compares."""
    if not is_number(size):
        return EMPTY
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            if unit == "bytes":
                return f"{int(size)} bytes"
            return f"{value:.1f} {unit} ({int(size)} bytes)"
        value /= 1024
    return f"{int(size)} bytes"  # pragma: no cover - the loop always returns


def format_value(value: Any) -> str:
    """Any evidence value as one line: numbers formatted, example rows spelled out, else JSON."""
    if value is None or isinstance(value, str | int | float):
        return format_number(value)
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) and "row" in v for v in value):
            return "; ".join(f"row {v['row']}: {format_value(v.get('value'))}" for v in value)
        if all(v is None or isinstance(v, str | int | float) for v in value):
            return ", ".join(format_number(v) for v in value)
    return json.dumps(jsonable(value), sort_keys=True, ensure_ascii=False, default=str)


def ordered_metrics(*metric_dicts: Mapping[str, Any] | None) -> list[str]:
    """Metric names in a fixed, familiar order; unknown ones sorted after; ``n`` last."""
    names: set[str] = set()
    for metrics in metric_dicts:
        names.update(str(k) for k in metrics or {})
    known = [m for m in METRIC_ORDER if m in names]
    rest = sorted(names - set(known) - {"n"})
    return known + rest + (["n"] if "n" in names else [])


# -- Markdown text --------------------------------------------------------------------------------


def md_text(value: Any) -> str:
    """Text that Markdown shows as written: backslashes kept and ``<`` never opens an HTML tag."""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\\", "\\\\").replace("<", "&lt;")


def md_inline(value: Any) -> str:
    """``md_text`` on one line, for headings and list items."""
    return " ".join(md_text(value).split("\n"))


def md_cell(value: Any) -> str:
    """A table cell: ``|`` escaped and newlines as ``<br>``, so a cell never splits a row."""
    text = str(value).strip()
    if len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    text = md_text(text).replace("|", "\\|")
    return text.replace("\n", "<br>") or " "


def md_code(value: Any) -> str:
    """An inline code span that survives backticks in the value."""
    text = " ".join(str(value).splitlines())
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def markdown_table(
    header: Sequence[Any], rows: Sequence[Sequence[Any]], *, limit: int | None = MAX_ROWS
) -> str:
    """A GitHub-flavoured table; every row has the header's column count, long tables are cut."""
    width = len(header)
    lines = [
        "| " + " | ".join(md_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        cells = [*row, *[""] * (width - len(row))][:width]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    text = "\n".join(lines)
    if len(rows) > len(shown):
        text += f"\n\n_… and {len(rows) - len(shown)} more rows not shown._"
    return text


# -- pieces of a report ---------------------------------------------------------------------------


def gate_tally(gates: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many gates ended in each verdict, plus ``blocking``: those that stop the candidate."""
    tally = {"pass": 0, "fail": 0, "inconclusive": 0, "error": 0, "skipped": 0, "blocking": 0}
    for gate in gates:
        verdict = str(gate.get("verdict"))
        tally[verdict] = tally.get(verdict, 0) + 1
        if verdict not in NOT_BLOCKING:
            tally["blocking"] += 1
    return tally


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def headline(report: Mapping[str, Any]) -> tuple[str, str]:
    """The overall verdict as (icon, sentence): what the gates said and what became of it."""
    gates = report.get("gates") or []
    tally = gate_tally(gates)
    total = len(gates)
    if not total:
        said = "no gates ran"
    elif tally["skipped"] and not tally["blocking"]:
        said = f"{_plural(tally['pass'], 'gate')} passed, {tally['skipped']} skipped"
    elif not tally["blocking"]:
        said = f"all {total} gates passed" if total > 1 else "the gate passed"
    else:
        parts = []
        if tally["fail"]:
            parts.append(f"{_plural(tally['fail'], 'gate')} failed")
        if tally["inconclusive"]:
            parts.append(f"{tally['inconclusive']} inconclusive")
        if tally["error"]:
            parts.append(f"{tally['error']} could not be evaluated")
        other = tally["blocking"] - tally["fail"] - tally["inconclusive"] - tally["error"]
        if other:
            parts.append(f"{other} with an unknown verdict")
        said = ", ".join(parts) + f" (of {total})"
    status = report.get("status")
    if status == "registered":
        icon = "⚠️" if tally["blocking"] else "✅" if total else "⚪"
        return icon, f"{said}, registered as version {report.get('version')}"
    icon = "❌" if tally["blocking"] or status == "rejected" else "⚪"
    return icon, f"{said}, not registered"


def gate_rows(gates: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of the gates table: verdict (with its icon), gate, kind, summary."""
    rows = []
    for gate in gates:
        verdict = str(gate.get("verdict"))
        rows.append(
            [
                f"{VERDICT_ICONS.get(verdict, '❓')} {verdict}",
                str(gate.get("name", "")),
                str(gate.get("kind") or ""),
                str(gate.get("summary") or ""),
            ]
        )
    return rows


def baseline_label(baseline: Mapping[str, Any]) -> str:
    """``production (v2)``, or ``v2`` for a baseline reached without an alias."""
    alias = baseline.get("alias")
    version = baseline.get("version")
    tag = f"v{version}" if version is not None else "unversioned"
    return f"{alias} ({tag})" if alias else tag


def metrics_table(
    metrics: Mapping[str, Any] | None,
    baseline: Mapping[str, Any] | None,
    *,
    this: str = "candidate",
) -> tuple[list[str], list[list[str]]]:
    """Overall metrics, with the baseline's value and the change when there is a baseline."""
    metrics = metrics or {}
    old = (baseline or {}).get("metrics") or {}
    header = ["metric", this]
    if baseline:
        header += [baseline_label(baseline), "change"]
    rows = []
    for name in ordered_metrics(metrics, old):
        row = [metric_label(name), format_number(metrics.get(name))]
        if baseline:
            row += [
                format_number(old.get(name)),
                format_change(name, metrics.get(name), old.get(name)),
            ]
        rows.append(row)
    return header, rows


def confusion_table(
    matrix: Mapping[str, Any] | None, classes: Sequence[Any] | None = None
) -> tuple[list[str], list[list[str]]] | None:
    """The confusion matrix on the holdout: rows are actual classes, columns predicted.

    A binary evaluation records ``{tn, fp, fn, tp}`` (labelled with ``classes`` when known);
    a multi-class one ``{labels, matrix}``, K×K in the order of ``labels``.
    """
    if not matrix:
        return None
    if "matrix" in matrix:
        counts = matrix.get("matrix") or []
        labels = list(matrix.get("labels") or range(len(counts)))
        if not counts or len(labels) != len(counts):
            return None
        header = ["", *(f"predicted {label}" for label in labels)]
        rows = [
            [f"actual {label}", *(format_number(n) for n in row)]
            for label, row in zip(labels, counts, strict=True)
        ]
        return header, rows
    neg, pos = (classes[0], classes[1]) if classes and len(classes) == 2 else (0, 1)
    header = ["", f"predicted {neg}", f"predicted {pos}"]
    rows = [
        [f"actual {neg}", format_number(matrix.get("tn")), format_number(matrix.get("fp"))],
        [f"actual {pos}", format_number(matrix.get("fn")), format_number(matrix.get("tp"))],
    ]
    return header, rows


def slice_tables(slices: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One table per sliced column: a row per group with ``n`` first and any note last."""
    tables = []
    for column, groups in (slices or {}).items():
        if not isinstance(groups, Mapping) or not groups:
            continue
        values = [g for g in groups.values() if isinstance(g, Mapping)]
        names = [m for m in ordered_metrics(*values) if m not in ("n", "note")]
        has_n = any("n" in g for g in values)
        has_note = any(g.get("note") for g in values)
        header = [str(column), *(["n"] if has_n else []), *names, *(["note"] if has_note else [])]
        rows = []
        for group, result in groups.items():
            result = result if isinstance(result, Mapping) else {}
            row = [str(group)]
            if has_n:
                row.append(format_number(result.get("n")))
            row += [format_number(result.get(m)) for m in names]
            if has_note:
                row.append(str(result.get("note") or ""))
            rows.append(row)
        tables.append({"column": str(column), "header": header, "rows": rows})
    return tables


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def _keys_in_order(items: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for item in items:
        keys += [str(k) for k in item if str(k) not in keys]
    return keys


def evidence_blocks(evidence: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A gate's free-form evidence as tables: scalars as key/value, lists of records as tables.

    ``{"failures": [{"column", "check", "failing_rows", "examples"}]}`` becomes a table with one
    row per failing check; ``{"per_group": {"RENT": 0.4}}`` a group/value table; a mapping of
    records (``{"RENT": {"n": 10, "recall": 0.4}}``) a table with a row per key.
    """
    scalars: list[list[str]] = []
    blocks: list[dict[str, Any]] = []
    for key, value in (evidence or {}).items():
        name = str(key)
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            header = _keys_in_order(value)
            rows = [[format_value(item.get(k)) for k in header] for item in value]
            blocks.append({"title": name, "header": header, "rows": rows})
        elif isinstance(value, Mapping) and value and all(_is_scalar(v) for v in value.values()):
            rows = [[str(k), format_value(v)] for k, v in value.items()]
            blocks.append({"title": name, "header": [name, "value"], "rows": rows})
        elif (
            isinstance(value, Mapping)
            and value
            and all(
                isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values())
                for v in value.values()
            )
        ):
            inner = _keys_in_order(list(value.values()))
            rows = [[str(k), *(format_value(v.get(c)) for c in inner)] for k, v in value.items()]
            blocks.append({"title": name, "header": [name, *inner], "rows": rows})
        else:
            scalars.append([name, format_value(value)])
    if scalars:
        blocks.insert(0, {"title": None, "header": ["evidence", "value"], "rows": scalars})
    return blocks


def compare_sentence(evidence: Mapping[str, Any], against: str = "baseline") -> str | None:
    """A paired comparison in one sentence: both values, the change and its interval."""
    metric = evidence.get("metric")
    if metric is None or not {"a", "b", "diff"} <= set(evidence):
        return None
    text = (
        f"{metric}: candidate {format_number(evidence.get('b'))} vs {against} "
        f"{format_number(evidence.get('a'))}, change {format_diff(str(metric), evidence['diff'])}"
    )
    interval = format_interval(evidence)
    details = [interval] if interval != EMPTY else []
    if is_number(evidence.get("p_value")):
        details.append(f"p = {format_number(evidence['p_value'])}")
    for key, label in (("method", ""), ("n", "n = ")):
        if evidence.get(key) is not None:
            details.append(f"{label}{evidence[key]}")
    return text + (f" ({', '.join(details)})" if details else "") + "."


def format_interval(evidence: Mapping[str, Any]) -> str:
    """``95% CI -0.0180 to -0.0020`` from ``ci_low``, ``ci_high`` and ``alpha``."""
    low, high = evidence.get("ci_low"), evidence.get("ci_high")
    if not is_number(low) or not is_number(high):
        return EMPTY
    alpha = evidence.get("alpha")
    level = f"{(1 - alpha) * 100:g}% CI" if is_number(alpha) else "CI"
    return f"{level} {format_signed(low)} to {format_signed(high)}"


def _params_text(params: Any) -> str:
    if not isinstance(params, Mapping):
        return format_value(params)
    return ", ".join(f"{k}={format_value(v)}" for k, v in params.items()) or "none"


def lineage_items(report: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """Where the candidate came from: run, commit, params, data and environment.

    Each item is ``{"label", "code", "text"}``: ``code`` is shown as code, ``text`` after it (in
    parentheses when both are there).
    """
    lineage = report.get("lineage") or {}
    items: list[dict[str, str | None]] = []

    def add(label: str, code: Any = None, text: str | None = None) -> None:
        items.append({"label": label, "code": None if code is None else str(code), "text": text})

    add("Run", lineage.get("run_id") or report.get("run_id"))
    commit = lineage.get("git_commit")
    dirty = lineage.get("git_dirty")
    state = "uncommitted changes" if dirty is True else "clean" if dirty is False else None
    if commit:
        add("Commit", commit, state)
    else:
        add("Commit", None, "unknown (not a git repository)")
    params = lineage.get("params") or {}
    if not params:
        add("Params", None, "none")
    for step, values in params.items():
        add(f"Params of {step}", _params_text(values))
    data = report.get("data") or {}
    for snap in data.get("snapshots") or []:
        size = []
        if snap.get("row_count") is not None:
            size.append(_plural(int(snap["row_count"]), "row"))
        if snap.get("files") is not None:
            size.append(_plural(int(snap["files"]), "file"))
        add(f"Data ({snap.get('source') or '?'})", snap.get("id"), ", ".join(size) or None)
    if data.get("holdout_rows") is not None:
        add("Holdout", None, _plural(int(data["holdout_rows"]), "row"))
    env = [f"Python {lineage['python']}"] if lineage.get("python") else []
    if lineage.get("packages") is not None:
        env.append(_plural(int(lineage["packages"]), "package"))
    if lineage.get("env_hash") or env:
        add("Environment", lineage.get("env_hash"), ", ".join(env) or None)
    if lineage.get("config_hash"):
        add("Config", lineage["config_hash"])
    return items


def safe_plot_name(name: str) -> str:
    """A plot's key as a file name: no separators or leading dots, so it stays in its folder."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_")
    return cleaned or "plot"


def plot_items(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """The report's SVG plots as ``{"name", "file", "title", "svg"}``; non-text values dropped."""
    items = []
    used: set[str] = set()
    for name, svg in (report.get("plots") or {}).items():
        if not isinstance(svg, str) or not svg.strip():
            continue
        stem = safe_plot_name(name)
        file, k = f"{stem}.svg", 1
        while file in used:  # two keys that clean to one name must not overwrite each other
            k += 1
            file = f"{stem}-{k}.svg"
        used.add(file)
        title = PLOT_TITLES.get(str(name), str(name).replace("_", " ").capitalize())
        items.append({"name": str(name), "file": file, "title": title, "svg": svg})
    return items
