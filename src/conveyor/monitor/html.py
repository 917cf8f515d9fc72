"""The monitoring report as one self-contained HTML page: drift per feature with a plot of each,
prediction drift and live quality.

The page is ``reports/templates/monitor.html.j2``, which extends the frame and stylesheet every
Conveyor page shares: inline CSS and inline SVG, no scripts and no external requests, so it can
be attached to an alert or opened from a CI artifact as is. Jinja2 autoescapes every value; the
plots are drawn here on the shared SVG canvas (``conveyor.evaluate.svg``), which escapes the
only text in them (category names, axis labels), before they are marked safe. Numbers read as
``conveyor.evaluate.values`` formats them, as on the model card and in the terminal. The file is
written to a temporary name and moved into place, so a reader never sees half a page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from conveyor.evaluate import svg
from conveyor.evaluate.values import EMPTY, format_number, format_percent
from conveyor.reports.pages import render_page
from conveyor.store.atomic import write_text

if TYPE_CHECKING:
    import pandas

    from conveyor.data.drift import ColumnDrift
    from conveyor.monitor.reference import Reference
    from conveyor.monitor.report import MonitorReport, WindowSpan
    from conveyor.monitor.windows import Window

__all__ = ["category_shares", "render_html", "write_html"]

BINS = 24
TOP_CATEGORIES = 8
WIDTH, HEIGHT = 320, 110
REF_COLOR, CUR_COLOR = "#4c78a8", "#f58518"


def render_html(report: MonitorReport, reference: Reference, window: Window) -> str:
    """The page as text (``write_html`` writes it)."""
    from conveyor.monitor.report import canon

    drift = report.get("drift")
    features = []
    if drift is not None:
        for name, entry in drift["columns"].items():
            features.append(_feature_row(name, entry, reference.features, window.inputs))
    prediction_plot: Markup | None = Markup("")
    if report.get("prediction_drift") is not None:
        served = [
            p
            for p, v in zip(window.predictions, window.versions, strict=True)
            if p is not None and v == report.get("version")
        ]
        categorical = reference.task != "regression"
        ref_values = reference.predictions.tolist()
        if categorical:  # 1, 1.0 and True name one class, as the report counts them
            ref_values, served = [canon(v) for v in ref_values], [canon(v) for v in served]
        prediction_plot = _plot(_series(ref_values), _series(served), categorical=categorical)
    metrics = (report.get("quality") or {}).get("metrics") or {}
    view = {
        "r": report,
        "ref": reference,
        "features": features,
        "prediction_plot": prediction_plot,
        "metric_names": list(metrics),
        "skipped": window.skipped,
        "problems": window.problems,
        "span": _span(report["window"]),
        "ref_color": REF_COLOR,
        "cur_color": CUR_COLOR,
        "ms": _ms,
        "seconds": _seconds,
    }
    return render_page("monitor.html.j2", view)


def write_html(
    report: MonitorReport, reference: Reference, window: Window, path: str | os.PathLike[str]
) -> Path:
    """Write the page to ``path`` atomically (a temporary file, then a rename); returns it."""
    return write_text(path, render_html(report, reference, window))


# -- table rows --------------------------------------------------------------------------------


def _feature_row(
    name: str, entry: ColumnDrift, reference: pandas.DataFrame, current: pandas.DataFrame
) -> dict[str, Any]:
    stats = entry.get("stats") or {}
    test = stats.get("ks") or stats.get("chi2")
    effects = []
    for method in ("psi", "wasserstein", "jensenshannon"):
        if method in stats:
            s = stats[method]
            value = s.get("normalised", s["statistic"])
            effects.append(f"{method} {format_number(value)}")
    nulls = entry.get("null_share") or {}
    plot: Markup | None = Markup("")  # no plot when the column is missing on a side
    if name in reference.columns and name in current.columns and len(current):
        plot = _plot(reference[name], current[name], categorical=entry.get("kind") != "numeric")
    return {
        "name": name,
        "kind": entry.get("kind"),
        "drifted": bool(entry.get("drifted")),
        "method": entry.get("method"),
        "reason": entry.get("reason"),
        "p": format_number(test.get("p_adjusted", test.get("p_value"))) if test else "",
        "effects": ", ".join(effects),
        "nulls": (
            f"{format_percent(nulls.get('reference'))} / {format_percent(nulls.get('current'))}"
            if nulls
            else ""
        ),
        "plot": plot,
    }


# -- plots -------------------------------------------------------------------------------------


def _series(values: list[Any]) -> pandas.Series:
    import pandas as pd

    return pd.Series(values, dtype=object if not values else None)


def _plot(reference: pandas.Series, current: pandas.Series, *, categorical: bool) -> Markup | None:
    """The SVG of both sides' distributions; None when neither side has a value to draw."""
    if categorical:
        return _bars(reference, current)
    return _histogram(reference, current)


def _numbers(series: pandas.Series) -> tuple[Any, bool]:
    """Finite float64 values, and whether they were datetimes (nanoseconds)."""
    import numpy as np
    import pandas as pd
    from pandas.api import types

    dates = types.is_datetime64_any_dtype(series.dtype)
    if dates:
        if getattr(series.dtype, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        values = series.dropna().to_numpy(dtype="M8[ns]").view("int64").astype(np.float64)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    return values[np.isfinite(values)], dates


def _histogram(reference: pandas.Series, current: pandas.Series) -> Markup | None:
    """Two overlaid histograms on shared bins between both sides' 1st and 99th percentiles."""
    import numpy as np

    ref, dates = _numbers(reference)
    cur, _ = _numbers(current)
    if len(ref) == 0 and len(cur) == 0:
        return None
    both = np.concatenate([ref, cur])
    lo, hi = (float(v) for v in np.percentile(both, [1, 99]))
    if not hi > lo:
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    shares = []
    for side in (ref, cur):
        counts, _ = np.histogram(np.clip(side, lo, hi), bins=edges)
        shares.append(counts / max(len(side), 1))
    top = max(float(max(s.max() for s in shares)), 1e-12)
    plot_h = HEIGHT - 18
    step = WIDTH / BINS
    canvas = svg.Canvas(WIDTH, HEIGHT, role="img")
    for share, color in zip(shares, (REF_COLOR, CUR_COLOR), strict=True):
        for k, value in enumerate(share):
            h = plot_h * float(value) / top
            if h > 0:
                canvas.add(
                    "rect",
                    x=k * step,
                    y=plot_h - h,
                    width=step - 1,
                    height=h,
                    fill=color,
                    fill_opacity="0.55",
                )
    canvas.add("line", x1=0, y1=plot_h, x2=WIDTH, y2=plot_h, stroke="#999")
    _label(canvas, 2.0, HEIGHT - 4.0, _tick(lo, dates), "start")
    _label(canvas, WIDTH - 2.0, HEIGHT - 4.0, _tick(hi, dates), "end")
    return Markup(canvas.render())


def category_shares(reference: pandas.Series, current: pandas.Series) -> pandas.DataFrame | None:
    """Each side's share of the commonest categories (columns ``ref`` and ``cur``, the commonest
    over both first), the rest summed as ``(other)``; None when neither side has a value. The
    monitor page and the dashboard draw the same table."""
    import pandas as pd

    ref = reference.dropna().astype(str).value_counts(normalize=True)
    cur = current.dropna().astype(str).value_counts(normalize=True)
    if ref.empty and cur.empty:
        return None
    table = pd.concat([ref.rename("ref"), cur.rename("cur")], axis=1).fillna(0.0)
    table = table.assign(total=table["ref"] + table["cur"]).sort_values(
        "total", ascending=False, kind="stable"
    )
    if len(table) > TOP_CATEGORIES:
        rest = table.iloc[TOP_CATEGORIES - 1 :][["ref", "cur"]].sum()
        table = table.iloc[: TOP_CATEGORIES - 1][["ref", "cur"]]
        table.loc["(other)"] = rest
    return table[["ref", "cur"]]


def _bars(reference: pandas.Series, current: pandas.Series) -> Markup | None:
    """Paired horizontal bars: each category's share on each side (the commonest first)."""
    table = category_shares(reference, current)
    if table is None:
        return None
    row_h, label_w = 18, 110
    height = row_h * len(table) + 4
    bar_w = WIDTH - label_w - 40
    top = max(float(table[["ref", "cur"]].to_numpy().max()), 1e-12)
    canvas = svg.Canvas(WIDTH, height, role="img")
    for i, (label, row) in enumerate(table.iterrows()):
        y = i * row_h + 2
        shown = str(label) if len(str(label)) <= 16 else str(label)[:15] + "…"
        _label(canvas, label_w - 4.0, y + 12.0, shown, "end")
        for j, (value, color) in enumerate(((row["ref"], REF_COLOR), (row["cur"], CUR_COLOR))):
            w = bar_w * float(value) / top
            canvas.add("rect", x=label_w, y=y + j * 7 + 1, width=w, height=6, fill=color)
        _label(canvas, label_w + bar_w + 36.0, y + 12.0, format_percent(float(row["cur"])), "end")
    return Markup(canvas.render())


def _label(canvas: svg.Canvas, x: float, y: float, text: str, anchor: str) -> None:
    canvas.add("text", text, x=x, y=y, font_size=10, fill="#555", text_anchor=anchor)


def _tick(value: float, dates: bool) -> str:
    """An axis end: a date, or the value to four significant digits (an axis, not a metric)."""
    if dates:
        import pandas as pd

        return str(pd.Timestamp(int(value)).date())
    return f"{value:.4g}"


# -- durations ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return EMPTY if value is None else f"{value:.1f} ms"


def _seconds(value: float | None) -> str:
    if value is None:
        return EMPTY
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _span(window: WindowSpan) -> str:
    if window["seconds"] is not None:
        return f"last {_seconds(window['seconds'])}"
    return f"last {window['last']} requests"
