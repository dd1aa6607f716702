"""Reliability diagrams: a PNG drawn with Pillow and a self-contained HTML page.

The diagram shows, per equal-width confidence bin, the observed accuracy
(bars) against the diagonal of perfect calibration, before and after
calibration side by side. The HTML embeds the PNG (base64) and the metric
table, so it can be opened or attached anywhere without other files.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from transforms.calibration import DEFAULT_BINS, bin_statistics, confidence_and_correct

_PANEL = 360
_MARGIN = 48
_BEFORE = (214, 96, 77)
_AFTER = (67, 147, 195)


def _panel(draw: Any, x0: int, title: str, stats: Mapping[str, np.ndarray], color: tuple) -> None:
    y0 = _MARGIN
    size = _PANEL
    draw.rectangle([x0, y0, x0 + size, y0 + size], outline=(0, 0, 0))
    for t in range(0, 11, 2):
        frac = t / 10
        gx = x0 + int(frac * size)
        gy = y0 + size - int(frac * size)
        draw.line([gx, y0 + size, gx, y0 + size + 4], fill=(0, 0, 0))
        draw.text((gx - 8, y0 + size + 6), f"{frac:.1f}", fill=(0, 0, 0))
        draw.line([x0 - 4, gy, x0, gy], fill=(0, 0, 0))
        draw.text((x0 - 28, gy - 6), f"{frac:.1f}", fill=(0, 0, 0))
    edges = stats["edges"]
    for i in range(len(edges) - 1):
        if stats["count"][i] == 0:
            continue
        left = x0 + int(edges[i] * size) + 1
        right = x0 + int(edges[i + 1] * size) - 1
        top = min(y0 + size - int(float(stats["accuracy"][i]) * size), y0 + size - 1)
        draw.rectangle(
            [left, top, max(left, right), y0 + size - 1], fill=color, outline=(40, 40, 40)
        )
        conf_y = y0 + size - int(float(stats["confidence"][i]) * size)
        draw.line([left, conf_y, right, conf_y], fill=(0, 0, 0), width=2)
    draw.line([x0, y0 + size, x0 + size, y0], fill=(120, 120, 120), width=1)
    draw.text((x0, y0 - 30), title, fill=(0, 0, 0))
    draw.text((x0 + size // 2 - 30, y0 + size + 22), "confidence", fill=(0, 0, 0))


def reliability_png(
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    report: Mapping[str, Any],
    n_bins: int = DEFAULT_BINS,
) -> bytes:
    """PNG bytes of the before/after reliability diagram.

    Args:
        before: Uncalibrated probabilities, ``(n,)`` or ``(n, k)``.
        after: Calibrated probabilities.
        labels: Class indices.
        report: ``{"before": {...}, "after": {...}}`` metric dicts for the titles.
        n_bins: Number of equal-width bins.
    """
    from PIL import Image, ImageDraw

    width = 2 * _PANEL + 3 * _MARGIN + 20
    height = _PANEL + 2 * _MARGIN + 30
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, (name, probs, color) in enumerate(
        (("before", before, _BEFORE), ("after", after, _AFTER))
    ):
        stats = bin_statistics(*confidence_and_correct(probs, labels), n_bins)
        m = report.get(name, {})
        title = (
            f"{name}: ECE {m.get('ece', float('nan')):.4f}  MCE {m.get('mce', float('nan')):.4f}"
        )
        _panel(draw, _MARGIN + 10 + i * (_PANEL + _MARGIN), title, stats, color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def reliability_html(png: bytes, report: Mapping[str, Any], title: str) -> str:
    """A self-contained HTML page: the diagram inline plus the before/after metric table."""
    rows = []
    for metric in ("ece", "mce", "brier", "nll"):
        b = report.get("before", {}).get(metric)
        a = report.get("after", {}).get(metric)
        rows.append(f"<tr><td>{metric.upper()}</td><td>{_fmt(b)}</td><td>{_fmt(a)}</td></tr>")
    encoded = base64.b64encode(png).decode("ascii")
    details = html.escape(
        ", ".join(f"{k}: {v}" for k, v in report.items() if k not in ("before", "after"))
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{details}</p>"
        "<table><tr><th>metric</th><th>before</th><th>after</th></tr>" + "".join(rows) + "</table>"
        f"<p><img alt='reliability diagram' src='data:image/png;base64,{encoded}'></p>"
        "<p>Bars: observed accuracy per confidence bin; black line: mean confidence in the bin; "
        "grey diagonal: perfect calibration.</p></body></html>\n"
    )


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.5f}"
