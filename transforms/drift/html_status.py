"""Column status, order and verdicts of the drift page, plus its colours and text escaping.

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

Every string that comes from the data or the configuration goes through
:func:`esc` (:func:`html.escape`, quotes included).
"""

from __future__ import annotations

import html
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


STATUS_RANK = {DRIFT: 0, WARN: 1, OK: 2, NO_DATA: 3}


STATUS_TEXT = {
    DRIFT: "drifted",
    WARN: "over threshold, not significant",
    OK: "no drift",
    NO_DATA: "no data",
}


def esc(value: Any) -> str:
    """HTML-escapes any value's text (quotes included, safe in attributes)."""
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """A metric or count as page text: ``-`` for None, ``yes``/``no``, 4 significant digits, thousands."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return esc(value)


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
        STATUS_RANK[column_status(column)],
        p is None,
        0.0 if p is None else p,
        effect is None,
        0.0 if effect is None else -effect,
        str(column["name"]),
    )


def sort_columns(columns: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The columns in the page's order (see the module docstring)."""
    return sorted(columns, key=sort_key)


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
