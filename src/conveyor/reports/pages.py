"""HTML pages from the template files in ``templates/``: one environment, one stylesheet.

Every page Conveyor writes for people (the model card, the monitoring page) extends
``page.html.j2``, which inlines ``page.css``, so the pages look alike and a style is changed in
one place. No HTML is built in Python strings; the only markup a view may pass in is an SVG drawn
by ``conveyor.evaluate.svg``, which escapes its own text. Everything else is autoescaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from conveyor.evaluate.values import format_number, format_percent

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def html_env() -> Any:
    """The Jinja2 environment for HTML: autoescaped, strict about missing values.

    Templates format numbers with the ``num`` and ``pct`` filters, which are the formatters the
    Markdown report and the terminal use, so a value reads the same on every surface.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(num=format_number, pct=format_percent)
    return env


def render_page(template: str, view: Mapping[str, Any]) -> str:
    """Renders the HTML template ``template`` (a file in ``templates/``) with ``view``."""
    html: str = html_env().get_template(template).render(**view)
    return html
