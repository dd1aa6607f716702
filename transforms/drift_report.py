"""``drift.html``: one self-contained page (inline SVG, inline CSS, no scripts, no network).

Every string that comes from the data or the configuration (column names,
category values, paths) goes through :func:`html.escape`. Drifted columns are
listed first and highlighted.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

REF_COLOR = "#4c78a8"
CUR_COLOR = "#f58518"
DRIFT_COLOR = "#c0392b"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 8px}h2{margin:28px 0 8px}
.banner{padding:12px 16px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.drift{background:#fdecea;border:1px solid #c0392b;color:#8e2a1f}
.banner.ok{background:#eaf7ee;border:1px solid #2e8b57;color:#1e5e3a}
.banner.nodata{background:#f2f2f2;border:1px solid #999;color:#444}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td.name,th.name{text-align:left}
tr.drift td{background:#fdecea}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:12px 0}
.card.drift{border:2px solid #c0392b;box-shadow:0 0 0 3px #fdecea}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;margin-left:8px;color:#fff}
.badge.drift{background:#c0392b}.badge.ok{background:#2e8b57}.badge.nodata{background:#888}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.flex{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.muted{color:#666;font-size:13px}
td.over{color:#c0392b;font-weight:700}
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


def slot_labels(column: Mapping[str, Any]) -> list[str]:
    """Human-readable labels of a column's histogram slots (not yet escaped)."""
    hist = column["histogram"]
    if "edges" in hist:
        e = [f"{x:.3g}" for x in hist["edges"]]
        inner = [f"[{a}, {b})" for a, b in itertools.pairwise(e)]
        if inner:
            inner[-1] = inner[-1][:-1] + "]"
        return [f"< {e[0]}", *inner, f"> {e[-1]}"]
    return [str(v) for v in hist["values"]] + ["(other)"]


def histogram_svg(
    labels: Sequence[str], reference: Sequence[int], current: Sequence[int], *, title: str
) -> str:
    """Overlaid bar chart of the two histograms as proportions (inline SVG)."""
    width, height, pad_left, pad_bottom, pad_top = 560, 220, 40, 60, 10
    n = max(len(labels), 1)
    ref_total = sum(reference) or 1
    cur_total = sum(current) or 1
    p = [c / ref_total for c in reference]
    q = [c / cur_total for c in current]
    top = max([*p, *q, 1e-9])
    plot_h = height - pad_bottom - pad_top
    slot_w = (width - pad_left - 10) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 10}" y2="{pad_top + plot_h}" stroke="#999"/>',
        f'<text x="{pad_left - 4}" y="{pad_top + 8}" font-size="10" text-anchor="end">{top:.0%}</text>',
        f'<text x="{pad_left - 4}" y="{pad_top + plot_h}" font-size="10" text-anchor="end">0%</text>',
    ]
    for i, label in enumerate(labels):
        x = pad_left + i * slot_w
        for share, color, offset in ((p[i], REF_COLOR, 0.1), (q[i], CUR_COLOR, 0.3)):
            h = plot_h * share / top
            parts.append(
                f'<rect x="{x + slot_w * offset:.1f}" y="{pad_top + plot_h - h:.1f}" '
                f'width="{slot_w * 0.6:.1f}" height="{h:.1f}" fill="{color}" fill-opacity="0.6">'
                f"<title>{esc(label)}: reference {p[i]:.1%}, "
                f"current {q[i]:.1%}</title></rect>"
            )
        short = label if len(label) <= 14 else label[:13] + "…"
        cx = x + slot_w / 2
        ty = pad_top + plot_h + 12
        parts.append(
            f'<text x="{cx:.1f}" y="{ty}" font-size="9" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {ty})">{esc(short)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _metrics_table(column: Mapping[str, Any]) -> str:
    rows = []
    flagged = set(column["drifted_by"])
    for name, value in column["metrics"].items():
        if name == "p_value":  # significance guard: drift needs p < alpha
            alpha = column["thresholds"].get("alpha")
            limit = "-" if alpha is None else f"&lt; {_fmt(alpha)}"
        else:
            limit = _fmt(column["thresholds"].get(name))
        cls = ' class="over"' if name in flagged else ""
        rows.append(
            f'<tr><td class="name">{esc(name)}</td><td{cls}>{_fmt(value)}</td><td>{limit}</td></tr>'
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
    if column["status"] == "no_data":
        return '<span class="badge nodata">no data</span>'
    if column["drift_detected"]:
        return f'<span class="badge drift">DRIFT ({esc(", ".join(column["drifted_by"]))})</span>'
    return '<span class="badge ok">no drift</span>'


def column_card(column: Mapping[str, Any]) -> str:
    """One column: name, badge, overlaid histograms, metrics and summary stats."""
    hist = column["histogram"]
    svg = histogram_svg(
        slot_labels(column),
        hist["reference"],
        hist["current"],
        title=f"{column['name']}: reference vs current",
    )
    cls = "card drift" if column["drift_detected"] else "card"
    return (
        f'<div class="{cls}"><h3>{esc(column["name"])} <span class="muted">'
        f"({esc(column['kind'])})</span>{_badge(column)}</h3>"
        f'<div class="flex"><div>{svg}</div><div>{_metrics_table(column)}{_stats_table(column)}</div></div>'
        "</div>"
    )


def _summary_table(columns: Sequence[Mapping[str, Any]]) -> str:
    metric_names = list(dict.fromkeys(k for c in columns for k in c["metrics"]))
    head = "".join(f"<th>{esc(m)}</th>" for m in metric_names)
    rows = []
    for c in columns:
        cells = "".join(
            f"<td{' class=over' if m in c['drifted_by'] else ''}>{_fmt(c['metrics'].get(m))}</td>"
            for m in metric_names
        )
        cls = ' class="drift"' if c["drift_detected"] else ""
        rows.append(
            f'<tr{cls}><td class="name">{esc(c["name"])}</td><td class="name">{esc(c["kind"])}</td>'
            f"<td>{_fmt(c['drift_detected'])}</td>{cells}</tr>"
        )
    return (
        f'<table><tr><th class="name">column</th><th class="name">kind</th><th>drift</th>{head}</tr>'
        + "".join(rows)
        + "</table>"
    )


def _section(title: str, columns: Sequence[Mapping[str, Any]]) -> str:
    if not columns:
        return f"<h2>{esc(title)}</h2><p class='muted'>None profiled.</p>"
    return (
        f"<h2>{esc(title)}</h2>"
        + _summary_table(columns)
        + "".join(column_card(c) for c in columns)
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The whole ``drift.html`` page of a ``drift.json`` report."""
    if report["status"] == "no_data":
        banner = f'<div class="banner nodata">No data: {esc(report["message"])}</div>'
    elif report["drift_detected"]:
        banner = f'<div class="banner drift">Dataset drift detected: {esc(report["message"])}</div>'
    else:
        banner = f'<div class="banner ok">No dataset drift: {esc(report["message"])}</div>'
    pred = (
        "<p><strong>Prediction drift detected.</strong></p>"
        if report.get("prediction_drift_detected")
        else ""
    )
    rows = report["rows"]
    thresholds = report["thresholds"]
    limits = ", ".join(
        f"{esc(k)} &gt; {_fmt(v)}"
        for k, v in thresholds["default"].items()
        if v is not None and k != "alpha"
    )
    alpha = thresholds["default"].get("alpha")
    if alpha is not None:
        limits += f", and the difference is significant: p-value &lt; {_fmt(alpha)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Drift report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Drift report</h1>"
        f"{banner}{pred}"
        f'<p class="muted">reference profile: {esc(report.get("reference_profile", ""))} '
        f"({_fmt(rows['reference'])} rows) · current rows: {_fmt(rows['current'])} · "
        f"created {esc(report.get('created_at', ''))}</p>"
        f'<p class="muted">A column drifts when a metric exceeds its threshold ({limits}); '
        f"the dataset drifts when more than {_fmt(thresholds['drift_share'])} of the features drift. "
        f"PSI floors empty-bin proportions at {_fmt(report.get('psi_epsilon'))}.</p>"
        f'<p class="legend"><span style="background:{REF_COLOR};opacity:.6"></span>reference'
        f'<span style="background:{CUR_COLOR};opacity:.6"></span>current</p>'
        + _section("Features", report["features"])
        + _section("Predictions", report["predictions"])
        + "</body></html>\n"
    )
