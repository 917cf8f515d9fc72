"""The results as one Markdown table (Conveyor, the reference, their ratio, the goal) and JSON.

The table is built from the raw results alone, so it can be re-rendered from a saved JSON file:
``python -m suite.report results/latest.json`` from ``benchmarks/``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

SIZES = {"small": "10 MB", "large": "1 GB"}


@dataclass
class Row:
    """One line of the table; ``met`` is None where the issue sets no goal."""

    goal_no: str
    measure: str
    data: str
    conveyor: str
    reference: str
    ratio: str
    goal: str = ""
    met: bool | None = None


def _s(seconds: float) -> str:
    if seconds < 0.995:
        return f"{seconds * 1000:.0f} ms" if seconds < 0.0995 else f"{seconds:.3f} s"
    return f"{seconds:.2f} s"


def _ratio(conveyor: float, reference: float, words: tuple[str, str] = ("faster", "slower")) -> str:
    """How many times less time Conveyor took (or more, when it is slower)."""
    if conveyor <= 0 or reference <= 0:
        return "n/a"
    ratio = reference / conveyor
    word = words[0] if ratio >= 1 else words[1]
    ratio = max(ratio, 1 / ratio)
    return f"{ratio:,.0f}× {word}" if ratio >= 100 else f"{ratio:.1f}× {word}"


def _med(entry: dict) -> float:
    return entry["median_s"]


def _pipeline_rows(name: str, res: dict) -> list[Row]:
    size = SIZES.get(name, name)
    conv, dvc, first = res["conveyor"], res.get("dvc"), res["first_run"]
    rows: list[Row] = []

    def pair(no: str, measure: str, c: dict, ref: str, r: dict | None, goal="", met=None) -> None:
        rows.append(
            Row(
                no,
                measure,
                size,
                _s(_med(c)),
                f"{ref} {_s(_med(r))}" if r else "not run",
                _ratio(_med(c), _med(r)) if r else "",
                goal,
                met,
            )
        )

    noop = _med(conv["noop"])
    fast = conv["noop"].get("fast_path_samples", conv["noop"]["n"])
    ref_noop = _med(dvc["noop"]) if dvc else None
    met = noop <= 0.15 and (ref_noop is None or ref_noop / noop >= 8)
    slow = f" ({conv['noop']['n'] - fast} of {conv['noop']['n']} took the engine path)"
    pair(
        "1",
        "fully cached re-run: `conveyor run` vs `dvc repro`"
        + (slow if fast < conv["noop"]["n"] else ""),
        conv["noop"],
        "`dvc repro`",
        dvc and dvc["noop"],
        "≤ 0.15 s and ≥ 8× faster",
        met,
    )
    pair(
        "1",
        "same, engine path (`CONVEYOR_NO_FASTPATH=1`)",
        conv["noop_engine"],
        "`dvc repro`",
        dvc and dvc["noop"],
    )
    pair(
        "1",
        "`conveyor status` vs `dvc status`",
        conv["status"],
        "`dvc status`",
        dvc and dvc["status"],
    )
    pair(
        "1",
        "`conveyor status`, engine path",
        conv["status_engine"],
        "`dvc status`",
        dvc and dvc["status"],
    )
    bare = _med(first["bare"])
    pair(
        "2",
        f"first run, 5 steps (scripts alone: {_s(bare)})",
        first["conveyor"],
        "`dvc repro`",
        first.get("dvc"),
    )
    over = first["conveyor_overhead_s"]
    ref_over = first.get("dvc_overhead_s")
    rows.append(
        Row(
            "2",
            "first run: overhead over the bare scripts",
            size,
            f"{over:+.2f} s",
            f"DVC {ref_over:+.2f} s" if ref_over is not None else "not run",
            _ratio(over, ref_over, ("less", "more")) if ref_over is not None and over > 0 else "",
            "≤ 0.5 s (1 GB)" if name == "large" else "",
            over <= 0.5 if name == "large" else None,
        )
    )
    if "conveyor_outside_steps_s" in first:
        rows.append(
            Row(
                "2",
                "first run: Conveyor's overhead outside the steps / inside them",
                size,
                f"{first['conveyor_outside_steps_s']:+.2f} s / "
                f"{first['conveyor_inside_steps_s']:+.2f} s",
                "",
                "",
            )
        )
    snap = res.get("snapshot_variant")
    if snap:
        profiled = "profile stored" if snap["profile_stored"] else "no profile stored"
        rows.append(
            Row(
                "2",
                f"first run with `inputs: [data.raw]` (profiled after the steps; {profiled})",
                size,
                f"{_s(snap['wall_s'])} ({snap['wall_s'] - bare:+.2f} s)",
                "",
                "",
            )
        )
    pair(
        "3",
        "param change: 3 steps re-run",
        conv["param_change"],
        "`dvc repro`",
        dvc and dvc["param_change"],
    )
    pair(
        "3",
        "param reverted: restored from cache",
        conv["param_revert"],
        "`dvc repro` (run-cache)",
        dvc and dvc["param_revert"],
    )
    return rows


def _hashing_rows(res: dict) -> list[Row]:
    conv = res["conveyor"]
    size = f"{conv['bytes'] / 1e9:.2f} GB"
    cold = conv["cold"]
    rows: list[Row] = []
    variants = res.get("dvc", {}).get("variants", {})
    first = True
    for name, dvc in variants.items():
        rows.append(
            Row(
                "4",
                "snapshot hashing, cold (`FileHasher(None).hash_many`)",
                size,
                f"{cold['MBps']:,.0f} MB/s ({_s(_med(cold))})",
                f"`dvc add`, {name}: {dvc['MBps']:,.0f} MB/s ({_s(_med(dvc))})",
                _ratio(_med(cold), _med(dvc)),
                "≥ 2 GB/s" if first else "",
                cold["MBps"] >= 2000 if first else None,
            )
        )
        first = False
    if not variants:
        rows.append(
            Row(
                "4",
                "snapshot hashing, cold",
                size,
                f"{cold['MBps']:,.0f} MB/s",
                "not run",
                "",
                "≥ 2 GB/s",
                cold["MBps"] >= 2000,
            )
        )
    fill, warm = conv["filling_cache"], conv["warm"]
    rows.append(
        Row(
            "4",
            "snapshot hashing, first hash filling the stat cache",
            size,
            f"{fill['MBps']:,.0f} MB/s ({_s(_med(fill))})",
            "",
            "",
        )
    )
    rows.append(
        Row(
            "4",
            f"snapshot hashing, unchanged files through the stat cache ({conv['files']} stats)",
            size,
            _s(_med(warm)),
            "",
            "",
        )
    )
    return rows


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + _s(abs(seconds))


def _tracking_rows(res: dict) -> list[Row]:
    conv, ml = res["conveyor"], res.get("mlflow")
    in_run, end_to_end = conv["extra_in_engine_s"], conv["extra_wall_s"]
    cost = max(in_run, end_to_end, _med(conv["loop"]))
    rows: list[Row] = []
    if ml:
        note = f" (extrapolated from {ml['n']:,} calls)" if ml["extrapolated"] else ""
        ref_total = f"MLflow {_s(ml['total_for_10000_s'])}{note}"
        ref_call = f"MLflow {ml['per_call_ms']:.2f} ms"
    else:
        ref_total = ref_call = "not run"
    rows.append(
        Row(
            "5",
            f"{conv['calls']:,} `log_metric` calls in a step, all stored: extra time of the run "
            "(inside `conveyor`; whole process)",
            "",
            f"{_signed(in_run)}; {_signed(end_to_end)}",
            ref_total,
            _ratio(cost, ml["total_for_10000_s"]) if ml else "",
            "≤ 0.2 s total",
            cost <= 0.2,
        )
    )
    rows.append(
        Row(
            "5",
            "`log_metric` per call, timed inside the step",
            "",
            f"{conv['per_call_us']:.2f} µs (loop {_s(_med(conv['loop']))})",
            ref_call,
            _ratio(conv["per_call_us"] / 1e6, ml["per_call_ms"] / 1e3) if ml else "",
        )
    )
    return rows


def _startup_rows(res: dict, repeats: object) -> list[Row]:
    conv = res.get("conveyor")
    rows: list[Row] = []
    if conv is None:
        return rows
    first = True
    for tool in ("dvc", "mlflow"):
        ref = res.get(tool)
        rows.append(
            Row(
                "6",
                f"`conveyor --help` (median of {repeats} after a warm-up)",
                "",
                _s(_med(conv)),
                f"`{tool} --help` {_s(_med(ref))}" if ref else "not run",
                _ratio(_med(conv), _med(ref)) if ref else "",
                "≤ 0.25 s" if first else "",
                _med(conv) <= 0.25 if first else None,
            )
        )
        first = False
    return rows


def rows_of(results: dict) -> list[Row]:
    """Every table row, in the order of the issue's goals."""
    rows: list[Row] = []
    for name in ("small", "large"):
        if name in results.get("pipeline", {}):
            rows += _pipeline_rows(name, results["pipeline"][name])
    rows.sort(key=lambda row: row.goal_no)  # stable: keeps small before large within a goal
    if "hashing" in results:
        rows += _hashing_rows(results["hashing"])
    if "tracking" in results:
        rows += _tracking_rows(results["tracking"])
    if "startup" in results:
        repeats = results.get("meta", {}).get("startup_repeats", "?")
        rows += _startup_rows(results["startup"], repeats)
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(results: dict) -> str:
    """The report: a header with versions and machine, the table, the goals and the method."""
    meta = results.get("meta", {})
    lines = [
        f"# Conveyor benchmarks ({'quick' if meta.get('quick') else 'full'} run)",
        "",
        f"{meta.get('started', '')}; {meta.get('machine', '')}; load average "
        f"{meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after.",
        f"Conveyor {meta.get('conveyor_version', '?')} (commit {meta.get('commit', '?')}), "
        f"DVC {meta.get('dvc_version', 'not run')}, "
        f"MLflow {meta.get('mlflow_version', 'not run')}, "
        f"Python {meta.get('python', '?')}.",
        "",
        "| # | measure | data | Conveyor | reference | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = rows_of(results)
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        cells = [
            row.goal_no,
            row.measure,
            row.data,
            row.conveyor,
            row.reference,
            row.ratio,
            row.goal,
            met,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    goals = [row for row in rows if row.met is not None]
    missed = [row for row in goals if not row.met]
    verdict = f"Goals met: {len(goals) - len(missed)} of {len(goals)}."
    if missed:
        names = "; ".join(f"#{r.goal_no} {r.measure} ({r.data or r.goal})" for r in missed)
        verdict = verdict[:-1] + f"; missed: {names}."
    lines += [
        "",
        verdict,
        "",
        "Method: wall clock of the whole CLI process (`os.wait4`), so interpreter start-up and "
        "imports count; median of "
        f"{meta.get('repeats', '?')} (start-up: {meta.get('startup_repeats', '?')} after one "
        "warm-up); page cache warm; telemetry off (`DVC_NO_ANALYTICS=1`, `DO_NOT_TRACK=true`, "
        "`MLFLOW_DISABLE_TELEMETRY=true`); HOME and XDG folders inside `benchmarks/work/`. "
        "Every project is new, in its own git repository, with the input hard-linked in; the "
        "same stage scripts run on the same interpreter under every tool. First runs are "
        "interleaved bare / Conveyor / DVC. Cached measures are checked to have run nothing "
        "(and changes exactly 3 steps) before they count. Ratio = reference time / Conveyor "
        "time. Raw figures: the JSON file beside this one.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    """Re-render a saved results JSON as Markdown on stdout."""
    results = json.loads(Path(argv[0]).read_text())
    sys.stdout.write(markdown(results))


if __name__ == "__main__":
    main(sys.argv[1:])
