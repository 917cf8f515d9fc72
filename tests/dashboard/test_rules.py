"""The rules dashboard/README.md states, checked on the source."""

from __future__ import annotations

import re
from pathlib import Path

import conveyor.dashboard

HERE = Path(conveyor.dashboard.__file__).parent


def test_every_template_is_a_page_on_the_shared_frame_or_a_macro_file() -> None:
    for path in sorted((HERE / "templates").glob("*.j2")):
        text = path.read_text()
        if path.name == "dashboard.html.j2":
            assert '{% extends "page.html.j2" %}' in text
        elif path.name.startswith("_"):
            assert "{% macro" in text and "{% extends" not in text, path.name
        else:
            assert '{% extends "dashboard.html.j2" %}' in text, path.name


def test_no_markup_in_python_and_no_scripts_or_remote_assets_anywhere() -> None:
    for path in sorted(HERE.glob("*.py")):
        text = path.read_text()
        # the one exception: the favicon, an SVG of one rectangle
        tags = set(re.findall(r"<(html|body|div|table|tr|td|p|a|form|script)[ >]", text))
        assert not tags, (path.name, tags)
    for path in sorted(HERE.rglob("*")):
        if path.suffix in (".j2", ".css", ".py"):
            text = path.read_text()
            assert "<script" not in text, path
            assert not re.search(r"(src|href)=\"(https?:)?//", text), path
            assert "@import" not in text and "url(http" not in text, path


def test_only_acts_writes_and_only_queries_speaks_sql() -> None:
    writers = re.compile(r"\.(promote|pause|resume|abort|rollback|start|step|set_alias)\(")
    for path in sorted(HERE.glob("*.py")):
        text = path.read_text()
        if path.name != "acts.py":
            assert not writers.search(text), path.name
        if path.name != "queries.py":
            assert "sqlalchemy" not in text, path.name
        assert not re.search(r"\btext\(", text), path.name  # no SQL text
