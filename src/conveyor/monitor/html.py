"""The monitoring report as one self-contained HTML page: drift per feature with a plot of each,
prediction drift and live quality.

The page has inline CSS and inline SVG, no scripts and no external requests, so it can be
attached to an alert or opened from a CI artifact as is. Jinja2 autoescapes every value; the
SVG is built here from numbers, and the only text in it (category names, axis labels) is
escaped before it is marked safe. The file is written to a temporary name and moved into
place, so a reader never sees half a page.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from conveyor.store.atomic import write_text

if TYPE_CHECKING:
    import pandas

    from conveyor.monitor.reference import Reference
    from conveyor.monitor.windows import Window

__all__ = ["render_html", "write_html"]

BINS = 24
TOP_CATEGORIES = 8
WIDTH, HEIGHT = 320, 110
REF_COLOR, CUR_COLOR = "#4c78a8", "#f58518"

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Monitoring: {{ r.model }}@{{ r.environment }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: left;
         vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.drifted { color: #b00020; font-weight: 600; } .ok { color: #1b7f3b; }
.muted { color: #777; } .legend span { margin-right: 1rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; vertical-align: middle;
          margin-right: .3rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dt { color: #555; } dd { margin: 0; }
</style>
</head>
<body>
<h1>Monitoring: {{ r.model }}@{{ r.environment }} (version {{ r.version }})</h1>
<dl>
  <dt>Window</dt><dd>{{ r.window.start }} to {{ r.window.end }} ({{ span }})</dd>
  <dt>Requests</dt><dd>{{ r.requests }} ({{ pct(r.error_rate) }} errors, p99
      {{ ms(r.p99_ms) }})</dd>
  <dt>Served rows</dt><dd>{{ r.rows }}{% if not r.enough %}
      <span class="muted">(fewer than the minimum: alerts hold their state)</span>{% endif %}</dd>
  {% if skipped %}<dt>Skipped rows</dt><dd>{{ skipped }} did not fit the signature
      {% if problems %}<ul>{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul>{% endif %}
      </dd>{% endif %}
  <dt>Reference</dt><dd>{{ ref.source }}: {{ ref.rows }} rows of version {{ ref.version }}</dd>
</dl>
<p class="legend"><span><i class="swatch" style="background:{{ ref_color }}"></i>reference</span>
<span><i class="swatch" style="background:{{ cur_color }}"></i>served</span></p>

<h2>Data drift</h2>
{% if r.drift is none %}
<p class="muted">No served rows in the window: nothing to compare.</p>
{% else %}
<p>{{ r.drift.drifted | length }} of {{ r.drift.columns | length }} features drifted
({{ pct(r.drift.share_drifted) }});
{% if r.drift.drifted_overall %}<span class="drifted">the data set has drifted</span>
{% else %}<span class="ok">the data set has not drifted</span>{% endif %}.</p>
<table>
<thead><tr><th>Feature</th><th>Kind</th><th>Verdict</th><th>Decided by</th>
<th>Test p (adjusted)</th><th>Effect sizes</th><th>Missing (ref / served)</th>
<th>Distribution</th></tr></thead>
<tbody>
{% for row in features %}
<tr id="feature-{{ loop.index }}">
<td>{{ row.name }}</td><td>{{ row.kind }}</td>
{% if row.drifted %}<td class="drifted">drifted</td>{% else %}<td class="ok">stable</td>
{% endif %}
<td>{{ row.method or '' }}{% if row.reason %}<br><span class="muted">{{ row.reason }}</span>
{% endif %}</td>
<td class="num">{{ row.p }}</td><td>{{ row.effects }}</td><td class="num">{{ row.nulls }}</td>
<td>{{ row.plot }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% endif %}

<h2>Prediction drift</h2>
{% if r.prediction_drift is none %}
<p class="muted">No predictions of version {{ r.version }} in the window.</p>
{% else %}
<p>PSI {{ num(r.prediction_drift.psi) }}, test p {{ num(r.prediction_drift.p_value) }}:
{% if r.prediction_drift.drifted %}<span class="drifted">the predictions have shifted</span>
{% else %}<span class="ok">no shift</span>{% endif %}.</p>
{{ prediction_plot }}
{% endif %}

<h2>Live quality</h2>
<p>{{ r.quality.labelled }} labelled rows ({{ pct(r.quality.labelled_share) }} of served rows);
median label delay {{ seconds(r.quality.label_delay_s_p50) }}.</p>
{% if r.quality.metrics %}
<table>
<thead><tr><th>Version</th><th>Labelled</th>{% for k in metric_names %}<th>{{ k }}</th>
{% endfor %}</tr></thead>
<tbody>
<tr><td>all</td><td class="num">{{ r.quality.labelled }}</td>{% for k in metric_names %}
<td class="num">{{ num(r.quality.metrics[k]) }}</td>{% endfor %}</tr>
{% for v, scores in r.quality.by_version.items() %}
<tr><td>{{ v }}</td><td class="num">{{ scores.labelled }}</td>{% for k in metric_names %}
<td class="num">{{ num(scores.get(k)) }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted">No labels yet: send them to the gateway's /v1/feedback.</p>
{% endif %}
</body>
</html>
"""


def render_html(report: dict[str, Any], reference: Reference, window: Window) -> str:
    """The page as text (``write_html`` writes it)."""
    import jinja2

    from conveyor.monitor.report import _canon

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_TEMPLATE)
    drift = report.get("drift")
    features = []
    if drift is not None:
        for name, entry in drift["columns"].items():
            features.append(_feature_row(name, entry, reference.features, window.inputs))
    prediction_plot = Markup("")
    if report.get("prediction_drift") is not None:
        served = [
            p
            for p, v in zip(window.predictions, window.versions, strict=True)
            if p is not None and v == report.get("version")
        ]
        categorical = reference.task != "regression"
        ref_values = reference.predictions.tolist()
        if categorical:  # 1, 1.0 and True name one class, as the report counts them
            ref_values, served = [_canon(v) for v in ref_values], [_canon(v) for v in served]
        prediction_plot = _plot(_series(ref_values), _series(served), categorical=categorical)
    metrics = (report.get("quality") or {}).get("metrics") or {}
    return template.render(
        r=report,
        ref=reference,
        features=features,
        prediction_plot=prediction_plot,
        metric_names=list(metrics),
        skipped=window.skipped,
        problems=window.problems,
        span=_span(report["window"]),
        ref_color=REF_COLOR,
        cur_color=CUR_COLOR,
        num=_num,
        pct=_pct,
        ms=lambda v: "n/a" if v is None else f"{v:.1f} ms",
        seconds=_seconds,
    )


def write_html(
    report: dict[str, Any], reference: Reference, window: Window, path: str | os.PathLike[str]
) -> Path:
    """Write the page to ``path`` atomically (a temporary file, then a rename); returns it."""
    return write_text(path, render_html(report, reference, window))


# -- table rows --------------------------------------------------------------------------------


def _feature_row(
    name: str, entry: dict[str, Any], reference: pandas.DataFrame, current: pandas.DataFrame
) -> dict[str, Any]:
    stats = entry.get("stats") or {}
    test = stats.get("ks") or stats.get("chi2") or {}
    effects = []
    for method in ("psi", "wasserstein", "jensenshannon"):
        if method in stats:
            s = stats[method]
            value = s.get("normalised", s.get("statistic"))
            effects.append(f"{method} {_num(value)}")
    nulls = entry.get("null_share") or {}
    plot = Markup("")
    if name in reference.columns and name in current.columns and len(current):
        plot = _plot(reference[name], current[name], categorical=entry.get("kind") != "numeric")
    return {
        "name": name,
        "kind": entry.get("kind"),
        "drifted": bool(entry.get("drifted")),
        "method": entry.get("method"),
        "reason": entry.get("reason"),
        "p": _num(test.get("p_adjusted", test.get("p_value"))) if test else "",
        "effects": ", ".join(effects),
        "nulls": f"{_pct(nulls.get('reference'))} / {_pct(nulls.get('current'))}" if nulls else "",
        "plot": plot,
    }


# -- plots -------------------------------------------------------------------------------------


def _series(values: list[Any]) -> pandas.Series:
    import pandas as pd

    return pd.Series(values, dtype=object if not values else None)


def _plot(reference: pandas.Series, current: pandas.Series, *, categorical: bool) -> Markup:
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


def _histogram(reference: pandas.Series, current: pandas.Series) -> Markup:
    """Two overlaid histograms on shared bins between both sides' 1st and 99th percentiles."""
    import numpy as np

    ref, dates = _numbers(reference)
    cur, _ = _numbers(current)
    if len(ref) == 0 and len(cur) == 0:
        return Markup('<span class="muted">no values</span>')
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
    parts = [_svg_open(WIDTH, HEIGHT)]
    for share, color in zip(shares, (REF_COLOR, CUR_COLOR), strict=True):
        for k, value in enumerate(share):
            h = plot_h * float(value) / top
            if h <= 0:
                continue
            parts.append(
                f'<rect x="{k * step:.1f}" y="{plot_h - h:.1f}" width="{step - 1:.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.55"/>'
            )
    parts.append(f'<line x1="0" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}" stroke="#999"/>')
    parts.append(_text(2, HEIGHT - 4, _tick(lo, dates), "start"))
    parts.append(_text(WIDTH - 2, HEIGHT - 4, _tick(hi, dates), "end"))
    parts.append("</svg>")
    return Markup("".join(parts))


def _bars(reference: pandas.Series, current: pandas.Series) -> Markup:
    """Paired horizontal bars: each category's share on each side (the commonest first)."""
    import pandas as pd

    ref = reference.dropna().astype(str).value_counts(normalize=True)
    cur = current.dropna().astype(str).value_counts(normalize=True)
    if ref.empty and cur.empty:
        return Markup('<span class="muted">no values</span>')
    table = pd.concat([ref.rename("ref"), cur.rename("cur")], axis=1).fillna(0.0)
    table = table.assign(total=table["ref"] + table["cur"]).sort_values(
        "total", ascending=False, kind="stable"
    )
    if len(table) > TOP_CATEGORIES:
        rest = table.iloc[TOP_CATEGORIES - 1 :][["ref", "cur"]].sum()
        table = table.iloc[: TOP_CATEGORIES - 1][["ref", "cur"]]
        table.loc["(other)"] = rest
    row_h, label_w = 18, 110
    height = row_h * len(table) + 4
    bar_w = WIDTH - label_w - 40
    top = max(float(table[["ref", "cur"]].to_numpy().max()), 1e-12)
    parts = [_svg_open(WIDTH, height)]
    for i, (label, row) in enumerate(table.iterrows()):
        y = i * row_h + 2
        shown = str(label) if len(str(label)) <= 16 else str(label)[:15] + "…"
        parts.append(_text(label_w - 4, y + 12, shown, "end"))
        for j, (value, color) in enumerate(((row["ref"], REF_COLOR), (row["cur"], CUR_COLOR))):
            w = bar_w * float(value) / top
            parts.append(
                f'<rect x="{label_w}" y="{y + j * 7 + 1}" width="{w:.1f}" height="6" '
                f'fill="{color}"/>'
            )
        parts.append(_text(label_w + bar_w + 36, y + 12, _pct(float(row["cur"])), "end"))
    parts.append("</svg>")
    return Markup("".join(parts))


def _svg_open(width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
    )


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" fill="#555" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )


def _tick(value: float, dates: bool) -> str:
    if dates:
        import pandas as pd

        return str(pd.Timestamp(int(value)).date())
    return _num(value)


# -- numbers -----------------------------------------------------------------------------------


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "NaN"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.2e}"


def _pct(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{100 * float(value):.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _span(window: dict[str, Any]) -> str:
    if window.get("seconds") is not None:
        return f"last {_seconds(window['seconds'])}"
    return f"last {window.get('last')} requests"
