"""ROC, calibration and residual plots as standalone SVG strings, drawn by hand.

matplotlib is a large dependency for three line charts; SVG is text, so a plot is an artifact like
any other (hashable, diffable, embeddable in a Markdown or HTML report). Output is deterministic:
the same inputs give byte-identical SVG. Each curve is cut to at most ``MAX_POINTS`` points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from conveyor.evaluate import svg
from conveyor.evaluate.metrics import check_binary, check_pair, reliability_bins
from conveyor.evaluate.values import format_number

MAX_POINTS = 200
WIDTH, HEIGHT = 480, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 40, 50  # margins around the plot area, in pixels


def _thin(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Evenly spaced indices keeping the first and last point."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(first, hi + step * 1e-9, step)]


class _Chart:
    """One plot area on the shared canvas: maps data coordinates to pixels, draws axes and marks."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        self.xlim, self.ylim = xlim, ylim
        self.canvas = svg.Canvas(WIDTH, HEIGHT, font_family="sans-serif")
        self.canvas.add("rect", width=WIDTH, height=HEIGHT, fill="white")

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return LEFT + (v - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT)

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return HEIGHT - BOTTOM - (v - lo) / (hi - lo) * (HEIGHT - TOP - BOTTOM)

    def axes(
        self, title: str, xlabel: str, ylabel: str, xticks: list[float], yticks: list[float]
    ) -> None:
        c = self.canvas
        x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
        c.add(
            "rect",
            class_="frame",
            x=x0,
            y=y1,
            width=x1 - x0,
            height=y0 - y1,
            fill="none",
            stroke="#333",
        )
        for v in xticks:
            px = float(self.x(v))
            c.add("line", class_="tick", x1=px, y1=y0, x2=px, y2=y0 + 5, stroke="#333")
            c.add(
                "text",
                f"{v:g}",
                class_="ticklabel",
                x=px,
                y=y0 + 18,
                text_anchor="middle",
                font_size=11,
            )
        for v in yticks:
            py = float(self.y(v))
            c.add("line", class_="tick", x1=x0 - 5, y1=py, x2=x0, y2=py, stroke="#333")
            c.add(
                "text",
                f"{v:g}",
                class_="ticklabel",
                x=x0 - 8,
                y=py + 4,
                text_anchor="end",
                font_size=11,
            )
        c.add(
            "text",
            title,
            class_="title",
            x=WIDTH // 2,
            y=24,
            text_anchor="middle",
            font_size=15,
            font_weight="bold",
        )
        c.add(
            "text",
            xlabel,
            class_="xlabel",
            x=(x0 + x1) // 2,
            y=HEIGHT - 12,
            text_anchor="middle",
            font_size=12,
        )
        cy = (y0 + y1) // 2
        c.add(
            "text",
            ylabel,
            class_="ylabel",
            x=16,
            y=cy,
            text_anchor="middle",
            font_size=12,
            transform=f"rotate(-90 16 {cy})",
        )

    def reference(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.canvas.add(
            "line",
            class_="reference",
            x1=float(self.x(x0)),
            y1=float(self.y(y0)),
            x2=float(self.x(x1)),
            y2=float(self.y(y1)),
            stroke="#999",
            stroke_dasharray="4 4",
        )

    def polyline(self, xs: np.ndarray, ys: np.ndarray, color: str = "#1f77b4") -> None:
        pts = svg.points((self.x(a), self.y(b)) for a, b in zip(xs, ys, strict=True))
        self.canvas.add(
            "polyline", class_="curve", points=pts, fill="none", stroke=color, stroke_width=2
        )

    def points(self, xs: np.ndarray, ys: np.ndarray, color: str = "#1f77b4") -> None:
        for a, b in zip(xs, ys, strict=True):
            self.canvas.add(
                "circle",
                class_="point",
                cx=float(self.x(a)),
                cy=float(self.y(b)),
                r=2.5,
                fill=color,
                fill_opacity=0.6,
            )

    def note(self, text: str) -> None:
        self.canvas.add(
            "text",
            text,
            class_="note",
            x=WIDTH - RIGHT - 8,
            y=HEIGHT - BOTTOM - 10,
            text_anchor="end",
            font_size=12,
        )

    def render(self) -> str:
        return self.canvas.render()


_UNIT = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def roc_svg(y_true: Any, y_score: Any, *, title: str = "ROC curve") -> str:
    """ROC curve with the chance diagonal and the AUC in a corner.

    Raises:
        ValueError: bad inputs (see ``check_binary``) or a single class in ``y_true``.
    """
    t, s = check_binary(y_true, y_score)
    if t.min() == t.max():
        raise ValueError(
            f"y_true holds a single class ({int(t[0])}); a ROC curve needs both classes."
        )
    fpr, tpr, _ = roc_curve(t, s)
    keep = _thin(len(fpr))
    c = _Chart((0.0, 1.0), (0.0, 1.0))
    c.axes(title, "False positive rate", "True positive rate", _UNIT, _UNIT)
    c.reference(0, 0, 1, 1)
    c.polyline(fpr[keep], tpr[keep])
    c.note(f"AUC = {format_number(float(roc_auc_score(t, s)))}")  # as the metrics table reads it
    return c.render()


def calibration_svg(
    y_true: Any, y_score: Any, *, title: str = "Calibration", n_bins: int = 10
) -> str:
    """Reliability curve: observed frequency of class 1 against mean score, per equal-width bin.

    Raises:
        ValueError: bad inputs (see ``check_binary``).
    """
    b = reliability_bins(y_true, y_score, n_bins)
    c = _Chart((0.0, 1.0), (0.0, 1.0))
    c.axes(title, "Mean predicted probability", "Observed frequency", _UNIT, _UNIT)
    c.reference(0, 0, 1, 1)
    c.polyline(b["mean_score"], b["frac_positive"])
    c.points(b["mean_score"], b["frac_positive"])
    c.note(f"{len(b['count'])} bins, n = {int(np.sum(b['count']))}")
    return c.render()


def residuals_svg(y_true: Any, y_pred: Any, *, title: str = "Residuals") -> str:
    """Residual (observed − predicted) against prediction, with the zero line.

    At most ``MAX_POINTS`` rows are drawn, evenly spaced in order of prediction, so the picture
    keeps its shape on any number of rows.

    Raises:
        ValueError: bad inputs (see ``check_pair``).
    """
    t, p = check_pair(y_true, y_pred, "y_pred")
    order = np.argsort(p, kind="stable")
    keep = order[_thin(len(p))]
    xs, rs = p[keep], (t - p)[keep]
    x_lo, x_hi = float(p.min()), float(p.max())
    r_all = t - p
    bound = float(np.max(np.abs(r_all))) or 1.0
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    xticks = _nice_ticks(x_lo, x_hi)
    yticks = _nice_ticks(-bound, bound)
    c = _Chart((min(x_lo, xticks[0]), max(x_hi, xticks[-1])), (-bound * 1.05, bound * 1.05))
    c.axes(title, "Predicted", "Observed − predicted", xticks, yticks)
    c.reference(c.xlim[0], 0.0, c.xlim[1], 0.0)
    c.points(xs, rs)
    c.note(f"n = {len(p)}, shown {len(keep)}")
    return c.render()
