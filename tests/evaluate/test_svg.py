"""The one SVG canvas: valid XML, text and attributes escaped, numbers written one way."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from conveyor.evaluate import svg

NS = "{http://www.w3.org/2000/svg}"


def test_canvas_renders_a_document_with_its_root_attributes_and_one_element_per_line() -> None:
    canvas = svg.Canvas(320, 110, role="img", font_family="sans-serif")
    canvas.add("rect", class_="frame", x=0, y=1.25, width=np.int64(10), height=np.float32(2.0))
    canvas.add("line", x1=0, y1=92, x2=320, y2=92, stroke="#999", stroke_dasharray="4 4")
    text = canvas.render()
    assert text == (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="110" '
        'viewBox="0 0 320 110" role="img" font-family="sans-serif">\n'
        '<rect class="frame" x="0" y="1.2" width="10" height="2.0"/>\n'
        '<line x1="0" y1="92" x2="320" y2="92" stroke="#999" stroke-dasharray="4 4"/>\n'
        "</svg>\n"
    )
    root = ET.fromstring(text)
    assert [child.tag for child in root] == [f"{NS}rect", f"{NS}line"]


def test_canvas_escapes_text_and_attribute_values() -> None:
    canvas = svg.Canvas(10, 10)
    canvas.add("text", '<b>"bold"</b> & co', x=1, y=2, fill='"><script>')
    root = ET.fromstring(canvas.render())
    (node,) = root
    assert node.text == '<b>"bold"</b> & co'
    assert node.get("fill") == '"><script>'
    assert "<script>" not in canvas.render() and "<b>" not in canvas.render()


def test_points_are_pixel_pairs_with_one_decimal() -> None:
    assert svg.points([(0, 1), (2.25, 3.75), (np.float64(4.0), 5)]) == "0.0,1.0 2.2,3.8 4.0,5.0"
    canvas = svg.Canvas(10, 10)
    canvas.add("polyline", class_="curve", points=svg.points([(1, 2), (3, 4)]), fill="none")
    (line,) = ET.fromstring(canvas.render())
    assert line.get("points") == "1.0,2.0 3.0,4.0" and line.get("class") == "curve"


def test_an_empty_canvas_is_still_a_document() -> None:
    root = ET.fromstring(svg.Canvas(5, 6).render())
    assert root.get("viewBox") == "0 0 5 6" and list(root) == []
