"""The one SVG canvas: elements in pixel coordinates, every text and attribute escaped.

The evaluation plots (``plots.py``) and the monitoring page's histograms (``monitor/html.py``)
both draw on it, so there is one place that decides how an SVG is written: numbers with one
decimal, attributes in the order given, text escaped, one element per line. SVG is text, so a
plot is an artifact like any other (hashable, diffable, embeddable in Markdown or HTML), and the
same calls always give byte-identical output. No IO, no dependencies.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from xml.sax.saxutils import escape

__all__ = ["Canvas", "points"]

Attr = str | int | float

_ATTR_ESCAPES = {'"': "&quot;"}


def _attr(value: Attr) -> str:
    """Integers as they are, other numbers with one decimal (fine for pixels), text escaped."""
    if isinstance(value, str):
        return escape(value, _ATTR_ESCAPES)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.1f}"


def _name(key: str) -> str:
    """A keyword as an SVG attribute: ``class_`` -> ``class``, ``font_size`` -> ``font-size``."""
    return key.rstrip("_").replace("_", "-")


def points(pairs: Iterable[tuple[float, float]]) -> str:
    """A ``points`` attribute of a ``<polyline>``: ``x,y`` pixel pairs with one decimal."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pairs)


class Canvas:
    """An SVG image of ``width`` x ``height`` pixels that collects elements and renders them.

    Args:
        width: the image's width in pixels (also its viewBox).
        height: the image's height in pixels.
        **attrs: more attributes of the root ``<svg>`` element, e.g. ``font_family="sans-serif"``
            or ``role="img"``.
    """

    def __init__(self, width: int, height: int, **attrs: Attr) -> None:
        self.width, self.height = width, height
        self.attrs = attrs
        self.parts: list[str] = []

    def add(self, tag: str, content: str | None = None, /, **attrs: Attr) -> None:
        """Appends one element; ``content`` is its text (escaped), None makes it self-closing."""
        head = tag + "".join(f' {_name(k)}="{_attr(v)}"' for k, v in attrs.items())
        if content is None:
            self.parts.append(f"<{head}/>")
        else:
            self.parts.append(f"<{head}>{escape(content)}</{tag}>")

    def render(self) -> str:
        """The SVG document: the root element, then one element per line."""
        root = {
            "xmlns": "http://www.w3.org/2000/svg",
            "width": self.width,
            "height": self.height,
            "viewBox": f"0 0 {self.width} {self.height}",
            **self.attrs,
        }
        head = "svg" + "".join(f' {_name(k)}="{_attr(v)}"' for k, v in root.items())
        return f"<{head}>\n" + "".join(f"{part}\n" for part in self.parts) + "</svg>\n"
