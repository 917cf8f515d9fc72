"""The CI comment: verdict headline, tables that never split, evidence, lineage, files on disk.

The report dicts built here are shared with the JUnit and card tests.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.evaluate.plots import calibration_svg, roc_svg
from conveyor.evaluate.values import format_number
from conveyor.exceptions import ExportError
from conveyor.reports.format import format_change, md_cell
from conveyor.reports.markdown import ci_markdown, write_ci_report

# -- report dicts, as the integrator builds them from the registry ------------------------------


def _plots() -> dict[str, str]:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    score = np.clip(0.35 * y + rng.random(300) * 0.65, 0, 1)
    return {"roc": roc_svg(y, score), "calibration": calibration_svg(y, score)}


def _gate(name: str, kind: str, verdict: str, summary: str, **evidence: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "verdict": verdict,
        "summary": summary,
        "evidence": evidence,
        "duration_s": 0.012,
    }


def registered_report() -> dict[str, Any]:
    """Version 3 of a classifier, better than production v2, every gate passed."""
    compare = {
        "metric": "roc_auc",
        "a": 0.779,
        "b": 0.791,
        "diff": 0.012,
        "ci_low": 0.004,
        "ci_high": 0.020,
        "p_value": 0.0031,
        "method": "delong",
        "n": 2000,
        "alpha": 0.05,
    }
    return {
        "project": "loans",
        "model": "loans-default",
        "version": 3,
        "status": "registered",
        "run_id": "r-20261123-100000-ab12",
        "created_at": "2026-11-23T10:00:00+00:00",
        "task": "classification",
        "target": "high_risk",
        "intended_use": "Rank loan applications by default risk for manual review.",
        "limitations": "Trained on 2019-2020 applications only.\nNot for automated denial.",
        "metrics": {
            "roc_auc": 0.791,
            "accuracy": 0.80,
            "precision": 0.6667,
            "recall": 0.40,
            "f1": 0.50,
            "log_loss": 0.4312,
            "brier": 0.1401,
            "ece": 0.021,
            "n": 2000,
        },
        "baseline": {
            "alias": "production",
            "version": 2,
            "metrics": {
                "roc_auc": 0.779,
                "accuracy": 0.79,
                "precision": 0.65,
                "recall": 0.38,
                "f1": 0.48,
                "log_loss": 0.4455,
                "brier": 0.1432,
                "ece": 0.025,
                "n": 2000,
            },
        },
        "slices": {
            "homeownership": {
                "MORTGAGE": {"n": 900, "roc_auc": 0.78, "recall": 0.50},
                "RENT": {"n": 800, "roc_auc": 0.80, "recall": 0.45},
                "OWN": {"n": 300, "roc_auc": 0.77, "recall": 0.41},
            }
        },
        "confusion_matrix": {"tn": 1400, "fp": 100, "fn": 300, "tp": 200},
        "gates": [
            _gate("roc_auc >= 0.75", "threshold", "pass", "roc_auc 0.7910 >= 0.75.", value=0.791),
            _gate(
                "roc_auc >= production.roc_auc - 0.005",
                "compare",
                "pass",
                "roc_auc is not worse than production v2 (diff +0.012, 95% CI +0.004 to +0.020).",
                **compare,
            ),
            _gate(
                "fairness: homeownership recall max_gap 0.10",
                "fairness",
                "pass",
                "The recall gap across homeownership is 0.09, within 0.10.",
                metric="recall",
                group="homeownership",
                max_gap=0.10,
                gap=0.09,
                per_group={"MORTGAGE": 0.50, "RENT": 0.45, "OWN": 0.41},
            ),
            _gate("latency p99 <= 20 ms", "latency", "pass", "p99 4.1 ms.", p99_ms=4.1),
        ],
        "plots": _plots(),
        "data": {
            "snapshots": [
                {
                    "source": "loans",
                    "id": "loans:ab12cd34ef56",
                    "content_hash": "ab12cd34ef56",
                    "row_count": 10000,
                    "files": 1,
                }
            ],
            "holdout_rows": 2000,
        },
        "lineage": {
            "run_id": "r-20261123-100000-ab12",
            "git_commit": "4f5e6d7c8b9a",
            "git_dirty": True,
            "params": {"train": {"max_depth": 6, "n_estimators": 200}, "prepare": {"seed": 1}},
            "env_hash": "e" * 16,
            "python": "3.11.2",
            "packages": 120,
            "config_hash": "c" * 16,
        },
        "signature": {
            "inputs": [
                {"name": "loan_amount", "type": "float64", "nullable": False},
                {
                    "name": "homeownership",
                    "type": "category",
                    "nullable": False,
                    "categories": ["MORTGAGE", "OWN", "RENT"],
                },
            ],
            "output": {"task": "classification", "classes": [0, 1], "returns": "probability"},
        },
        "artifacts": {
            "model": {"format": "skops", "digest": "d" * 64, "size": 1_250_000},
            "onnx": {"digest": "f" * 64, "size": 400_000, "max_abs_diff": 2.4e-7},
        },
        "aliases": ["production"],
    }


def rejected_report() -> dict[str, Any]:
    """A candidate that is worse than production and whose holdout failed validation."""
    report = registered_report()
    report.update(version=None, status="rejected", aliases=[], intended_use=None, limitations=None)
    report["artifacts"]["onnx"] = None
    report["metrics"]["roc_auc"] = 0.761
    report["metrics"]["ece"] = None  # a NaN stored as null
    report["slices"]["homeownership"]["OTHER"] = {
        "n": 3,
        "roc_auc": None,
        "recall": None,
        "note": "only one class | too few rows",
    }
    report["gates"][1] = _gate(
        "roc_auc >= production.roc_auc - 0.005",
        "compare",
        "fail",
        "roc_auc is worse than production v2 by more than 0.005.",
        metric="roc_auc",
        a=0.779,
        b=0.761,
        diff=-0.018,
        ci_low=-0.027,
        ci_high=-0.009,
        p_value=0.0002,
        method="delong",
        n=2000,
        alpha=0.05,
    )
    report["gates"].append(
        _gate(
            "holdout matches schema",
            "validation",
            "fail",
            "2 checks failed on the holdout.",
            failures=[
                {
                    "column": "loan_amount",
                    "check": "greater_than_or_equal_to(0)",
                    "failing_rows": 2,
                    "examples": [{"row": 17, "value": -5.0}, {"row": 40, "value": -1.5}],
                },
                {
                    "column": "homeownership",
                    "check": "isin(MORTGAGE|OWN|RENT)",
                    "failing_rows": 1,
                    "examples": [{"row": 3, "value": "<script>alert(1)</script>"}],
                },
            ],
        )
    )
    report["gates"].append(
        _gate("model size <= 5 MB", "size", "inconclusive", "No size recorded.", size=None)
    )
    return report


def regression_report() -> dict[str, Any]:
    """A regression model: no baseline, no plots, no confusion matrix, no gates."""
    return {
        "project": "houses",
        "model": "house-price",
        "version": 1,
        "status": "registered",
        "run_id": "r-20261123-120000-cd34",
        "created_at": "2026-11-23T12:00:00+00:00",
        "task": "regression",
        "target": "price",
        "intended_use": None,
        "limitations": None,
        "metrics": {"mae": 12500.5, "rmse": 18000.25, "r2": 0.81, "mape": None, "n": 500},
        "baseline": None,
        "slices": {},
        "confusion_matrix": None,
        "gates": [],
        "plots": {},
        "data": {"snapshots": [], "holdout_rows": 500},
        "lineage": {
            "run_id": "r-20261123-120000-cd34",
            "git_commit": None,
            "git_dirty": None,
            "params": {},
            "env_hash": "a" * 16,
            "python": "3.11.2",
            "packages": 95,
            "config_hash": "b" * 16,
        },
        "signature": {"inputs": [], "output": {"task": "regression", "returns": "value"}},
        "artifacts": {"model": {"format": "skops", "digest": "9" * 64, "size": 900}, "onnx": None},
        "aliases": [],
    }


# -- helpers that read Markdown back -------------------------------------------------------------


def split_row(line: str) -> list[str]:
    """The cells of a GFM table row: a backslash escapes the next character, ``|`` splits."""
    cells, cell, i = [], "", 0
    body = line.strip()
    assert body.startswith("|") and body.endswith("|") and not body.endswith("\\|"), line
    body = body[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            cell += body[i : i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
        i += 1
    cells.append(cell.strip())
    return cells


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table in the text, as rows of cells (the delimiter row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in markdown.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                found.append(current)
            if not re.fullmatch(r"\|(-{3}\|)+", line):
                current.append(split_row(line))
        else:
            current = None
    return found


def assert_tables_consistent(markdown: str) -> None:
    found = tables(markdown)
    assert found, "no table found"
    for table in found:
        widths = {len(row) for row in table}
        assert len(widths) == 1, table


def table_with(markdown: str, first_header: str) -> list[list[str]]:
    for table in tables(markdown):
        if table[0][0] == first_header:
            return table
    raise AssertionError(f"no table starting with {first_header!r}")


# -- tests ---------------------------------------------------------------------------------------


def test_registered_headline_metrics_and_baseline() -> None:
    md = ci_markdown(registered_report())
    first = md.splitlines()[0]
    assert first == "## ✅ loans-default: all 4 gates passed, registered as version 3"
    assert_tables_consistent(md)
    metrics = table_with(md, "metric")
    assert metrics[0] == ["metric", "candidate", "production (v2)", "change"]
    rows = {r[0]: r for r in metrics[1:]}
    assert rows["roc_auc"][1:] == ["0.7910", "0.7790", "+0.0120 ↑ better"]
    # a loss that fell is an improvement, and the metric says lower is better
    assert rows["log_loss (lower is better)"][3] == "-0.0143 ↓ better"
    assert rows["n"][1:] == ["2000", "2000", "±0 (same)"]
    assert "Lower is better for log_loss, brier, ece" in md
    assert "<details>" not in md  # nothing failed, so no evidence block


def test_rejected_headline_counts_failures_and_says_not_registered() -> None:
    md = ci_markdown(rejected_report())
    assert md.splitlines()[0] == (
        "## ❌ loans-default: 2 gates failed, 1 inconclusive (of 6), not registered"
    )


def test_gates_table_has_every_gate_with_its_verdict() -> None:
    md = ci_markdown(rejected_report())
    gates = table_with(md, "verdict")
    assert gates[0] == ["verdict", "gate", "kind", "summary"]
    assert [r[0] for r in gates[1:]] == [
        "✅ pass",
        "❌ fail",
        "✅ pass",
        "✅ pass",
        "❌ fail",
        "⚠️ inconclusive",
    ]
    assert gates[2][1] == "roc_auc >= production.roc_auc - 0.005"


def test_failing_evidence_is_collapsible_with_validation_examples() -> None:
    md = ci_markdown(rejected_report())
    assert_tables_consistent(md)
    details = md[md.index("<details>") : md.index("</details>")]
    assert "<summary>Evidence for the 3 gates that did not pass</summary>\n\n" in details
    # the compare gate reads as a sentence with its interval
    assert (
        "roc_auc: candidate 0.7610 vs production (v2) 0.7790, change -0.0180 ↓ worse "
        "(95% CI -0.0270 to -0.0090, p = 2.000e-04, delong, n = 2000)." in details
    )
    failures = table_with(details, "column")
    assert failures[0] == ["column", "check", "failing_rows", "examples"]
    assert failures[1] == [
        "loan_amount",
        "greater_than_or_equal_to(0)",
        "2",
        "row 17: -5.0000; row 40: -1.5000",
    ]
    # the pipe inside a check name is escaped and HTML in an example value cannot open a tag
    assert failures[2][1] == "isin(MORTGAGE\\|OWN\\|RENT)"
    assert failures[2][3] == "row 3: &lt;script>alert(1)&lt;/script>"
    assert "<script>" not in md
    # the sentence replaces the compare gate's key/value rows; passing gates show no evidence
    assert "| ci_low |" not in details
    assert "p99_ms" not in details


def test_slices_and_none_values() -> None:
    md = ci_markdown(rejected_report())
    slices = table_with(md, "homeownership")
    assert slices[0] == ["homeownership", "n", "roc_auc", "recall", "note"]
    other = next(r for r in slices if r[0] == "OTHER")
    assert other == ["OTHER", "3", "—", "—", "only one class \\| too few rows"]
    metrics = {r[0]: r for r in table_with(md, "metric")[1:]}
    assert metrics["ece (lower is better)"][1:] == ["—", "0.0250", "—"]


def test_confusion_matrix_uses_the_signature_classes() -> None:
    report = registered_report()
    report["signature"]["output"]["classes"] = ["repaid", "defaulted"]
    table = table_with(ci_markdown(report), "")
    assert table == [
        ["", "predicted repaid", "predicted defaulted"],
        ["actual repaid", "1400", "100"],
        ["actual defaulted", "300", "200"],
    ]


def test_lineage_names_run_commit_params_and_data() -> None:
    md = ci_markdown(registered_report())
    lineage = md[md.index("### Lineage") :]
    assert "- **Run**: `r-20261123-100000-ab12`" in lineage
    assert "- **Commit**: `4f5e6d7c8b9a` (uncommitted changes)" in lineage
    assert "- **Params of train**: `max_depth=6, n_estimators=200`" in lineage
    assert "- **Data (loans)**: `loans:ab12cd34ef56` (10000 rows, 1 file)" in lineage
    assert "- **Holdout**: 2000 rows" in lineage
    assert "- **Environment**: `eeeeeeeeeeeeeeee` (Python 3.11.2, 120 packages)" in lineage


def test_regression_without_baseline_plots_or_gates() -> None:
    md = ci_markdown(regression_report(), plots_dir="plots")
    assert md.splitlines()[0] == "## ⚪ house-price: no gates ran, registered as version 1"
    assert_tables_consistent(md)
    metrics = table_with(md, "metric")
    assert metrics == [
        ["metric", "candidate"],
        ["mae (lower is better)", "12500.5000"],
        ["rmse (lower is better)", "18000.2500"],
        ["r2", "0.8100"],
        ["mape (lower is better)", "—"],
        ["n", "500"],
    ]
    assert "### Plots" not in md and "Confusion" not in md and "per slice" not in md
    assert "No gates ran" in md
    assert "- **Commit**: unknown (not a git repository)" in md


def test_plots_are_linked_only_when_a_folder_is_given() -> None:
    report = registered_report()
    assert "![" not in ci_markdown(report)
    md = ci_markdown(report, plots_dir="ci report-plots")
    assert "![ROC curve](ci%20report-plots/roc.svg)" in md
    assert "![Calibration](ci%20report-plots/calibration.svg)" in md


def test_markdown_in_gate_names_cannot_break_the_table() -> None:
    report = registered_report()
    report["gates"][0]["name"] = "a | b\nc \\| d"
    report["gates"][0]["summary"] = "<img src=x onerror=alert(1)>"
    md = ci_markdown(report)
    assert_tables_consistent(md)
    gates = table_with(md, "verdict")
    assert gates[1][1] == "a \\| b<br>c \\\\\\| d"
    assert gates[1][3] == "&lt;img src=x onerror=alert(1)>"


def test_cell_and_number_formatting() -> None:
    assert md_cell("x|y\r\nz") == "x\\|y<br>z"
    assert md_cell("") == " "
    assert format_number(None) == "—"
    assert format_number(float("nan")) == "NaN"
    assert format_number(0.00001234) == "1.234e-05"
    assert format_number(True) == "yes"
    assert format_change("rmse", 9.0, 10.0) == "-1.0000 ↓ better"
    assert format_change("custom", 2.0, 1.0) == "+1.0000 ↑"
    assert format_change("recall", None, 0.5) == "—"


def test_the_report_dict_is_not_changed() -> None:
    report = rejected_report()
    before = copy.deepcopy(report)
    ci_markdown(report, plots_dir="p")
    assert report == before


def test_write_ci_report_writes_markdown_plots_and_junit(tmp_path: Path) -> None:
    report = registered_report()
    md_path = tmp_path / "out" / "report.md"
    junit = tmp_path / "out" / "gates.xml"
    written = write_ci_report(report, md_path, junit)
    plots = tmp_path / "out" / "report-plots"
    assert written == [md_path, plots / "roc.svg", plots / "calibration.svg", junit]
    text = md_path.read_text(encoding="utf-8")
    assert "![ROC curve](report-plots/roc.svg)" in text
    assert (plots / "roc.svg").read_text(encoding="utf-8") == report["plots"]["roc"]
    assert junit.read_text(encoding="utf-8").startswith("<?xml")
    # no temp files are left beside them
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # rewriting replaces the files in place
    report["gates"][0]["verdict"] = "fail"
    write_ci_report(report, md_path)
    assert md_path.read_text(encoding="utf-8").startswith("## ⚠️ loans-default: 1 gate failed")


def test_write_ci_report_keeps_plot_names_inside_their_folder(tmp_path: Path) -> None:
    report = regression_report()
    report["plots"] = {"../../escape": "<svg/>", "..": "<svg/>", "residuals": "<svg/>"}
    written = write_ci_report(report, tmp_path / "r.md")
    folder = tmp_path / "r-plots"
    assert all(p.parent == folder for p in written[1:])
    assert sorted(p.name for p in written[1:]) == ["escape.svg", "plot.svg", "residuals.svg"]
    assert "![Residuals](r-plots/residuals.svg)" in (tmp_path / "r.md").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_write_ci_report_unwritable_folder_is_an_export_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="Cannot write the report file .*report.md"):
            write_ci_report(regression_report(), folder / "report.md")
    finally:
        folder.chmod(0o700)


def test_write_ci_report_onto_a_folder_is_an_export_error(tmp_path: Path) -> None:
    (tmp_path / "report.md").mkdir()
    with pytest.raises(ExportError, match="report.md"):
        write_ci_report(regression_report(), tmp_path / "report.md")
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_long_evidence_tables_are_cut_to_keep_the_comment_short() -> None:
    report = rejected_report()
    failures = [
        {"column": f"c{i}", "check": "not_null", "failing_rows": i + 1, "examples": []}
        for i in range(40)
    ]
    report["gates"][4]["evidence"] = {"failures": failures}
    md = ci_markdown(report)
    assert_tables_consistent(md)
    table = table_with(md, "column")
    assert len(table) == 1 + 25
    assert table[-1][0] == "c24"
    assert "_… and 15 more rows not shown._" in md
