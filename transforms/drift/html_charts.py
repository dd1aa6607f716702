"""The drift page's inline SVG histograms and their axis ticks.

Numeric histograms are drawn on the value scale: each bar spans its bin's
true width between the reference quantile edges; values below the reference
minimum and above its maximum are two narrow end bars labelled ``< min`` and
``> max``. Bar height is the share of rows in the bin (reference quantile
bins hold about equal shares, so the reference is about flat and the current
data's departures stand out). Categorical columns are horizontal bar charts
of their top categories plus ``(other)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from keras_batch_score.transforms.drift.html_status import CUR_COLOR, REF_COLOR, esc


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
