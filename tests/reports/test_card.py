"""Model cards in Markdown and HTML: what they say, that tables hold, and that HTML is inert."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from typing import Any

import pytest

from conveyor.reports.card import card_html, card_markdown
from tests.reports.test_markdown import (
    assert_tables_consistent,
    registered_report,
    regression_report,
    rejected_report,
    table_with,
)

INJECTION = "<script>alert(1)</script>"
_VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Parses a page strictly enough for a test: tags must nest, text and attributes are kept."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()
        assert self.stack == [], f"unclosed: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all_text(self) -> str:
        return "".join(self.text)

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def _replaces() -> dict[str, Any]:
    report = registered_report()
    compare = report["gates"][1]["evidence"]
    return {
        "alias": "production",
        "version": 2,
        "metrics": report["baseline"]["metrics"],
        "comparisons": [compare],
    }


def test_markdown_card_of_a_registered_version() -> None:
    md = card_markdown(registered_report(), replaces=_replaces())
    assert md.startswith("# Model card: loans-default v3\n\n✅ all 4 gates passed")
    assert_tables_consistent(md)
    details = {row[0]: row[1] for row in table_with(md, "field")[1:]}
    assert details["Aliases"] == "production"
    assert details["SHA-256"] == "d" * 64
    assert details["Format"] == "skops, 1.2 MiB (1250000 bytes)"
    assert details["ONNX"].startswith("390.6 KiB (400000 bytes), sha256 " + "f" * 64)
    assert "Rank loan applications by default risk for manual review." in md
    assert "Not for automated denial." in md
    signature = table_with(md, "input")
    assert signature[2] == ["homeownership", "category", "no", "MORTGAGE, OWN, RENT"]
    assert table_with(md, "source")[1][:2] == ["loans", "loans:ab12cd34ef56"]
    assert "Evaluated on a holdout of 2000 rows." in md


def test_markdown_card_fairness_shows_gap_and_groups() -> None:
    md = card_markdown(registered_report())
    fairness = md[md.index("## Fairness") : md.index("## Gates")]
    assert "### ✅ fairness: homeownership recall max_gap 0.10" in fairness
    scalars = {r[0]: r[1] for r in table_with(fairness, "evidence")[1:]}
    assert scalars == {
        "metric": "recall",
        "group": "homeownership",
        "max_gap": "0.1000",
        "gap": "0.0900",
    }
    groups = table_with(fairness, "per_group")
    assert groups[1:] == [["MORTGAGE", "0.5000"], ["RENT", "0.4500"], ["OWN", "0.4100"]]


def test_markdown_card_compares_with_the_version_it_replaces() -> None:
    md = card_markdown(registered_report(), replaces=_replaces())
    section = md[md.index("## Compared with") : md.index("## Lineage")]
    assert "Replaces **production (v2)**" in section
    table = table_with(section, "metric")
    assert table[0] == [
        "metric",
        "this version",
        "production (v2)",
        "change",
        "interval",
        "p-value",
        "test",
    ]
    rows = {r[0]: r for r in table[1:]}
    assert rows["roc_auc"][1:] == [
        "0.7910",
        "0.7790",
        "+0.0120 ↑ better",
        "95% CI +0.0040 to +0.0200",
        "0.0031",
        "delong, n = 2000",
    ]
    # metrics without a paired test still show their change, with dashes for the test
    assert rows["brier (lower is better)"][3:] == ["-0.0031 ↓ better", "—", "—", "—"]
    assert "roc_auc: candidate 0.7910 vs production (v2) 0.7790" in section


def test_markdown_card_falls_back_to_the_baseline_without_tests() -> None:
    md = card_markdown(registered_report())
    table = table_with(md[md.index("## Compared with") :], "metric")
    assert table[0] == ["metric", "this version", "production (v2)", "change"]


def test_markdown_card_of_a_rejected_candidate() -> None:
    md = card_markdown(rejected_report())
    assert md.startswith("# Model card: loans-default (candidate, not registered)\n\n❌ 2 gates")
    assert_tables_consistent(md)
    assert "_Not stated in conveyor.yaml (model.intended_use)._" in md
    assert "_Not stated in conveyor.yaml (model.limitations)._" in md
    details = {row[0]: row[1] for row in table_with(md, "field")[1:]}
    assert (details["Version"], details["Aliases"], details["ONNX"]) == (
        "not registered",
        "none",
        "not exported",
    )
    gates = table_with(md, "verdict")
    assert ["❌ fail", "holdout matches schema"] == gates[5][:2]
    metrics = {r[0]: r[1] for r in table_with(md, "metric")[1:]}
    assert metrics["ece (lower is better)"] == "—"


def test_markdown_card_of_a_regression_model_without_baseline_or_plots() -> None:
    md = card_markdown(regression_report())
    assert_tables_consistent(md)
    assert "Nothing to compare with" in md
    assert "No slices were evaluated." in md
    assert "No fairness gate ran" in md
    assert "## Plots" not in md and "Confusion" not in md
    metrics = table_with(md, "metric")
    assert metrics[1] == ["mae (lower is better)", "12500.5000"]
    assert ["mape (lower is better)", "—"] in metrics


def test_markdown_card_escapes_html_in_free_text() -> None:
    report = rejected_report()
    report["intended_use"] = f"Triage {INJECTION}"
    report["gates"][0]["name"] = INJECTION
    md = card_markdown(report)
    assert "<script>" not in md
    assert "Triage &lt;script>alert(1)&lt;/script>" in md


def test_html_card_parses_and_holds_the_content() -> None:
    page = Page(card_html(registered_report(), replaces=_replaces()))
    text = page.all_text()
    for expected in (
        "Model card: loans-default v3",
        "Rank loan applications by default risk for manual review.",
        "d" * 64,
        "roc_auc >= production.roc_auc - 0.005",
        "95% CI +0.0040 to +0.0200",
        "4f5e6d7c8b9a",
        "MORTGAGE, OWN, RENT",
    ):
        assert expected in text, expected
    assert [a.get("class") for a in page.find("td") if a.get("class")] == ["v-pass"] * 4


def test_html_card_is_self_contained_with_plots_as_data_images() -> None:
    report = registered_report()
    page = Page(card_html(report))
    assert page.find("script") == [] and page.find("link") == []
    assert len(page.find("style")) == 1
    images = page.find("img")
    assert [i["alt"] for i in images] == ["ROC curve", "Calibration"]
    for image, name in zip(images, ("roc", "calibration"), strict=True):
        src = image["src"] or ""
        prefix = "data:image/svg+xml;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]).decode("utf-8") == report["plots"][name]
    for _, attrs in page.tags:
        for key in ("src", "href"):
            assert not (attrs.get(key) or "").startswith(("http:", "https:", "//")), attrs


def test_html_card_escapes_injection_everywhere() -> None:
    report = rejected_report()
    report["intended_use"] = f"Triage {INJECTION}"
    report["limitations"] = '"><img src=x onerror=alert(1)>'
    report["gates"][0]["name"] = INJECTION
    report["slices"]["homeownership"][INJECTION] = {"n": 1, "recall": 1.0}
    report["plots"] = {"roc": f"<svg xmlns='http://www.w3.org/2000/svg'>{INJECTION}</svg>"}
    html = card_html(report)
    page = Page(html)
    assert page.find("script") == []
    assert [i["src"] for i in page.find("img")][0].startswith("data:image/svg+xml;base64,")
    assert all(not k.startswith("on") for _, attrs in page.tags for k in attrs)
    text = page.all_text()
    assert f"Triage {INJECTION}" in text  # shown as text, escaped in the source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '"><img src=x onerror=alert(1)>' in text


@pytest.mark.parametrize("make", [registered_report, rejected_report, regression_report])
def test_html_card_parses_for_every_kind_of_report(make: Any) -> None:
    report = make()
    page = Page(card_html(report))
    assert page.find("title")
    text = page.all_text()
    assert "Intended use" in text and "Lineage" in text
    if report["intended_use"] is None:
        assert "Not stated in conveyor.yaml (model.intended_use)." in text
