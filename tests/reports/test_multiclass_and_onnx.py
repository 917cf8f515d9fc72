"""What issue 13 left in the reports: a K×K confusion table for a multi-class model, and the
reason a version has no ONNX copy, on the CI comment and the model card alike."""

from __future__ import annotations

from typing import Any

from conveyor.registry.story import assemble
from conveyor.reports.card import card_html, card_markdown
from conveyor.reports.markdown import ci_markdown
from tests.reports.test_card import Page
from tests.reports.test_markdown import assert_tables_consistent, registered_report, table_with

SPECIES = ["setosa", "versicolor", "virginica"]
MATRIX = [[50, 0, 0], [0, 47, 3], [0, 2, 48]]


def multiclass_report() -> dict[str, Any]:
    """A three-class version as the multi-class evaluation records its confusion matrix."""
    report = registered_report()
    report["confusion_matrix"] = {"labels": SPECIES, "matrix": MATRIX}
    report["signature"]["output"]["classes"] = SPECIES
    return report


EXPECTED = [
    ["", "predicted setosa", "predicted versicolor", "predicted virginica"],
    ["actual setosa", "50", "0", "0"],
    ["actual versicolor", "0", "47", "3"],
    ["actual virginica", "0", "2", "48"],
]


def test_the_ci_comment_has_the_whole_k_by_k_confusion_table() -> None:
    markdown = ci_markdown(multiclass_report())
    assert_tables_consistent(markdown)
    assert table_with(markdown, "") == EXPECTED


def test_the_model_card_has_the_same_table_in_markdown_and_html() -> None:
    report = multiclass_report()
    markdown = card_markdown(report)
    assert table_with(markdown, "") == EXPECTED
    text = Page(card_html(report)).all_text()
    for row in EXPECTED[1:]:
        assert row[0] in text
    assert "predicted virginica" in text


def test_a_confusion_matrix_without_labels_is_numbered_and_a_broken_one_left_out() -> None:
    report = multiclass_report()
    report["confusion_matrix"] = {"matrix": [[3, 1], [0, 4]]}
    assert table_with(ci_markdown(report), "")[1] == ["actual 0", "3", "1"]
    report["confusion_matrix"] = {"labels": SPECIES, "matrix": [[1, 2], [3, 4]]}
    assert "Confusion matrix" not in ci_markdown(report)


def test_the_card_says_why_there_is_no_onnx_copy() -> None:
    story = assemble(
        project="p",
        model="m",
        status="registered",
        gates=[],
        task="classification",
        target="y",
        version=1,
        onnx={"supported": False, "digest": None, "reason": "onnxmltools cannot convert it"},
    )
    details = {row[0]: row[1] for row in table_with(card_markdown(story), "field")[1:]}
    assert details["ONNX"] == "not exported: onnxmltools cannot convert it"
    assert "not exported: onnxmltools cannot convert it" in Page(card_html(story)).all_text()
