"""The CI report: a Markdown pull-request comment (as CML posts one), its plots and JUnit XML.

Renderers are pure functions of the candidate report dict that the integrator builds from the
registry, so one candidate always gives the same text; how each value reads is ``format.py``'s
job. The Markdown template environment here also renders the model card (``card.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from conveyor.config.metrics import LOWER_IS_BETTER
from conveyor.exceptions import ExportError
from conveyor.reports.format import (
    NOT_BLOCKING,
    VERDICT_ICONS,
    baseline_label,
    compare_sentence,
    confusion_table,
    evidence_blocks,
    gate_rows,
    headline,
    lineage_items,
    markdown_table,
    md_code,
    md_inline,
    md_text,
    metrics_table,
    ordered_metrics,
    plot_items,
    slice_tables,
)
from conveyor.reports.junit import junit_xml
from conveyor.reports.pages import TEMPLATES

_COMPARE_KEYS = frozenset(
    {"metric", "a", "b", "diff", "ci_low", "ci_high", "p_value", "method", "n", "alpha"}
)


# -- Markdown templates ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def markdown_env() -> Any:
    """The Jinja2 environment for Markdown: no autoescape (cells escape themselves)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(text=md_text, inline=md_inline, code=md_code)
    env.globals["table"] = markdown_table
    return env


def render_markdown(template: str, view: Mapping[str, Any]) -> str:
    """Renders a Markdown template; runs of blank lines left by skipped sections become one."""
    text = markdown_env().get_template(template).render(**view)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# -- the CI comment --------------------------------------------------------------------------------


def failing_gates(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every gate that did not pass or skip, with its evidence laid out for reading."""
    baseline = report.get("baseline")
    against = baseline_label(baseline) if baseline else "baseline"
    out = []
    for gate in report.get("gates") or []:
        verdict = str(gate.get("verdict"))
        if verdict in NOT_BLOCKING:
            continue
        evidence = gate.get("evidence") if isinstance(gate.get("evidence"), Mapping) else {}
        sentence = compare_sentence(evidence, against) if gate.get("kind") == "compare" else None
        if sentence:  # the sentence already says these; the table keeps the rest (margin, rule)
            evidence = {k: v for k, v in evidence.items() if k not in _COMPARE_KEYS}
        out.append(
            {
                "icon": VERDICT_ICONS.get(verdict, "❓"),
                "verdict": verdict,
                "name": str(gate.get("name", "")),
                "summary": str(gate.get("summary") or ""),
                "sentence": sentence,
                "blocks": evidence_blocks(evidence),
            }
        )
    return out


def ci_view(report: Mapping[str, Any], plots_dir: str | None = None) -> dict[str, Any]:
    """Everything the CI template shows, formatted; the template only lays it out."""
    baseline = report.get("baseline")
    metrics = report.get("metrics") or {}
    icon, sentence = headline(report)
    signature_output = (report.get("signature") or {}).get("output") or {}
    plots = []
    if plots_dir is not None:
        base = plots_dir.rstrip("/")
        for item in plot_items(report):
            url = quote(f"{base}/{item['file']}" if base else item["file"], safe="/:.-_~")
            plots.append({"title": item["title"], "url": url})
    header, rows = metrics_table(metrics, baseline)
    return {
        "icon": icon,
        "headline": sentence,
        "model": report.get("model") or "model",
        "project": report.get("project"),
        "run_id": report.get("run_id"),
        "task": report.get("task"),
        "target": report.get("target"),
        "holdout_rows": (report.get("data") or {}).get("holdout_rows"),
        "baseline": baseline_label(baseline) if baseline else None,
        "gates": gate_rows(report.get("gates") or []),
        "metrics": {"header": header, "rows": rows} if rows else None,
        "losses": [m for m in ordered_metrics(metrics) if m in LOWER_IS_BETTER],
        "confusion": confusion_table(
            report.get("confusion_matrix"), signature_output.get("classes")
        ),
        "slices": slice_tables(report.get("slices")),
        "failing": failing_gates(report),
        "lineage": lineage_items(report),
        "plots": plots,
    }


def ci_markdown(report: Mapping[str, Any], *, plots_dir: str | None = None) -> str:
    """The candidate's CI report as a Markdown pull-request comment.

    Args:
        report: the candidate report dict built from the registry: gates, metrics, baseline,
            slices, lineage, plots. Any number may be None (a NaN stored as null).
        plots_dir: where the plots are, relative to the comment; when given, each plot in
            ``report["plots"]`` is linked as ``![ROC curve](plots_dir/roc.svg)``. CML uploads
            images linked this way when it posts the comment.
    """
    return render_markdown("ci.md.j2", ci_view(report, plots_dir))


def atomic_write(path: Path, text: str) -> None:
    """Writes ``text`` to a temp file beside ``path`` and renames it over, so no reader sees half.

    Raises:
        ExportError: the folder cannot be created or the file cannot be written.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0o600; a CI artifact is read by other users
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ExportError(
            f"Cannot write the report file {str(path)!r}: {exc.strerror or exc}. "
            "Pick a path in a writable folder."
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_ci_report(
    report: Mapping[str, Any], md_path: Path, junit_path: Path | None = None
) -> list[Path]:
    """Writes the CI comment, its plots (``<stem>-plots/*.svg`` beside it) and the JUnit XML.

    Every file is written atomically; the Markdown links its plots by a path relative to itself,
    so the folder can be uploaded or moved as a whole.

    Args:
        report: the candidate report dict.
        md_path: the Markdown file to write, e.g. ``report.md``.
        junit_path: where to write the gates as JUnit XML, or None for no XML.

    Returns:
        The paths written: the Markdown first, then the plots, then the XML.

    Raises:
        ExportError: a file or folder cannot be written.
    """
    md_path = Path(md_path)
    plots = plot_items(report)
    plots_dir = f"{md_path.stem}-plots"
    written = [md_path]
    for item in plots:
        path = md_path.parent / plots_dir / item["file"]
        atomic_write(path, item["svg"])
        written.append(path)
    atomic_write(md_path, ci_markdown(report, plots_dir=plots_dir if plots else None))
    if junit_path is not None:
        junit_path = Path(junit_path)
        atomic_write(junit_path, junit_xml(report))
        written.append(junit_path)
    return written
