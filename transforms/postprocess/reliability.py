"""The calibration report: one self-contained HTML page with an inline SVG reliability diagram.

The diagram plots, per equal-width confidence bin, the observed frequency
(binary: share of positives; multiclass: top-class accuracy) against the mean
predicted probability, before and after calibration on one chart, with the
diagonal of perfect calibration. Every point's size and opacity grow with its
bin's row count, so a bin of one or two rows is a faint dot, never a full bar;
the counts are in the point's tooltip, in the confidence histogram under the
chart (one bar per bin and series, labelled with its count) and in the per-bin
table. "After" is whatever the report's ``after`` metrics were computed on
(cross-fitted, out-of-fold probabilities; the page says which).

No scripts, no network, no other files; every value from the data or the
configuration is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_batch_score.transforms.postprocess.calibration_metrics import (
    DEFAULT_BINS,
    bin_statistics,
    confidence_and_correct,
)

BEFORE_COLOR = "#d6604d"
AFTER_COLOR = "#2166ac"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 8px}h2{margin:24px 0 8px}
table{border-collapse:collapse;margin:8px 0;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#f0f0f0}
td.name,th.name{text-align:left}
.muted{color:#666;font-size:13px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:12px 0;display:inline-block}
.note{background:#eef4fb;border:1px solid #9cbbe0;border-radius:6px;padding:8px 14px;margin:8px 0;display:inline-block}
.legend span{display:inline-block;width:12px;height:12px;border-radius:50%;margin:0 4px 0 12px;vertical-align:middle}
td.few{color:#999}
"""


def esc(value: Any) -> str:
    """HTML-escapes any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def series_statistics(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS
) -> dict[str, np.ndarray]:
    """Per-bin count, mean confidence and observed frequency of one series."""
    return bin_statistics(*confidence_and_correct(probs, labels), n_bins)


def point_style(count: float, max_count: float) -> tuple[float, float]:
    """(radius px, opacity) of a bin's point: both grow with the square root of its share."""
    weight = math.sqrt(count / max_count) if max_count > 0 else 0.0
    return 2.5 + 5.5 * weight, 0.15 + 0.85 * weight


def _ticks(step: float = 0.2) -> list[float]:
    return [round(i * step, 10) for i in range(round(1 / step) + 1)]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(value))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= value)


def reliability_svg(
    series: Mapping[str, Mapping[str, np.ndarray]],
    *,
    binary: bool,
    title: str = "reliability diagram",
) -> str:
    """The reliability diagram and the confidence histogram under it, as one inline SVG.

    Args:
        series: ``{"before": stats, "after": stats}`` from :func:`series_statistics`.
        binary: Label the axes for a positive-class probability (else top-class confidence).
        title: Accessible title.
    """
    width, left, right, top = 600, 64, 20, 16
    size = width - left - right
    gap, hist_h, bottom = 46, 130, 48
    height = top + size + gap + hist_h + bottom
    hist_top = top + size + gap
    colors = {"before": BEFORE_COLOR, "after": AFTER_COLOR}
    max_count = max(float(np.max(s["count"], initial=0)) for s in series.values()) or 1.0

    def x_of(v: float) -> float:
        return left + v * size

    def y_of(v: float) -> float:
        return top + size - v * size

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" '
        'font-family="system-ui,sans-serif">',
        f"<title>{esc(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="#fff" stroke="#555"/>',
    ]
    for t in _ticks():
        parts.append(
            f'<line x1="{x_of(t):.1f}" y1="{top}" x2="{x_of(t):.1f}" y2="{top + size}" stroke="#eee"/>'
            f'<line x1="{left}" y1="{y_of(t):.1f}" x2="{left + size}" y2="{y_of(t):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y_of(t) + 4:.1f}" font-size="12" text-anchor="end">{t:.1f}</text>'
        )
    parts.append(
        f'<line class="diagonal" x1="{x_of(0)}" y1="{y_of(0)}" x2="{x_of(1)}" y2="{y_of(1)}" '
        'stroke="#888" stroke-dasharray="5 4"><title>perfect calibration</title></line>'
    )
    for name, stats in series.items():
        filled = np.flatnonzero(stats["count"] > 0)
        color = colors.get(name, "#333")
        points = " ".join(
            f"{x_of(float(stats['confidence'][i])):.1f},{y_of(float(stats['accuracy'][i])):.1f}"
            for i in filled
        )
        if len(filled) > 1:
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5" '
                'stroke-opacity="0.55"/>'
            )
        for i in filled:
            count = float(stats["count"][i])
            radius, opacity = point_style(count, max_count)
            conf, acc = float(stats["confidence"][i]), float(stats["accuracy"][i])
            parts.append(
                f'<circle class="point {esc(name)}" data-count="{int(count)}" cx="{x_of(conf):.1f}" '
                f'cy="{y_of(acc):.1f}" r="{radius:.1f}" fill="{color}" fill-opacity="{opacity:.3f}" '
                f'stroke="{color}"><title>{esc(name)}: {int(count):,} rows, mean confidence '
                f"{conf:.3f}, observed {acc:.3f}</title></circle>"
            )
    x_label = (
        "predicted probability of the positive class"
        if binary
        else "confidence (top-class probability)"
    )
    y_label = "observed share of positives" if binary else "accuracy (top class is right)"
    parts.append(
        f'<text x="{left + size / 2}" y="{top + size + 34}" font-size="13" text-anchor="middle">'
        f"{x_label}</text>"
        f'<text x="16" y="{top + size / 2}" font-size="13" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + size / 2})">{y_label}</text>'
    )
    for t in _ticks():
        parts.append(
            f'<text x="{x_of(t):.1f}" y="{top + size + 16}" font-size="12" text-anchor="middle">{t:.1f}</text>'
        )
    # Confidence histogram: rows per bin, one bar per series, the count above it.
    edges = next(iter(series.values()))["edges"]
    y_max = _nice_max(max_count)
    hist_base = hist_top + hist_h
    parts.append(
        f'<rect x="{left}" y="{hist_top}" width="{size}" height="{hist_h}" fill="#fff" stroke="#555"/>'
        f'<text x="{left - 6}" y="{hist_top + 4}" font-size="11" text-anchor="end">{y_max:,.0f}</text>'
        f'<text x="{left - 6}" y="{hist_base + 4}" font-size="11" text-anchor="end">0</text>'
        f'<line x1="{left}" y1="{hist_base - hist_h / 2}" x2="{left + size}" y2="{hist_base - hist_h / 2}" '
        'stroke="#eee"/>'
        f'<text x="{left - 6}" y="{hist_base - hist_h / 2 + 4}" font-size="11" text-anchor="end">'
        f"{y_max / 2:,.0f}</text>"
        f'<text x="16" y="{hist_top + hist_h / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 16 {hist_top + hist_h / 2})">rows</text>'
    )
    n = len(series)
    for b in range(len(edges) - 1):
        x0, x1 = x_of(float(edges[b])), x_of(float(edges[b + 1]))
        bar_w = (x1 - x0 - 2) / max(n, 1)
        for j, (name, stats) in enumerate(series.items()):
            count = int(stats["count"][b])
            h = hist_h * count / y_max
            bx = x0 + 1 + j * bar_w
            parts.append(
                f'<rect class="hist {esc(name)}" x="{bx:.1f}" y="{hist_base - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colors.get(name, "#333")}" fill-opacity="0.7">'
                f"<title>{esc(name)}: {count:,} rows in ({edges[b]:.2f}, {edges[b + 1]:.2f}]</title></rect>"
            )
            if count:
                tx, ty = bx + bar_w / 2 + 3, max(hist_base - h - 3, hist_top + 24)
                parts.append(
                    f'<text class="count" x="{tx:.1f}" y="{ty:.1f}" font-size="9" fill="#333" '
                    f'transform="rotate(-90 {tx:.1f} {ty:.1f})">{count:,}</text>'
                )
    parts.append(
        f'<text x="{left + size / 2}" y="{hist_base + 18}" font-size="12" text-anchor="middle">'
        f"{x_label}: rows per bin</text></svg>"
    )
    return "".join(parts)


def _bin_table(series: Mapping[str, Mapping[str, np.ndarray]], max_count: float) -> str:
    names = list(series)
    edges = series[names[0]]["edges"]
    head = "".join(f'<th colspan="3">{esc(n)}</th>' for n in names)
    sub = "<th>rows</th><th>confidence</th><th>observed</th>" * len(names)
    rows = []
    for b in range(len(edges) - 1):
        cells = []
        for n in names:
            s = series[n]
            count = int(s["count"][b])
            few = ' class="few"' if count and count < max(5, 0.01 * max_count) else ""
            cells.append(
                f"<td{few}>{count:,}</td><td{few}>{_num(float(s['confidence'][b]), 3)}</td>"
                f"<td{few}>{_num(float(s['accuracy'][b]), 3)}</td>"
            )
        rows.append(
            f'<tr><td class="name">({edges[b]:.2f}, {edges[b + 1]:.2f}]</td>{"".join(cells)}</tr>'
        )
    return (
        f'<table><thead><tr><th class="name" rowspan="2">bin</th>{head}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_DETAILS = ("model", "input", "label_column", "rows", "rows_failed", "bins", "after_evaluation")


def reliability_html(
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    report: Mapping[str, Any],
    title: str,
    n_bins: int = DEFAULT_BINS,
) -> str:
    """The self-contained calibration report page.

    Args:
        before: Uncalibrated probabilities, ``(n,)`` or ``(n, k)``.
        after: Calibrated probabilities the ``after`` metrics were computed on
            (out-of-fold when cross-fitted).
        labels: Class indices.
        report: The calibration report (``before``, ``after``, ``after_evaluation``, ...).
        title: Page title.
        n_bins: Equal-width bins.
    """
    binary = np.asarray(before).ndim == 1
    series = {
        "before": series_statistics(before, labels, n_bins),
        "after": series_statistics(after, labels, n_bins),
    }
    max_count = max(float(s["count"].max(initial=0)) for s in series.values())
    evaluation = str(report.get("after_evaluation", "in-sample"))
    in_sample = report.get("after_in_sample", {})
    metric_rows = "".join(
        f'<tr><td class="name">{m.upper()}</td><td>{_num(report.get("before", {}).get(m), 5)}</td>'
        f"<td>{_num(report.get('after', {}).get(m), 5)}</td>"
        + (f"<td>{_num(in_sample.get(m), 5)}</td>" if in_sample else "")
        + "</tr>"
        for m in ("ece", "mce", "brier", "nll")
    )
    in_sample_head = "<th>after (in-sample, optimistic)</th>" if in_sample else ""
    details = "".join(
        f'<tr><td class="name">{esc(k)}</td><td class="name">{esc(report[k])}</td></tr>'
        for k in _DETAILS
        if k in report
    )
    svg = reliability_svg(series, binary=binary, title=f"{title}: reliability diagram")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<div class="note">"After" metrics and the after series are <strong>{esc(evaluation)}</strong>'
        + (
            ": each fold calibrated by a fit on the other folds, metrics on the out-of-fold "
            "probabilities. The saved parameters are fitted on all rows."
            if evaluation.startswith("cross-fitted")
            else "."
        )
        + "</div>"
        f"<table>{details}</table>"
        f'<table><tr><th class="name">metric</th><th>before</th><th>after ({esc(evaluation)})</th>'
        f"{in_sample_head}</tr>{metric_rows}</table>"
        f'<h2>Reliability diagram</h2><p class="legend muted"><span style="background:{BEFORE_COLOR}">'
        f'</span>before<span style="background:{AFTER_COLOR}"></span>after ({esc(evaluation)}) · '
        "point size and opacity grow with the bin's row count (hover for counts) · "
        "dashed: perfect calibration</p>"
        f'<div class="card">{svg}</div>'
        f"<h2>Bins</h2>{_bin_table(series, max_count)}"
        '<p class="muted">Grey rows: bins with fewer than 5 rows (or under 1% of the largest bin); '
        "their observed share is noise.</p></body></html>\n"
    )
