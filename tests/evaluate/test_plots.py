from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conveyor.evaluate.plots import MAX_POINTS, calibration_svg, residuals_svg, roc_svg

NS = {"svg": "http://www.w3.org/2000/svg"}


def _data(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    return (rng.random(n) < s).astype(int), s


def _by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['svg']}}}{tag}") if e.get("class") == cls]


def _points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points", "").split()]


def test_roc_svg_has_axes_title_reference_and_a_thinned_curve() -> None:
    y, s = _data()
    svg = roc_svg(y, s, title="Model <v2> & friends")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert _by_class(root, "text", "title")[0].text == "Model <v2> & friends"
    assert _by_class(root, "text", "xlabel")[0].text == "False positive rate"
    assert len(_by_class(root, "text", "ticklabel")) == 12
    assert len(_by_class(root, "line", "reference")) == 1
    (curve,) = _by_class(root, "polyline", "curve")
    pts = _points(curve)
    assert 2 < len(pts) <= MAX_POINTS
    xs = [p[0] for p in pts]
    assert xs == sorted(xs)  # fpr only grows
    assert _by_class(root, "text", "note")[0].text.startswith("AUC = 0.8")


def test_plots_are_deterministic() -> None:
    y, s = _data()
    assert roc_svg(y, s, title="t") == roc_svg(y, s, title="t")
    assert calibration_svg(y, s) == calibration_svg(y, s)
    assert residuals_svg(s, s + 0.1) == residuals_svg(s, s + 0.1)


def test_calibration_svg_plots_one_point_per_nonempty_bin() -> None:
    y, s = _data()
    root = ET.fromstring(calibration_svg(y, s, title="Calibration of v2"))
    assert len(_by_class(root, "circle", "point")) == 10
    assert len(_by_class(root, "line", "reference")) == 1
    assert _by_class(root, "text", "title")[0].text == "Calibration of v2"
    # Scores only in [0, 0.3): three bins.
    root = ET.fromstring(calibration_svg([0, 1, 0, 1], [0.05, 0.15, 0.25, 0.29]))
    assert len(_by_class(root, "circle", "point")) == 3


def test_residuals_svg_caps_points_and_draws_zero_line() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(100, 20, 10_000)
    p = y + rng.normal(0, 5, 10_000)
    root = ET.fromstring(residuals_svg(y, p, title="Residuals of v2"))
    assert len(_by_class(root, "circle", "point")) == MAX_POINTS
    (zero,) = _by_class(root, "line", "reference")
    assert zero.get("y1") == zero.get("y2")
    assert _by_class(root, "text", "ylabel")[0].text == "Observed − predicted"
    assert "n = 10000, shown 200" in _by_class(root, "text", "note")[0].text
    small = ET.fromstring(residuals_svg([1.0, 2.0, 3.0], [1.0, 2.5, 2.0]))
    assert len(_by_class(small, "circle", "point")) == 3


def test_plot_input_errors() -> None:
    with pytest.raises(ValueError, match="single class"):
        roc_svg([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="y_true has 2 rows but y_pred has 1"):
        residuals_svg([1.0, 2.0], [1.0])
