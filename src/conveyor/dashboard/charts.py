"""The dashboard's pictures, drawn server-side on the project's one SVG canvas.

A run's DAG, a metric over its series index, a release's traffic weight over time, an
environment's release timeline, a feature's reference and live distributions, and a monitoring
series over time. Each returns ``Markup`` (the canvas escapes its own text) or
None when there is nothing to draw, so a template says "no values" instead of an empty frame.
No JavaScript and nothing from a CDN: the page is whole as served.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup

from conveyor.evaluate.svg import Canvas

__all__ = [
    "STATUS_COLOURS",
    "dag",
    "distribution",
    "line_chart",
    "release_timeline",
    "time_chart",
    "weight_chart",
]

STATUS_COLOURS = {
    "ran": "#1a7f37",
    "cached": "#0969da",
    "failed": "#cf222e",
    "blocked": "#9a6700",
    "pending": "#8c959f",
    "running": "#bf8700",
    "data": "#6e7781",
}
STATE_COLOURS = {
    "promoted": "#1a7f37",
    "completed": "#0969da",
    "running": "#bf8700",
    "paused": "#8250df",
    "rolled_back": "#cf222e",
    "aborted": "#cf222e",
}
_FONT: dict[str, str | int | float] = {"font_family": "system-ui, sans-serif", "font_size": 11}


def _tick(value: float) -> str:
    """An axis label: few digits, no trailing zeros (100, 0.125, 1.2e+04)."""
    return f"{value:.4g}"


def _axes(
    c: Canvas,
    box: tuple[float, float, float, float],
    y_range: tuple[float, float],
    x_labels: tuple[str, str],
    title: str,
) -> None:
    left, top, right, bottom = box
    c.add("text", title, x=left, y=14, font_weight="bold")
    c.add("line", x1=left, y1=bottom, x2=right, y2=bottom, stroke="#8c959f")
    c.add("line", x1=left, y1=top, x2=left, y2=bottom, stroke="#8c959f")
    lo, hi = y_range
    c.add("text", _tick(hi), x=left - 4, y=top + 4, text_anchor="end")
    c.add("text", _tick(lo), x=left - 4, y=bottom, text_anchor="end")
    c.add("text", x_labels[0], x=left, y=bottom + 14)
    c.add("text", x_labels[1], x=right, y=bottom + 14, text_anchor="end")


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def line_chart(
    title: str, points: Sequence[tuple[float, float]], *, x_name: str = "index"
) -> Markup | None:
    """A metric over its series index: a line through every point, dots when few."""
    if not points:
        return None
    width, height = 320, 160
    box = (48.0, 24.0, width - 12.0, height - 24.0)
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    y_lo, y_hi = min(ys), max(ys)
    if y_lo == y_hi:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    fx = _scale(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, box[0], box[2])
    fy = _scale(y_lo, y_hi, box[3], box[1])
    c = Canvas(width, height, role="img", class_="chart", **_FONT)
    _axes(
        c,
        box,
        (y_lo, y_hi),
        (f"{x_name} {_tick(min(xs))}", _tick(max(xs))),
        title,
    )
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{fx(x):.1f},{fy(y):.1f}" for i, (x, y) in enumerate(points)
    )
    if len(points) == 1:  # one value: a short level line, so the path has a length
        x, y = points[0]
        path = f"M{box[0]:.1f},{fy(y):.1f} L{box[2]:.1f},{fy(y):.1f}"
    c.add("path", d=path, fill="none", stroke="#0969da", stroke_width=2)
    if len(points) <= 30:
        for x, y in points:
            c.add("circle", cx=fx(x), cy=fy(y), r=2.5, fill="#0969da")
    return Markup(c.render())


def weight_chart(changes: Sequence[tuple[datetime, float]], end: datetime) -> Markup | None:
    """A release's candidate share over time: a step line from each change to the next."""
    if not changes:
        return None
    width, height = 560, 180
    box = (48.0, 24.0, width - 12.0, height - 24.0)
    t0 = changes[0][0].timestamp()
    t1 = max(end.timestamp(), changes[-1][0].timestamp(), t0 + 1)
    fx = _scale(t0, t1, box[0], box[2])
    fy = _scale(0.0, 100.0, box[3], box[1])
    c = Canvas(width, height, role="img", class_="chart", **_FONT)
    _axes(
        c,
        box,
        (0.0, 100.0),
        (changes[0][0].strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%H:%M:%S")),
        "candidate's share of requests (%)",
    )
    parts = []
    for i, (at, weight) in enumerate(changes):
        x, y = fx(at.timestamp()), fy(weight)
        parts.append(f"M{x:.1f},{y:.1f}" if i == 0 else f"V{y:.1f}")
        nxt = changes[i + 1][0].timestamp() if i + 1 < len(changes) else t1
        parts.append(f"H{fx(nxt):.1f}")
    c.add("path", d=" ".join(parts), fill="none", stroke="#bf8700", stroke_width=2)
    for at, weight in changes:
        c.add("circle", cx=fx(at.timestamp()), cy=fy(weight), r=3, fill="#bf8700")
    return Markup(c.render())


def dag(steps: Sequence[dict[str, Any]]) -> Markup | None:
    """A run's steps left to right by depth, data sources first, coloured by status.

    Each step's ``inputs`` (``data.rows``, ``prepare.train``, ``train``) are its edges, so the
    picture is the graph the run executed.
    """
    if not steps:
        return None
    names = {s["step"] for s in steps}
    parents: dict[str, list[str]] = {}
    status: dict[str, str] = {}
    for s in steps:
        ups = []
        for ref in s["inputs"]:
            head = ref.partition(".")[0]
            if ref.startswith("data."):
                node = ref
                status.setdefault(node, "data")
                parents.setdefault(node, [])
            elif head in names:
                node = head
            else:
                continue
            if node not in ups:
                ups.append(node)
        parents[s["step"]] = ups
        status[s["step"]] = s["status"]
    depth: dict[str, int] = {}

    def level(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            ups = [p for p in parents.get(node, []) if p not in seen]
            depth[node] = 1 + max((level(p, seen | {node}) for p in ups), default=-1)
        return depth[node]

    for node in parents:
        level(node)
    columns: dict[int, list[str]] = {}
    for node in parents:  # insertion order: data sources as met, then steps as run
        columns.setdefault(depth[node], []).append(node)
    node_w, node_h, gap_x, gap_y = 130, 34, 50, 18
    rows = max(len(col) for col in columns.values())
    width = 20 + len(columns) * (node_w + gap_x) - gap_x + 20
    height = 20 + rows * (node_h + gap_y) - gap_y + 20
    where: dict[str, tuple[float, float]] = {}
    for d, col in sorted(columns.items()):
        for i, node in enumerate(col):
            where[node] = (20 + d * (node_w + gap_x), 20 + i * (node_h + gap_y))
    c = Canvas(width, height, role="img", class_="chart dag", **_FONT)
    for node, ups in parents.items():
        x2, y2 = where[node]
        for up in ups:
            x1, y1 = where[up]
            sx, sy, ex, ey = x1 + node_w, y1 + node_h / 2, x2, y2 + node_h / 2
            mid = (sx + ex) / 2
            c.add(
                "path",
                d=f"M{sx:.1f},{sy:.1f} C{mid:.1f},{sy:.1f} {mid:.1f},{ey:.1f} {ex:.1f},{ey:.1f}",
                fill="none",
                stroke="#8c959f",
                stroke_width=1.5,
                class_="edge",
            )
    for node, (x, y) in where.items():
        colour = STATUS_COLOURS.get(status[node], "#8c959f")
        c.add(
            "rect",
            x=x,
            y=y,
            width=node_w,
            height=node_h,
            rx=12 if status[node] == "data" else 4,
            fill="#ffffff",
            stroke=colour,
            stroke_width=2,
            class_=f"node {status[node]}",
        )
        label = node if len(node) <= 18 else node[:17] + "…"
        c.add("text", label, x=x + node_w / 2, y=y + 15, text_anchor="middle", font_weight="bold")
        c.add("text", status[node], x=x + node_w / 2, y=y + 28, text_anchor="middle", fill=colour)
    return Markup(c.render())


def release_timeline(releases: Sequence[dict[str, Any]], now: datetime) -> Markup | None:
    """An environment's releases as bars from start to finish, coloured by how each ended;
    rollbacks and aborts carry a red cross at their end."""
    spans = []
    for r in releases:
        start = datetime.fromisoformat(r["created_at"])
        end = datetime.fromisoformat(r["finished_at"]) if r["finished_at"] else now
        spans.append((start, max(end, start), r))
    if not spans:
        return None
    spans.sort(key=lambda s: s[0])
    t0 = spans[0][0].timestamp()
    t1 = max(max(s[1].timestamp() for s in spans), t0 + 1)
    width, lane = 640, 20
    height = 40 + lane * len(spans)
    fx = _scale(t0, t1, 120.0, width - 20.0)
    c = Canvas(width, height, role="img", class_="chart timeline", **_FONT)
    c.add("text", spans[0][0].strftime("%Y-%m-%d %H:%M"), x=120, y=14)
    c.add("text", spans[-1][1].strftime("%Y-%m-%d %H:%M"), x=width - 20, y=14, text_anchor="end")
    for i, (start, end, r) in enumerate(spans):
        y = 24 + i * lane
        colour = STATE_COLOURS.get(r["state"], "#8c959f")
        c.add("text", f"v{r['from_version'] or '–'}→v{r['to_version']}", x=4, y=y + 12)
        x1, x2 = fx(start.timestamp()), max(fx(end.timestamp()), fx(start.timestamp()) + 4)
        c.add(
            "path",
            d=f"M{x1:.1f},{y + 3:.1f} H{x2:.1f} V{y + 15:.1f} H{x1:.1f} Z",
            fill=colour,
            class_=f"release {r['state']}",
        )
        if r["state"] in ("rolled_back", "aborted"):
            c.add(
                "path",
                d=f"M{x2 + 2:.1f},{y + 3:.1f} l8,12 m0,-12 l-8,12",
                stroke="#cf222e",
                stroke_width=2,
                class_="rollback",
            )
    return Markup(c.render())


REF_COLOUR, LIVE_COLOUR = "#4c78a8", "#f58518"
SERIES_COLOURS = ("#0969da", "#bf8700", "#1a7f37", "#8250df", "#cf222e", "#6e7781")


def _legend(c: Canvas, x: float, y: float, names: Sequence[tuple[str, str]]) -> None:
    """Coloured squares and names in a row from ``(x, y)``, right-aligned at ``x``."""
    for name, colour in reversed(names):
        width = 12 + 6.5 * len(name)
        x -= width
        c.add("rect", x=x, y=y - 8, width=8, height=8, fill=colour)
        c.add("text", name, x=x + 11, y=y, fill="#57606a")
        x -= 8


def distribution(title: str, bins: dict[str, Any] | None) -> Markup | None:
    """Reference and live shares of one feature: overlaid histograms on shared bins for a
    number, paired bars per category for a category (``monitoring.distributions``' bins)."""
    if not bins:
        return None
    if bins["kind"] == "categorical":
        return _category_bars(title, bins)
    width, height = 340, 150
    box = (40.0, 24.0, width - 8.0, height - 22.0)
    ref, live = bins["reference"], bins["live"]
    top = max(max(ref, default=0.0), max(live, default=0.0), 1e-12)
    edges = bins["edges"]
    c = Canvas(width, height, role="img", class_="chart histogram", **_FONT)
    _axes(c, box, (0.0, top), (_tick(edges[0]), _tick(edges[-1])), title)
    step = (box[2] - box[0]) / max(len(ref), 1)
    for shares, colour, side in ((ref, REF_COLOUR, "reference"), (live, LIVE_COLOUR, "live")):
        for k, value in enumerate(shares):
            h = (box[3] - box[1]) * float(value) / top
            if h > 0:
                c.add(
                    "rect",
                    x=box[0] + k * step,
                    y=box[3] - h,
                    width=max(step - 1, 1),
                    height=h,
                    fill=colour,
                    fill_opacity="0.55",
                    class_=f"bin {side}",
                )
    _legend(c, width - 8.0, 14.0, [("reference", REF_COLOUR), ("live", LIVE_COLOUR)])
    return Markup(c.render())


def _category_bars(title: str, bins: dict[str, Any]) -> Markup:
    categories = bins["categories"]
    row_h, label_w, width = 18, 110, 340
    height = 30 + row_h * len(categories)
    bar_w = width - label_w - 50
    top = max(max(bins["reference"], default=0.0), max(bins["live"], default=0.0), 1e-12)
    c = Canvas(width, height, role="img", class_="chart histogram", **_FONT)
    c.add("text", title, x=4, y=14, font_weight="bold")
    _legend(c, width - 8.0, 14.0, [("reference", REF_COLOUR), ("live", LIVE_COLOUR)])
    for i, name in enumerate(categories):
        y = 24 + i * row_h
        shown = name if len(name) <= 16 else name[:15] + "…"
        c.add("text", shown, x=label_w - 4, y=y + 12, text_anchor="end")
        for j, (shares, colour, side) in enumerate(
            ((bins["reference"], REF_COLOUR, "reference"), (bins["live"], LIVE_COLOUR, "live"))
        ):
            w = bar_w * float(shares[i]) / top
            c.add(
                "rect",
                x=label_w,
                y=y + j * 7 + 1,
                width=max(w, 0.5),
                height=6,
                fill=colour,
                class_=f"bin {side}",
            )
        c.add("text", f"{100 * bins['live'][i]:.0f}%", x=width - 8, y=y + 12, text_anchor="end")
    return Markup(c.render())


def time_chart(
    title: str, series: Sequence[tuple[str, Sequence[tuple[datetime, float | None]]]]
) -> Markup | None:
    """Values over time, one line per named series; a window without a value breaks its line
    (and a lone value is a dot). None when no series has a value."""
    values = [v for _n, points in series for _t, v in points if v is not None]
    times = [t for _n, points in series for t, _v in points]
    if not values or not times:
        return None
    width, height = 420, 170
    box = (48.0, 24.0, width - 12.0, height - 24.0)
    y_lo, y_hi = min(min(values), 0.0), max(values)
    if y_lo == y_hi:
        y_hi = y_lo + 1.0
    t0, t1 = min(times).timestamp(), max(times).timestamp()
    fx = _scale(t0, t1 if t1 > t0 else t0 + 1, box[0], box[2])
    fy = _scale(y_lo, y_hi, box[3], box[1])
    c = Canvas(width, height, role="img", class_="chart series", **_FONT)
    _axes(
        c,
        box,
        (y_lo, y_hi),
        (min(times).strftime("%m-%d %H:%M"), max(times).strftime("%m-%d %H:%M")),
        title,
    )
    names = []
    for i, (name, points) in enumerate(series):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        names.append((name, colour))
        parts, run = [], 0
        for at, value in points:
            if value is None:
                run = 0
                continue
            x, y = fx(at.timestamp()), fy(float(value))
            parts.append(f"{'L' if run else 'M'}{x:.1f},{y:.1f}")
            run += 1
            c.add("circle", cx=x, cy=y, r=2.5, fill=colour, class_="point")
        if parts:
            c.add("path", d=" ".join(parts), fill="none", stroke=colour, stroke_width=2)
    if len(series) > 1:
        _legend(c, width - 12.0, height - 4.0, names)
    return Markup(c.render())
