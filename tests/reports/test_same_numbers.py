"""One metric value reads the same in the CI comment, the Markdown card and the HTML card.

Each surface formats through ``conveyor.evaluate.values.format_number``, the formatter the
terminal and the monitoring page use as well; these tests read the rendered tables back and
compare cell by cell, so a surface that grows its own formatting shows up here.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conveyor.evaluate.plots import roc_svg
from conveyor.evaluate.values import format_number
from conveyor.reports.card import card_html, card_markdown
from conveyor.reports.format import metric_label
from conveyor.reports.markdown import ci_markdown
from tests.reports.test_markdown import registered_report, tables

# Values that each formatter copy used to write differently: 4 decimals vs 4 significant
# digits, scientific notation, a missing value, NaN, an integer count.
AWKWARD = {
    "roc_auc": 0.81234567,
    "accuracy": 0.8,
    "recall": 0.00012345,
    "log_loss": 12345.678,
    "brier": None,
    "pr_auc": math.nan,
    "n": 2000,
}


class HtmlTables(HTMLParser):
    """The text of every table cell in a page, as tables of rows."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _metric_cells(found: list[list[list[str]]], value_header: str) -> dict[str, str]:
    """The metrics table's value column by row label: the table headed ``metric | value_header``."""
    for table in found:
        if table and table[0][:2] == ["metric", value_header]:
            return {row[0]: row[1] for row in table[1:]}
    raise AssertionError(f"no table headed 'metric | {value_header}' in {found}")


def _report() -> dict[str, Any]:
    report = registered_report()
    report["metrics"] = dict(AWKWARD)
    return report


@pytest.mark.parametrize("metric", list(AWKWARD))
def test_a_metric_reads_the_same_in_the_comment_and_both_cards(metric: str) -> None:
    report = _report()
    expected = format_number(AWKWARD[metric])
    label = metric_label(metric)
    ci = _metric_cells(tables(ci_markdown(report)), "candidate")
    card_md = _metric_cells(tables(card_markdown(report)), "value")
    card_page = _metric_cells(HtmlTables(card_html(report)).tables, "value")
    assert ci[label] == card_md[label] == card_page[label] == expected


def test_the_awkward_values_read_as_the_shared_formatter_writes_them() -> None:
    # Pinned, so a change of format is a decision made once for every surface.
    shown = {m: format_number(v) for m, v in AWKWARD.items()}
    assert shown == {
        "roc_auc": "0.8123",
        "accuracy": "0.8000",
        "recall": "1.234e-04",
        "log_loss": "12345.6780",
        "brier": "—",
        "pr_auc": "NaN",
        "n": "2000",
    }


def test_the_roc_plot_states_the_auc_as_the_metrics_table_does() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    note = re.search(r'class="note"[^>]*>AUC = ([^<]+)<', roc_svg(y, score))
    assert note is not None
    assert note.group(1) == format_number(float(roc_auc_score(y, score)))
