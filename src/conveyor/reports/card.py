"""The model card: what a version is, what it was tested on and how it did, as Markdown and HTML.

Sections follow Mitchell et al., "Model Cards for Model Reporting" (2019), as Hugging Face cards
do: details, intended use, data, metrics overall and per slice, fairness, limitations. Conveyor
adds what it knows for certain rather than what someone remembered to write: the gates and their
evidence, the comparison with the version it would replace, and the full lineage.

The HTML card is one self-contained file (the pages' shared stylesheet inline, plots as ``data:``
images, no scripts), so it can be attached to a release or served by the dashboard as is.
Everything is autoescaped, and plots are embedded as ``<img>`` sources, which browsers render
without running any script an SVG might carry.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from conveyor.evaluate.values import EMPTY, format_number, is_number
from conveyor.reports.format import (
    VERDICT_ICONS,
    baseline_label,
    compare_sentence,
    confusion_table,
    evidence_blocks,
    format_bytes,
    format_diff,
    format_interval,
    format_value,
    gate_rows,
    headline,
    lineage_items,
    metric_label,
    metrics_table,
    ordered_metrics,
    plot_items,
    slice_tables,
)
from conveyor.reports.markdown import render_markdown
from conveyor.reports.pages import render_page

_VERDICT_CLASS = {v: f"v-{v}" for v in VERDICT_ICONS}
_MAX_CATEGORIES = 12


def _details(report: Mapping[str, Any]) -> list[list[str]]:
    artifacts = report.get("artifacts") or {}
    model = artifacts.get("model") or {}
    onnx = artifacts.get("onnx")
    version = report.get("version")
    rows = [
        ["Model", str(report.get("model") or EMPTY)],
        ["Version", str(version) if version is not None else "not registered"],
        ["Status", str(report.get("status") or EMPTY)],
        ["Project", str(report.get("project") or EMPTY)],
        ["Task", str(report.get("task") or EMPTY)],
        ["Target", str(report.get("target") or EMPTY)],
        ["Created", str(report.get("created_at") or EMPTY)],
        ["Aliases", ", ".join(str(a) for a in report.get("aliases") or []) or "none"],
        ["Run", str(report.get("run_id") or EMPTY)],
    ]
    if model:
        size = format_bytes(model.get("size"))
        rows.append(["Format", f"{model.get('format') or 'unknown'}, {size}"])
        rows.append(["SHA-256", str(model.get("digest") or EMPTY)])
    if onnx:
        diff = onnx.get("max_abs_diff")
        rows.append(
            [
                "ONNX",
                f"{format_bytes(onnx.get('size'))}, sha256 {onnx.get('digest') or EMPTY}, "
                f"largest difference from the original model {format_number(diff)}",
            ]
        )
    else:
        why = artifacts.get("onnx_not_exported")
        rows.append(["ONNX", f"not exported: {why}" if why else "not exported"])
    return rows


def _snapshots(report: Mapping[str, Any]) -> list[list[str]]:
    snaps = (report.get("data") or {}).get("snapshots") or []
    return [
        [
            str(s.get("source") or EMPTY),
            str(s.get("id") or EMPTY),
            str(s.get("content_hash") or EMPTY),
            format_number(s.get("row_count")),
            format_number(s.get("files")),
        ]
        for s in snaps
    ]


def _categories(values: Any) -> str:
    if not values:
        return ""
    shown = ", ".join(str(v) for v in values[:_MAX_CATEGORIES])
    more = len(values) - _MAX_CATEGORIES
    return f"{shown}, … ({more} more)" if more > 0 else shown


def _signature(report: Mapping[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    signature = report.get("signature") or {}
    inputs = [
        [
            str(col.get("name", "")),
            str(col.get("type") or EMPTY),
            format_number(col.get("nullable")),
            _categories(col.get("categories")),
        ]
        for col in signature.get("inputs") or []
    ]
    output = signature.get("output") or {}
    out_rows = [[str(k), format_value(v)] for k, v in output.items()]
    return inputs, out_rows


def _fairness(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for gate in report.get("gates") or []:
        if gate.get("kind") != "fairness":
            continue
        verdict = str(gate.get("verdict"))
        evidence = gate.get("evidence") if isinstance(gate.get("evidence"), Mapping) else {}
        out.append(
            {
                "icon": VERDICT_ICONS.get(verdict, "❓"),
                "verdict": verdict,
                "css": _VERDICT_CLASS.get(verdict, "v-other"),
                "name": str(gate.get("name", "")),
                "summary": str(gate.get("summary") or ""),
                "blocks": evidence_blocks(evidence),
            }
        )
    return out


def _replaces(
    report: Mapping[str, Any], replaces: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    if not replaces:
        return None
    label = baseline_label(replaces)
    mine = report.get("metrics") or {}
    theirs = replaces.get("metrics") or {}
    comparisons = {
        str(c["metric"]): c
        for c in replaces.get("comparisons") or []
        if isinstance(c, Mapping) and c.get("metric") is not None
    }
    header = ["metric", "this version", label, "change"]
    if comparisons:  # a plain baseline has no paired tests: no columns of dashes
        header += ["interval", "p-value", "test"]
    rows = []
    for name in ordered_metrics(mine, theirs, dict.fromkeys(comparisons)):
        cmp = comparisons.get(name)
        new = mine.get(name, cmp.get("b") if cmp else None)
        old = theirs.get(name, cmp.get("a") if cmp else None)
        if cmp is not None and is_number(cmp.get("diff")):
            change = format_diff(name, cmp["diff"])
        elif is_number(new) and is_number(old):
            change = format_diff(name, new - old)
        else:
            change = EMPTY
        row = [metric_label(name), format_number(new), format_number(old), change]
        if cmp is not None:
            test = ", ".join(
                f"{prefix}{cmp[key]}"
                for key, prefix in (("method", ""), ("n", "n = "))
                if cmp.get(key) is not None
            )
            row += [format_interval(cmp), format_number(cmp.get("p_value")), test or EMPTY]
        elif comparisons:
            row += [EMPTY, EMPTY, EMPTY]
        rows.append(row)
    sentences = [s for c in comparisons.values() if (s := compare_sentence(c, label))]
    return {"label": label, "header": header, "rows": rows, "sentences": sentences}


def card_view(
    report: Mapping[str, Any], replaces: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything a card shows, formatted; both templates only lay it out."""
    version = report.get("version")
    model = str(report.get("model") or "model")
    title = f"{model} v{version}" if version is not None else f"{model} (candidate, not registered)"
    icon, sentence = headline(report)
    inputs, output = _signature(report)
    header, rows = metrics_table(report.get("metrics"), None, this="value")
    classes = ((report.get("signature") or {}).get("output") or {}).get("classes")
    gates = report.get("gates") or []
    return {
        "title": title,
        "icon": icon,
        "headline": sentence,
        "details": _details(report),
        "intended_use": report.get("intended_use"),
        "limitations": report.get("limitations"),
        "snapshots": _snapshots(report),
        "holdout_rows": (report.get("data") or {}).get("holdout_rows"),
        "inputs": inputs,
        "output": output,
        "metrics": {"header": header, "rows": rows} if rows else None,
        "confusion": confusion_table(report.get("confusion_matrix"), classes),
        "slices": slice_tables(report.get("slices")),
        "fairness": _fairness(report),
        "gates": [
            {"cells": row, "css": _VERDICT_CLASS.get(str(g.get("verdict")), "v-other")}
            for row, g in zip(gate_rows(gates), gates, strict=True)
        ],
        "replaces": _replaces(report, replaces if replaces is not None else report.get("baseline")),
        "lineage": lineage_items(report),
        "plots": [
            {
                "title": p["title"],
                "src": "data:image/svg+xml;base64,"
                + base64.b64encode(p["svg"].encode("utf-8")).decode("ascii"),
            }
            for p in plot_items(report)
        ],
    }


def card_markdown(report: Mapping[str, Any], *, replaces: Mapping[str, Any] | None = None) -> str:
    """The model card as Markdown, for a README, a release or a Hugging Face style card.

    Args:
        report: the candidate report dict built from the registry.
        replaces: the version this one would replace, ``{"alias", "version", "metrics",
            "comparisons"}`` with the compare gates' evidence; None uses ``report["baseline"]``
            (without intervals), and no baseline leaves the section saying there is none.
    """
    return render_markdown("card.md.j2", card_view(report, replaces))


def card_html(report: Mapping[str, Any], *, replaces: Mapping[str, Any] | None = None) -> str:
    """The model card as one self-contained, autoescaped HTML page with the plots inline.

    Args:
        report: the candidate report dict built from the registry.
        replaces: as for ``card_markdown``.
    """
    return render_page("card.html.j2", card_view(report, replaces))
