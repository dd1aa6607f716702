"""The ``drift.json`` document, assembled from merged accumulators (pure).

:func:`build_report` turns the merged :class:`DriftAccumulator` into metrics
(:mod:`keras_batch_score.transforms.drift.metrics`), flags and histograms per
column, drifted columns first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_batch_score.transforms.drift import metrics as dm
from keras_batch_score.transforms.drift.histograms import DriftAccumulator, empty_moments
from keras_batch_score.transforms.drift.plan import FEATURE, DriftPlan, Target
from keras_batch_score.transforms.drift.profile_format import (
    NUMERIC,
    CategoricalStats,
    ColumnStats,
    NumericStats,
)

DRIFT_FORMAT = "keras-batch-score/drift"


DRIFT_VERSION = 1


def _current_summary(
    acc: DriftAccumulator, target: Target, shift: float
) -> dict[str, float | int | None]:
    m = acc.moments.get(target.name, empty_moments())
    nulls, n, s1, s2, lo, hi = m.tolist()
    out: dict[str, float | int | None] = {"count": int(n), "null_count": int(nulls)}
    if target.kind == NUMERIC:
        mean = shift + s1 / n if n else None
        var = max(0.0, s2 / n - (s1 / n) ** 2) if n else None
        out.update(
            mean=mean,
            std=None if var is None else var**0.5,
            min=lo if n else None,
            max=hi if n else None,
        )
    return out


def _reference_summary(stats: ColumnStats) -> dict[str, Any]:
    out: dict[str, Any] = {"count": stats.count, "null_count": stats.null_count}
    if isinstance(stats, NumericStats):
        out.update(mean=stats.mean, std=stats.std, min=stats.min, max=stats.max)
    return out


def column_report(
    target: Target, stats: ColumnStats, acc: DriftAccumulator, thresholds: dm.Thresholds
) -> dict[str, Any]:
    """Metrics, flags and histograms of one profiled column."""
    shift = stats.mean if isinstance(stats, NumericStats) else 0.0
    current = _current_summary(acc, target, shift)
    ref_counts = stats.slot_counts()
    cur_counts = acc.counts.get(target.name, np.zeros(target.num_slots, dtype=np.int64))
    limits = thresholds.for_feature(target.name)
    metrics: dict[str, float | None]
    if not cur_counts.sum() or not ref_counts.sum():
        names = dm.NUMERIC_METRICS if target.kind == NUMERIC else dm.CATEGORICAL_METRICS
        metrics = dict.fromkeys([*names, dm.P_VALUE])
        status = "no_data"
    elif isinstance(stats, NumericStats):
        metrics = dm.numeric_metrics(
            ref_counts,
            cur_counts,
            stats.edges,
            ref_mean=stats.mean,
            ref_std=stats.std,
            cur_mean=current["mean"],  # type: ignore[arg-type]
            cur_std=current["std"],  # type: ignore[arg-type]
            cur_min=current["min"],  # type: ignore[arg-type]
            cur_max=current["max"],  # type: ignore[arg-type]
        )
        status = "ok"
    else:
        metrics = dm.categorical_metrics(ref_counts, cur_counts)
        status = "ok"
    drifted_by = dm.flag_drift(metrics, limits)
    histogram: dict[str, Any] = {
        "reference": ref_counts.tolist(),
        "current": cur_counts.tolist(),
    }
    if isinstance(stats, NumericStats):
        histogram["edges"] = list(stats.edges)
        histogram["slots"] = "below, bins, above"
    else:
        assert isinstance(stats, CategoricalStats)
        histogram["values"] = list(stats.values)
        histogram["slots"] = "values, other"
    return {
        "name": target.name,
        "kind": target.kind,
        "status": status,
        "drift_detected": bool(drifted_by),
        "drifted_by": drifted_by,
        "metrics": {k: _round(v) for k, v in metrics.items()},
        "thresholds": {
            **{k: limits.get(k) for k in metrics if k != dm.P_VALUE},
            dm.ALPHA: limits.get(dm.ALPHA),
        },
        "reference": _reference_summary(stats),
        "current": {k: _round(v) if isinstance(v, float) else v for k, v in current.items()},
        "histogram": histogram,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def _sort_key(col: Mapping[str, Any]) -> tuple[bool, float, str]:
    metrics = col["metrics"]
    strength = max(
        (v for k, v in metrics.items() if v is not None and k != dm.P_VALUE), default=0.0
    )
    return (not col["drift_detected"], -strength, col["name"])


def build_report(
    acc: DriftAccumulator,
    plan: DriftPlan,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``drift.json`` document: per column and overall, drifted columns first."""
    profile = plan.profile
    features: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    shadow: list[dict[str, Any]] = []
    for t in plan.targets:
        section = profile.features if t.source == FEATURE else profile.predictions
        report = column_report(t, section[t.reference or t.name], acc, plan.thresholds)
        if t.reference:
            report["reference"] = t.reference
        (features if t.source == FEATURE else shadow if t.reference else predictions).append(report)
    features.sort(key=_sort_key)
    predictions.sort(key=_sort_key)
    drifted = [f["name"] for f in features if f["drift_detected"]]
    share, detected = dm.dataset_drift(len(drifted), len(features), plan.thresholds.drift_share)
    no_data = acc.rows == 0
    if no_data:
        message = "no rows were scored: there is no current data, so drift was not computed"
    else:
        message = (
            f"{len(drifted)} of {len(features)} features drifted (share {share:.2f}, "
            f"dataset drift when > {plan.thresholds.drift_share:g})"
        )
        if predictions:
            n_pred = sum(p["drift_detected"] for p in predictions)
            message += f"; {n_pred} of {len(predictions)} prediction columns drifted"
        if shadow:
            n_shadow = sum(p["drift_detected"] for p in shadow)
            message += f"; {n_shadow} of {len(shadow)} shadow prediction columns drifted"
    return {
        "format": DRIFT_FORMAT,
        "version": DRIFT_VERSION,
        "status": "no_data" if no_data else "ok",
        "message": message,
        "drift_detected": bool(detected),
        "dataset": {
            "features": len(features),
            "drifted_features": drifted,
            "drifted_share": round(share, 6),
            "drift_share": plan.thresholds.drift_share,
        },
        "prediction_drift_detected": any(p["drift_detected"] for p in predictions),
        "rows": {"reference": profile.rows, "current": acc.rows},
        "reference_profile": plan.profile_path,
        "psi_epsilon": dm.PSI_EPSILON,
        "thresholds": plan.thresholds.to_dict(),
        **({"run": dict(metadata)} if metadata else {}),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "features": features,
        "predictions": predictions,
        **({"shadow_predictions": shadow} if shadow else {}),
    }
