"""``drift.html``: one self-contained page (inline SVG, CSS and a few lines of JavaScript).

The page never loads anything: no network, no other files. Every string that
comes from the data or the configuration (column names, category values,
paths, messages) goes through :func:`esc` (:func:`html.escape`, quotes
included); element ids are built from positions, never from names.

Layout, top to bottom:

* a page banner with the overall verdict: red when the features drift as a
  dataset (more than ``drift_share`` of them), amber when only some columns
  drift (the predictions only, or features below the dataset share), green
  when no column drifts, grey without data; then one banner for the
  predictions and one for the features;
* a table of contents linking every section and every column card;
* **Predictions** first, then **Features**: each a sortable summary table
  (click a header) and one card per column.

Column status, shown by colour in the tables and cards:

* ``drift`` (red): a metric is above its threshold and the difference is
  significant (p-value < alpha) - the column drifted;
* ``warn`` (amber): a metric is above its threshold but p-value >= alpha, so
  the column is *not* counted as drifted (too few rows to tell noise apart);
* ``ok``: no metric above its threshold; ``nodata``: nothing to compare.

Order of the columns within a section: by status (drift, warn, ok, no data),
then by p-value ascending (None last), then by effect size - the PSI, the one
metric every column kind has, on one scale - descending (None last), then by
name.

Numeric histograms are drawn on the value scale: each bar spans its bin's
true width between the reference quantile edges; values below the reference
minimum and above its maximum are two narrow end bars labelled ``< min`` and
``> max``. Bar height is the share of rows in the bin (reference quantile
bins hold about equal shares, so the reference is about flat and the current
data's departures stand out). Categorical columns are horizontal bar charts
of their top categories plus ``(other)``.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

REF_COLOR = "#4c78a8"
CUR_COLOR = "#f58518"
DRIFT_COLOR = "#c0392b"
WARN_COLOR = "#b9770e"
OK_COLOR = "#2e8b57"

DRIFT = "drift"
WARN = "warn"
OK = "ok"
NO_DATA = "nodata"
_STATUS_RANK = {DRIFT: 0, WARN: 1, OK: 2, NO_DATA: 3}
_STATUS_TEXT = {
    DRIFT: "drifted",
    WARN: "over threshold, not significant",
    OK: "no drift",
    NO_DATA: "no data",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 8px}h2{margin:32px 0 8px;padding-top:8px;border-top:1px solid #ddd}
a{color:#1f5fa8}
.banner{padding:12px 16px;border-radius:6px;margin:8px 0;font-weight:600}
.banner.sub{padding:8px 14px;font-weight:500;margin:6px 0 6px 24px}
.banner.drift{background:#fdecea;border:1px solid #c0392b;color:#8e2a1f}
.banner.warn{background:#fef5e7;border:1px solid #e0a526;color:#7d5108}
.banner.ok{background:#eaf7ee;border:1px solid #2e8b57;color:#1e5e3a}
.banner.nodata{background:#f2f2f2;border:1px solid #999;color:#444}
nav.toc{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:12px 0;font-size:13px}
nav.toc ul{margin:4px 0;padding-left:18px}nav.toc ul ul{columns:3;list-style:none;padding-left:8px}
nav.toc li li{break-inside:avoid;margin:1px 0}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px;vertical-align:middle;background:#bbb}
.dot.drift{background:#c0392b}.dot.warn{background:#e0a526}.dot.ok{background:#2e8b57}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td.name,th.name{text-align:left}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:' \\2195';color:#aaa;font-size:11px}
table.sortable th[data-dir=asc]:after{content:' \\2191';color:#333}
table.sortable th[data-dir=desc]:after{content:' \\2193';color:#333}
td.drift{background:#fdecea;color:#8e2a1f;font-weight:700}
td.warn{background:#fef5e7;color:#7d5108;font-weight:600}
tr.drift td.name:first-child{border-left:4px solid #c0392b}
tr.warn td.name:first-child{border-left:4px solid #e0a526}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:12px 0}
.card.drift{border:2px solid #c0392b;box-shadow:0 0 0 3px #fdecea}
.card.warn{border:2px solid #e0a526}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;margin-left:8px;color:#fff}
.badge.drift{background:#c0392b}.badge.warn{background:#b9770e}.badge.ok{background:#2e8b57}.badge.nodata{background:#888}
.legend span.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #ccc}
.flex{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.muted{color:#666;font-size:13px}
.top{font-size:12px;margin-left:8px;font-weight:400}
"""

# Sorts every table.sortable by the clicked column: numbers by value (data-v), text by text,
# empty values (None) always last.
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  var asc=th.getAttribute('data-dir')!=='asc',b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows);
  t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('data-dir')});
  th.setAttribute('data-dir',asc?'asc':'desc');
  rows.sort(function(r,s){var x=r.cells[i].getAttribute('data-v'),y=s.cells[i].getAttribute('data-v');
   if(x===''||y===''){return (x==='')-(y==='')}
   var a=parseFloat(x),c=parseFloat(y),d=(isNaN(a)||isNaN(c))?x.localeCompare(y):a-c;
   return asc?d:-d});
  rows.forEach(function(r){b.appendChild(r)});
 })})
});
"""


def esc(value: Any) -> str:
    """HTML-escapes any value's text (quotes included, safe in attributes)."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return esc(value)


# --------------------------------------------------------------------------- status and order


def over_threshold(column: Mapping[str, Any]) -> list[str]:
    """Metrics strictly above their threshold, whether or not the difference is significant."""
    limits = column["thresholds"]
    return [
        name
        for name, value in column["metrics"].items()
        if name != "p_value"
        and value is not None
        and limits.get(name) is not None
        and value > limits[name]
    ]


def column_status(column: Mapping[str, Any]) -> str:
    """``drift``, ``warn`` (over a threshold, not significant), ``ok`` or ``nodata``."""
    if column["status"] == "no_data":
        return NO_DATA
    if column["drift_detected"]:
        return DRIFT
    return WARN if over_threshold(column) else OK


def effect_size(column: Mapping[str, Any]) -> float | None:
    """The column's PSI: the effect size every column kind has, on one scale."""
    return column["metrics"].get("psi")


def sort_key(column: Mapping[str, Any]) -> tuple:
    """Status, then p-value ascending (None last), then effect size descending (None last)."""
    p = column["metrics"].get("p_value")
    effect = effect_size(column)
    return (
        _STATUS_RANK[column_status(column)],
        p is None,
        0.0 if p is None else p,
        effect is None,
        0.0 if effect is None else -effect,
        str(column["name"]),
    )


def sort_columns(columns: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The columns in the page's order (see the module docstring)."""
    return sorted(columns, key=sort_key)


# --------------------------------------------------------------------------- verdicts


def verdicts(report: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{"page" | "predictions" | "features": (css class, text)}`` of the report."""
    features, predictions = report["features"], report["predictions"]
    if report["status"] == "no_data":
        text = f"No data: {report['message']}"
        return {
            "page": (NO_DATA, text),
            "predictions": (NO_DATA, text),
            "features": (NO_DATA, text),
        }
    n_feat = sum(bool(c["drift_detected"]) for c in features)
    n_pred = sum(bool(c["drift_detected"]) for c in predictions)
    share = report["thresholds"]["drift_share"]
    if not features:
        feat = (NO_DATA, "No features profiled.")
    elif report["drift_detected"]:
        feat = (
            DRIFT,
            f"Dataset drift: {n_feat} of {len(features)} features drifted "
            f"(share {n_feat / len(features):.2f} > {share:g}).",
        )
    elif n_feat:
        feat = (
            WARN,
            f"Some features drifted: {n_feat} of {len(features)} "
            f"(share {n_feat / len(features):.2f}; dataset drift needs > {share:g}).",
        )
    else:
        feat = (OK, f"No feature drift (0 of {len(features)} features drifted).")
    if not predictions:
        pred = (NO_DATA, "No predictions profiled.")
    elif n_pred:
        pred = (
            DRIFT,
            f"Prediction drift: {n_pred} of {len(predictions)} prediction columns drifted.",
        )
    else:
        pred = (OK, f"No prediction drift (0 of {len(predictions)} prediction columns drifted).")
    if report["drift_detected"]:
        page = (DRIFT, "Dataset drift detected")
    elif n_pred and not n_feat:
        page = (WARN, "Prediction drift (no feature drift)")
    elif n_feat or n_pred:
        page = (WARN, "Some columns drifted (below the dataset drift share)")
    else:
        page = (OK, "No drift")
    return {"page": page, "predictions": pred, "features": feat}


# --------------------------------------------------------------------------- charts


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About ``target`` (at most ``target + 3``) round values (steps of 1, 2, 2.5 or 5 x 10^k) in ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= target + 2)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Tick texts with the fewest decimals that tell them apart exactly."""
    if not ticks:
        return []
    big = max(abs(t) for t in ticks)
    if big >= 1e6 or (0 < big < 1e-3):
        return [f"{t:.3g}" for t in ticks]
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0) or 1.0
    for decimals in range(7):
        if abs(round(step, decimals) - step) <= step * 1e-6:
            break
    return [f"{t:,.{decimals}f}" if abs(t) >= 1e-12 else "0" for t in ticks]


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" '
        'font-family="system-ui,sans-serif">',
        f"<title>{esc(title)}</title>",
    ]


def _proportions(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def numeric_histogram_svg(
    edges: Sequence[float],
    reference: Sequence[int],
    current: Sequence[int],
    *,
    title: str,
) -> str:
    """Reference and current histograms on the value scale (inline SVG).

    Slots are ``[below, bin 1..k, above]``: the k bins span their true widths
    between ``edges``; the out-of-range slots are narrow end bars. A bin of
    zero width (repeated quantile edges) is drawn 2 px wide.
    """
    width, height = 560, 262
    left, right, top, bottom = 56, 14, 14, 68
    end_w, gap = 16.0, 8.0
    plot_w, plot_h = width - left - right, height - top - bottom
    inner_l, inner_r = left + end_w + gap, left + plot_w - end_w - gap
    e = [float(x) for x in edges]
    lo, hi = e[0], e[-1]
    if hi <= lo:  # a constant column: centre it on a unit-wide axis
        lo, hi = lo - 0.5, hi + 0.5

    def x_of(v: float) -> float:
        return inner_l + (v - lo) / (hi - lo) * (inner_r - inner_l)

    p, q = _proportions(reference), _proportions(current)
    y_ticks = nice_ticks(0.0, max([*p, *q, 1e-9]), 4)
    y_top = max(y_ticks[-1], max([*p, *q, 1e-9]))

    def y_of(share: float) -> float:
        return top + plot_h - share / y_top * plot_h

    base = top + plot_h
    slots: list[tuple[float, float, str]] = [
        (left, left + end_w, f"below the reference minimum {e[0]:.6g}")
    ]
    for a, b in itertools.pairwise(e):
        x0, x1 = x_of(a), x_of(b)
        if x1 - x0 < 2:
            x0, x1 = (x0 + x1) / 2 - 1, (x0 + x1) / 2 + 1
        slots.append((x0, x1, f"[{a:.6g}, {b:.6g}{']' if b == e[-1] else ')'}"))
    slots.append((left + plot_w - end_w, left + plot_w, f"above the reference maximum {e[-1]:.6g}"))
    parts = _svg_open(width, height, title)
    for t, label in zip(y_ticks, tick_labels([100 * t for t in y_ticks]), strict=True):
        y = y_of(t)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 5}" y="{y + 3.5:.1f}" font-size="11" text-anchor="end">{label}%</text>'
        )
    for i, (x0, x1, label) in enumerate(slots):
        tip = f"{label}: reference {p[i]:.1%}, current {q[i]:.1%}"
        for cls, share, style in (
            ("ref", p[i], f'fill="{REF_COLOR}" fill-opacity="0.45"'),
            (
                "cur",
                q[i],
                f'fill="{CUR_COLOR}" fill-opacity="0.1" stroke="{CUR_COLOR}" stroke-width="2"',
            ),
        ):
            y = y_of(share)
            parts.append(
                f'<rect class="bin {cls}" data-slot="{i}" x="{x0:.3f}" y="{y:.2f}" '
                f'width="{x1 - x0:.3f}" height="{base - y:.2f}" {style}><title>{esc(tip)}</title></rect>'
            )
    parts.append(
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#555"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#555"/>'
        f'<line x1="{left + end_w / 2}" y1="{base + 2}" x2="{left + end_w / 2}" y2="{base + 20}" stroke="#bbb"/>'
        f'<line x1="{left + plot_w - end_w / 2}" y1="{base + 2}" x2="{left + plot_w - end_w / 2}" '
        f'y2="{base + 20}" stroke="#bbb"/>'
    )
    x_ticks = nice_ticks(lo, hi, 5)
    for t, label in zip(x_ticks, tick_labels(x_ticks), strict=True):
        x = x_of(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{base + 16}" font-size="11" text-anchor="middle">{esc(label)}</text>'
        )
    for x, label in ((left + end_w / 2, "&lt; min"), (left + plot_w - end_w / 2, "&gt; max")):
        parts.append(
            f'<text x="{x:.1f}" y="{base + 30}" font-size="10" fill="#666" text-anchor="middle">{label}</text>'
        )
    parts.append(
        f'<text x="{inner_l + (inner_r - inner_l) / 2:.1f}" y="{height - 8}" font-size="12" '
        'text-anchor="middle" fill="#444">value (bins: reference quantiles)</text>'
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="12" fill="#444" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">share of rows</text></svg>'
    )
    return "".join(parts)


def categorical_histogram_svg(
    labels: Sequence[str], reference: Sequence[int], current: Sequence[int], *, title: str
) -> str:
    """Horizontal bars of each category's share, reference above current (inline SVG)."""
    row_h, left, right, top = 22, 150, 40, 8
    width = 560
    plot_w = width - left - right
    height = top + row_h * len(labels) + 40
    p, q = _proportions(reference), _proportions(current)
    ticks = nice_ticks(0.0, max([*p, *q, 1e-9]), 4)
    x_top = max(ticks[-1], max([*p, *q, 1e-9]))
    base = top + row_h * len(labels)
    parts = _svg_open(width, height, title)
    for t, label in zip(ticks, tick_labels([100 * t for t in ticks]), strict=True):
        x = left + t / x_top * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{base + 14}" font-size="11" text-anchor="middle">{label}%</text>'
        )
    for i, label in enumerate(labels):
        y = top + i * row_h
        short = label if len(label) <= 22 else label[:21] + "…"
        tip = f"{label}: reference {p[i]:.1%}, current {q[i]:.1%}"
        parts.append(
            f'<text x="{left - 6}" y="{y + row_h / 2 + 4:.1f}" font-size="11" text-anchor="end">'
            f"<title>{esc(label)}</title>{esc(short)}</text>"
        )
        for cls, share, dy, color in (("ref", p[i], 3, REF_COLOR), ("cur", q[i], 11, CUR_COLOR)):
            parts.append(
                f'<rect class="bar {cls}" x="{left}" y="{y + dy}" width="{share / x_top * plot_w:.2f}" '
                f'height="8" fill="{color}" fill-opacity="0.75"><title>{esc(tip)}</title></rect>'
            )
    parts.append(
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#555"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="12" fill="#444" '
        'text-anchor="middle">share of rows</text></svg>'
    )
    return "".join(parts)


def column_chart(column: Mapping[str, Any]) -> str:
    """The column's histogram chart: numeric on the value scale, categorical as bars."""
    hist = column["histogram"]
    title = f"{column['name']}: reference vs current"
    if "edges" in hist:
        return numeric_histogram_svg(hist["edges"], hist["reference"], hist["current"], title=title)
    labels = [str(v) for v in hist["values"]] + ["(other)"]
    return categorical_histogram_svg(labels, hist["reference"], hist["current"], title=title)


# --------------------------------------------------------------------------- tables and cards


def _cell_class(column: Mapping[str, Any], metric: str, over: Sequence[str]) -> str:
    if metric in column["drifted_by"]:
        return DRIFT
    if metric in over:
        return WARN
    if metric == "p_value" and over and column_status(column) == WARN:
        return WARN  # the reason it is not drift
    return ""


def _metrics_table(column: Mapping[str, Any]) -> str:
    rows = []
    over = over_threshold(column)
    for name, value in column["metrics"].items():
        if name == "p_value":  # significance guard: drift needs p < alpha
            alpha = column["thresholds"].get("alpha")
            limit = "-" if alpha is None else f"&lt; {_fmt(alpha)}"
        else:
            limit = _fmt(column["thresholds"].get(name))
        cls = _cell_class(column, name, over)
        attr = f' class="{cls}"' if cls else ""
        rows.append(
            f'<tr><td class="name">{esc(name)}</td><td{attr}>{_fmt(value)}</td><td>{limit}</td></tr>'
        )
    return (
        '<table><tr><th class="name">metric</th><th>value</th><th>threshold</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _stats_table(column: Mapping[str, Any]) -> str:
    ref, cur = column["reference"], column["current"]
    keys = [k for k in ("count", "null_count", "mean", "std", "min", "max") if k in ref]
    rows = "".join(
        f'<tr><td class="name">{esc(k)}</td><td>{_fmt(ref.get(k))}</td><td>{_fmt(cur.get(k))}</td></tr>'
        for k in keys
    )
    return (
        '<table><tr><th class="name"></th><th>reference</th><th>current</th></tr>'
        + rows
        + "</table>"
    )


def _badge(column: Mapping[str, Any]) -> str:
    status = column_status(column)
    if status == DRIFT:
        text = f"DRIFT ({', '.join(column['drifted_by'])})"
    elif status == WARN:
        text = (
            f"over threshold ({', '.join(over_threshold(column))}), not significant "
            f"(p = {_fmt(column['metrics'].get('p_value'))})"
        )
    else:
        text = _STATUS_TEXT[status]
    return f'<span class="badge {status}">{esc(text)}</span>'


def column_card(column: Mapping[str, Any], anchor: str) -> str:
    """One column: name, badge, histogram chart, metrics and summary stats."""
    status = column_status(column)
    cls = f"card {status}" if status in (DRIFT, WARN) else "card"
    return (
        f'<div class="{cls}" id="{anchor}"><h3>{esc(column["name"])} <span class="muted">'
        f"({esc(column['kind'])})</span>{_badge(column)}"
        '<a class="top" href="#toc">↑ contents</a></h3>'
        f'<div class="flex"><div>{column_chart(column)}</div>'
        f"<div>{_metrics_table(column)}{_stats_table(column)}</div></div></div>"
    )


def _data_v(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(float(value))
    return esc(value)


def summary_table(columns: Sequence[Mapping[str, Any]], anchors: Sequence[str]) -> str:
    """A sortable table (click a header): one row per column, linked to its card."""
    metric_names = list(dict.fromkeys(k for c in columns for k in c["metrics"] if k != "p_value"))
    head = "".join(f"<th>{esc(m)}</th>" for m in metric_names)
    rows = []
    for c, anchor in zip(columns, anchors, strict=True):
        status = column_status(c)
        over = over_threshold(c)
        cells = []
        for m in ["p_value", *metric_names]:
            value = c["metrics"].get(m)
            cls = _cell_class(c, m, over)
            attr = f' class="{cls}"' if cls else ""
            cells.append(f'<td{attr} data-v="{_data_v(value)}">{_fmt(value)}</td>')
        rows.append(
            f'<tr class="{status}"><td class="name" data-v="{esc(c["name"])}">'
            f'<a href="#{anchor}">{esc(c["name"])}</a></td>'
            f'<td class="name" data-v="{esc(c["kind"])}">{esc(c["kind"])}</td>'
            f'<td class="name" data-v="{_STATUS_RANK[status]}"><span class="dot {status}"></span>'
            f"{esc(_STATUS_TEXT[status])}</td>{''.join(cells)}</tr>"
        )
    return (
        '<table class="sortable"><thead><tr><th class="name">column</th><th class="name">kind</th>'
        f'<th class="name">status</th><th>p_value</th>{head}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _section(
    title: str, section_id: str, columns: Sequence[Mapping[str, Any]], verdict: tuple[str, str]
) -> str:
    header = (
        f'<h2 id="{section_id}">{esc(title)} <a class="top" href="#toc">↑ contents</a></h2>'
        f'<div class="banner sub {verdict[0]}">{esc(verdict[1])}</div>'
    )
    if not columns:
        return header + "<p class='muted'>None profiled.</p>"
    anchors = [f"{section_id}-{i}" for i in range(len(columns))]
    return (
        header
        + summary_table(columns, anchors)
        + "".join(column_card(c, a) for c, a in zip(columns, anchors, strict=True))
    )


def _toc(sections: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]]) -> str:
    items = []
    for title, section_id, columns in sections:
        links = "".join(
            f'<li><a href="#{section_id}-{i}"><span class="dot {column_status(c)}"></span>'
            f"{esc(c['name'])}</a></li>"
            for i, c in enumerate(columns)
        )
        items.append(
            f'<li><a href="#{section_id}">{esc(title)}</a> ({len(columns)})'
            + (f"<ul>{links}</ul>" if links else "")
            + "</li>"
        )
    return f'<nav class="toc" id="toc"><strong>Contents</strong><ul>{"".join(items)}</ul></nav>'


def render_html(report: Mapping[str, Any]) -> str:
    """The whole ``drift.html`` page of a ``drift.json`` report."""
    v = verdicts(report)
    predictions = sort_columns(report["predictions"])
    features = sort_columns(report["features"])
    sections = [("Predictions", "predictions", predictions), ("Features", "features", features)]
    banners = (
        f'<div class="banner {v["page"][0]}" id="verdict">{esc(v["page"][1])}: {esc(report["message"])}</div>'
        f'<div class="banner sub {v["predictions"][0]}">{esc(v["predictions"][1])} '
        '<a class="top" href="#predictions">predictions ↓</a></div>'
        f'<div class="banner sub {v["features"][0]}">{esc(v["features"][1])} '
        '<a class="top" href="#features">features ↓</a></div>'
    )
    rows = report["rows"]
    thresholds = report["thresholds"]
    limits = ", ".join(
        f"{esc(k)} &gt; {_fmt(val)}"
        for k, val in thresholds["default"].items()
        if val is not None and k != "alpha"
    )
    alpha = thresholds["default"].get("alpha")
    if alpha is not None:
        limits += f", and the difference is significant: p-value &lt; {_fmt(alpha)}"
    legend = (
        '<p class="legend muted">'
        f'<span class="sw" style="background:{REF_COLOR};opacity:.45"></span>reference'
        f'<span class="sw" style="background:#fef3e8;border:2px solid {CUR_COLOR}"></span>current'
        '<span class="sw" style="background:#fdecea;border-color:#c0392b"></span>drifted '
        "(over threshold and significant)"
        '<span class="sw" style="background:#fef5e7;border-color:#e0a526"></span>over threshold, '
        "not significant (not counted as drift)</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Drift report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Drift report</h1>"
        f"{banners}"
        f'<p class="muted">reference profile: {esc(report.get("reference_profile", ""))} '
        f"({_fmt(rows['reference'])} rows) · current rows: {_fmt(rows['current'])} · "
        f"created {esc(report.get('created_at', ''))}</p>"
        f'<p class="muted">A column drifts when a metric exceeds its threshold ({limits}); '
        f"the dataset drifts when more than {_fmt(thresholds['drift_share'])} of the features drift. "
        f"PSI floors empty-bin proportions at {_fmt(report.get('psi_epsilon'))}. "
        "Columns are ordered by status, then p-value (ascending), then PSI (descending); "
        "click a table header to sort.</p>"
        f"{legend}{_toc(sections)}"
        + "".join(_section(title, sid, cols, v[sid]) for title, sid, cols in sections)
        + f"<script>{_SORT_JS}</script></body></html>\n"
    )
