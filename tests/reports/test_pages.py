"""Every HTML page comes from a template on one frame: one stylesheet, autoescaped, inert."""

from __future__ import annotations

import jinja2
import pytest

from conveyor.reports.card import card_html
from conveyor.reports.pages import TEMPLATES, render_page
from tests.reports.test_card import INJECTION, Page
from tests.reports.test_markdown import registered_report


def _stylesheet(html: str) -> str:
    return html.split("<style>\n", 1)[1].split("</style>", 1)[0]


def _docs_view(name: str = "loans") -> dict[str, object]:
    return {
        "operations": [
            {
                "method": "post",
                "path": f"/v1/models/{name}/predict",
                "summary": "Predict",
                "token": "",
            },
            {"method": "get", "path": "/metrics", "summary": "Prometheus", "token": "admin token"},
        ],
        "models": [{"name": name, "fields": [{"name": "amount", "type": "number"}]}],
    }


def test_every_page_template_extends_the_one_frame() -> None:
    pages = sorted(p.name for p in TEMPLATES.glob("*.html.j2") if p.name != "page.html.j2")
    assert pages == ["card.html.j2", "gateway_docs.html.j2", "monitor.html.j2"]
    for name in pages:
        assert '{% extends "page.html.j2" %}' in (TEMPLATES / name).read_text(), name
    assert [p.name for p in TEMPLATES.glob("*.css")] == ["page.css"]


def test_pages_share_the_stylesheet_byte_for_byte() -> None:
    css = (TEMPLATES / "page.css").read_text()
    card = card_html(registered_report())
    docs = render_page("gateway_docs.html.j2", _docs_view())
    assert _stylesheet(card) == _stylesheet(docs) == css
    assert card.count("<style>") == docs.count("<style>") == 1


def test_the_gateway_docs_page_lists_operations_and_fields_escaped() -> None:
    html = render_page("gateway_docs.html.j2", _docs_view(INJECTION))
    page = Page(html)
    assert page.find("script") == []
    text = page.all_text()
    assert "POST" in text and "/metrics" in text and "admin token" in text
    assert f"/v1/models/{INJECTION}/predict" in text and "amount: number" in text
    assert html.startswith("<!DOCTYPE html>")
    empty = Page(render_page("gateway_docs.html.j2", {"operations": [], "models": []}))
    assert "No model is served yet." in empty.all_text()


def test_a_missing_view_value_is_an_error_not_a_blank() -> None:
    with pytest.raises(jinja2.UndefinedError, match="operations"):
        render_page("gateway_docs.html.j2", {"models": []})


def test_no_page_markup_is_built_in_python_strings() -> None:
    src = TEMPLATES.parents[1]
    modules = [*(src / "reports").glob("*.py"), src / "monitor" / "html.py"]
    for path in modules:
        text = path.read_text()
        for tag in ("<html", "<style", "<table", "<span", "<p>", "<td"):
            assert tag not in text, f"{path.name} builds {tag}…> in Python; put it in templates/"
