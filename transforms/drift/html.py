"""``drift.html``: one self-contained page (inline SVG, CSS and a few lines of JavaScript).

The page never loads anything: no network, no other files. Every string that
comes from the data or the configuration (column names, category values,
paths, messages) goes through
:func:`keras_batch_score.transforms.drift.html_status.esc` (:func:`html.escape`,
quotes included); element ids are built from positions, never from names.

Layout, top to bottom:

* a page banner with the overall verdict: red when the features drift as a
  dataset (more than ``drift_share`` of them), amber when only some columns
  drift (the predictions only, or features below the dataset share), green
  when no column drifts, grey without data; then one banner for the
  predictions and one for the features;
* a table of contents linking every section and every column card;
* **Predictions** first, then **Features**: each a sortable summary table
  (click a header) and one card per column.

Column status and order are in :mod:`keras_batch_score.transforms.drift.html_status`;
the charts in :mod:`keras_batch_score.transforms.drift.html_charts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keras_batch_score.transforms.drift.html_charts import column_chart
from keras_batch_score.transforms.drift.html_status import (
    CUR_COLOR,
    DRIFT,
    REF_COLOR,
    STATUS_RANK,
    STATUS_TEXT,
    WARN,
    column_status,
    esc,
    format_value,
    over_threshold,
    sort_columns,
    verdicts,
)

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
            limit = "-" if alpha is None else f"&lt; {format_value(alpha)}"
        else:
            limit = format_value(column["thresholds"].get(name))
        cls = _cell_class(column, name, over)
        attr = f' class="{cls}"' if cls else ""
        rows.append(
            f'<tr><td class="name">{esc(name)}</td><td{attr}>{format_value(value)}</td><td>{limit}</td></tr>'
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
        f'<tr><td class="name">{esc(k)}</td><td>{format_value(ref.get(k))}</td><td>{format_value(cur.get(k))}</td></tr>'
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
            f"(p = {format_value(column['metrics'].get('p_value'))})"
        )
    else:
        text = STATUS_TEXT[status]
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
            cells.append(f'<td{attr} data-v="{_data_v(value)}">{format_value(value)}</td>')
        rows.append(
            f'<tr class="{status}"><td class="name" data-v="{esc(c["name"])}">'
            f'<a href="#{anchor}">{esc(c["name"])}</a></td>'
            f'<td class="name" data-v="{esc(c["kind"])}">{esc(c["kind"])}</td>'
            f'<td class="name" data-v="{STATUS_RANK[status]}"><span class="dot {status}"></span>'
            f"{esc(STATUS_TEXT[status])}</td>{''.join(cells)}</tr>"
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
        f"{esc(k)} &gt; {format_value(val)}"
        for k, val in thresholds["default"].items()
        if val is not None and k != "alpha"
    )
    alpha = thresholds["default"].get("alpha")
    if alpha is not None:
        limits += f", and the difference is significant: p-value &lt; {format_value(alpha)}"
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
        f"({format_value(rows['reference'])} rows) · current rows: {format_value(rows['current'])} · "
        f"created {esc(report.get('created_at', ''))}</p>"
        f'<p class="muted">A column drifts when a metric exceeds its threshold ({limits}); '
        f"the dataset drifts when more than {format_value(thresholds['drift_share'])} of the features drift. "
        f"PSI floors empty-bin proportions at {format_value(report.get('psi_epsilon'))}. "
        "Columns are ordered by status, then p-value (ascending), then PSI (descending); "
        "click a table header to sort.</p>"
        f"{legend}{_toc(sections)}"
        + "".join(_section(title, sid, cols, v[sid]) for title, sid, cols in sections)
        + f"<script>{_SORT_JS}</script></body></html>\n"
    )
