"""Drift of the scored data against a reference profile, computed inside the pipeline.

:class:`HistogramFn` is a mergeable ``CombineFn`` over columnar batches
(:class:`ScoringBatch` or Arrow tables): each batch adds, with a few numpy /
pyarrow calls per column, its counts on the reference bins (plus below- and
above-range slots) or top categories (plus ``other``), its null count and
shifted moments. Accumulators only hold small arrays and merge by addition,
so any runner can combine them in any grouping. :class:`ComputeDrift` turns
the merged counts into metrics (:mod:`keras_batch_score.transforms.drift.metrics`) and writes
``drift.json`` and ``drift.html`` from a pipeline step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import format_names
from keras_batch_score.transforms.drift import metrics as dm
from keras_batch_score.transforms.drift.profile_format import (
    CATEGORICAL,
    NUMERIC,
    CategoricalStats,
    ColumnStats,
    NumericStats,
    Profile,
    ProfileError,
    category_strings,
    load_profile,
)
from keras_batch_score.transforms.model.tensors import TensorInfo

DRIFT_FORMAT = "keras-batch-score/drift"
DRIFT_VERSION = 1
DRIFT_JSON = "drift.json"
DRIFT_HTML = "drift.html"
FEATURE = "feature"
PREDICTION = "prediction"


class DriftDetectedError(RuntimeError):
    """Dataset drift was detected and ``--fail-on-drift`` is set (raised after all outputs are written)."""


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """One profiled column and where its values come from in a batch.

    Attributes:
        name: Name in the profile and in the report.
        source: ``feature`` (a table column) or ``prediction`` (a model output).
        column: Table column, or model output name for predictions.
        index: Position in a vector-valued prediction, else None.
        kind: ``numeric`` or ``categorical``.
        edges: Numeric bin edges.
        values: Categorical top values.
        reference: The profile entry it is compared with when that differs from
            ``name`` (a shadow model's prediction is compared with the reference
            prediction, see :func:`with_shadow_targets`).
    """

    name: str
    source: str
    column: str
    index: int | None
    kind: str
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    reference: str = ""

    @property
    def num_slots(self) -> int:
        return len(self.edges) + 1 if self.kind == NUMERIC else len(self.values) + 1


def prediction_columns(outputs: Sequence[TensorInfo]) -> dict[str, tuple[str, int | None]]:
    """Profiled prediction names -> (model output name, position or None).

    Names follow the predictions file: ``prediction`` for a single output,
    ``prediction_<output>`` for several; a vector output of width k gives
    ``<name>[0]`` ... ``<name>[k-1]``. Outputs that are not 1-D are skipped.
    """
    out: dict[str, tuple[str, int | None]] = {}
    for info in outputs:
        base = "prediction" if len(outputs) == 1 else f"prediction_{info.name}"
        width = info.width
        if width == 1:
            out[base] = (info.name, None)
        elif width is not None:
            for j in range(width):
                out[f"{base}[{j}]"] = (info.name, j)
    return out


def target_for(
    name: str, source: str, column: str, index: int | None, stats: ColumnStats
) -> Target:
    """The :class:`Target` binning ``column`` like ``stats``."""
    if isinstance(stats, NumericStats):
        return Target(name, source, column, index, NUMERIC, edges=stats.edges)
    return Target(name, source, column, index, CATEGORICAL, values=stats.values)


@dataclasses.dataclass(frozen=True)
class DriftPlan:
    """A loaded, checked reference profile and what to accumulate while scoring."""

    profile: Profile
    profile_path: str
    targets: tuple[Target, ...]
    thresholds: dm.Thresholds

    @property
    def feature_columns(self) -> list[str]:
        """Input columns the drift step reads (they must reach the scored batches)."""
        return [t.column for t in self.targets if t.source == FEATURE]


def plan_drift(
    profile_path: str,
    schema: pa.Schema,
    outputs: Sequence[TensorInfo],
    *,
    thresholds: Sequence[str] = (),
    drift_share: float = dm.DEFAULT_DRIFT_SHARE,
    reserved: Sequence[str] = (),
) -> DriftPlan:
    """Loads the profile and checks it against the input schema and the model outputs.

    Args:
        profile_path: The profile JSON.
        schema: Input schema of the scoring job.
        outputs: The model's outputs.
        thresholds: ``metric=value`` / ``feature:metric=value`` overrides.
        drift_share: Dataset-level drift share.
        reserved: Output column names an input column must not shadow.

    Raises:
        ProfileError: if the profile is missing, invalid, or names a column the
            input does not have (or has with an incompatible type).
    """
    profile = load_profile(profile_path)
    parsed = dm.parse_thresholds(thresholds, drift_share)
    targets: list[Target] = []
    for name, stats in profile.features.items():
        if name not in schema.names:
            raise ProfileError(
                f"reference profile {profile_path} describes column {name!r}, which is not in the input "
                f"(columns: {format_names(schema.names)}); profile the same kind of data you score"
            )
        if name in reserved:
            raise ProfileError(
                f"profiled column {name!r} has the name of an output column; rename it in the input"
            )
        t = schema.field(name).type
        numeric_ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        if isinstance(stats, NumericStats) and not numeric_ok:
            raise ProfileError(
                f"reference profile {profile_path}: column {name!r} is numeric in the profile but has type {t} in the input"
            )
        targets.append(target_for(name, FEATURE, name, None, stats))
    available = prediction_columns(outputs)
    for name, stats in profile.predictions.items():
        if name not in available:
            raise ProfileError(
                f"reference profile {profile_path} describes prediction {name!r}, but this model's prediction "
                f"columns are {format_names(sorted(available))}; profile with the same model (batch-score profile --model)"
            )
        output, index = available[name]
        targets.append(target_for(name, PREDICTION, output, index, stats))
    unknown = sorted(set(parsed.per_feature) - {t.name for t in targets})
    if unknown:
        raise ProfileError(
            f"drift thresholds name {unknown}, which the reference profile does not describe"
        )
    return DriftPlan(profile, profile_path, tuple(targets), parsed)


def with_shadow_targets(plan: DriftPlan, shadow_key: Mapping[str, str]) -> DriftPlan:
    """``plan`` plus, per profiled prediction, the shadow model's same output on the same bins.

    ``prediction`` gives ``prediction_shadow`` (``prediction[1]`` gives
    ``prediction_shadow[1]``), compared with the reference's ``prediction``
    and reported under ``shadow_predictions`` in ``drift.json`` (not counted
    in ``prediction_drift_detected``).

    Args:
        plan: The drift plan.
        shadow_key: Model output name -> the key of the shadow model's output in the batches.
    """
    extra = []
    for t in plan.targets:
        if t.source != PREDICTION or t.column not in shadow_key:
            continue
        base, bracket, rest = t.name.partition("[")
        name = f"{base}_shadow{bracket}{rest}"
        extra.append(
            dataclasses.replace(t, name=name, column=shadow_key[t.column], reference=t.name)
        )
    return dataclasses.replace(plan, targets=(*plan.targets, *extra))


# --------------------------------------------------------------------------- accumulation


@dataclasses.dataclass
class DriftAccumulator:
    """Mergeable drift state: per target, slot counts and ``[nulls, n, s1, s2, min, max]``.

    ``s1`` and ``s2`` are sums of ``x - shift`` and ``(x - shift)^2`` over the
    finite values, with ``shift`` the reference mean, which keeps them exact
    enough to merge in any order.
    """

    rows: int = 0
    counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    moments: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def merge(self, other: DriftAccumulator) -> DriftAccumulator:
        """Adds ``other`` into this accumulator (in place) and returns it."""
        self.rows += other.rows
        for name, c in other.counts.items():
            mine = self.counts.get(name)
            self.counts[name] = c.copy() if mine is None else mine + c
        for name, m in other.moments.items():
            mine = self.moments.get(name)
            if mine is None:
                self.moments[name] = m.copy()
            else:
                mine[:4] += m[:4]
                mine[4] = min(mine[4], m[4])
                mine[5] = max(mine[5], m[5])
        return self


def _empty_moments() -> np.ndarray:
    return np.array([0.0, 0.0, 0.0, 0.0, np.inf, -np.inf])


def batch_parts(
    batch: ScoringBatch | pa.Table,
) -> tuple[pa.Table, Mapping[str, np.ndarray]]:
    """(table, predictions) of a ScoringBatch or a bare Arrow table."""
    if isinstance(batch, pa.Table):
        return batch, {}
    return batch.table, batch.predictions


def column_values(
    table: pa.Table, predictions: Mapping[str, np.ndarray], target: Target
) -> np.ndarray:
    """Raw float32 or float64 values of a numeric target in one batch, nulls as NaN.

    Float columns without nulls are not copied; integers, decimals and
    half floats are converted to float64 (nulls become NaN on the way).
    """
    if target.source == PREDICTION:
        values = np.asarray(predictions[target.column])
        if target.index is not None:
            values = values.reshape(len(values), -1)[:, target.index]
        values = values.reshape(-1)
    else:
        col = table.column(target.column)
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_decimal(arr.type):  # Python Decimals: float() rounds correctly
            return _decimal_values(arr)
        values = arr.to_numpy(zero_copy_only=False)
    if values.dtype != np.float32 and values.dtype != np.float64:
        values = values.astype(np.float64)
    return values


def _decimal_values(arr: pa.Array) -> np.ndarray:
    values = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
    if arr.null_count:
        values[arr.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return values


@functools.lru_cache(maxsize=1024)
def _thresholds(edges: tuple[float, ...], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds ``lt``, ``le`` of ``dtype`` with ``x < e <=> x < lt`` and ``x <= e <=> x <= le``.

    For float64 values they are the edges; for float32 values they are the
    float32 neighbours of each (float64) edge, so comparing in float32 gives
    the same answer as comparing the exact values in float64. Cached: the
    reference edges are fixed for a whole job.
    """
    e = np.asarray(edges, dtype=np.float64)
    if dtype != "float32":
        return e, e
    with np.errstate(over="ignore"):
        near = e.astype(np.float32)
    wide = near.astype(np.float64)
    lt = np.where(wide < e, np.nextafter(near, np.float32(np.inf)), near)
    le = np.where(wide > e, np.nextafter(near, np.float32(-np.inf)), near)
    return lt, le


def _slot_counts(values: np.ndarray, edges: tuple[float, ...], valid: int) -> np.ndarray:
    """Counts on the ``k + 2`` slots of ``values`` (``valid`` of them not NaN; NaN in no slot)."""
    k = len(edges) - 1
    if k > 31:  # many bins: one binary search per value (NaN sorts last, past the guard)
        e = np.asarray(edges, dtype=np.float64)
        guard = np.append(e[:-1], [np.nextafter(e[-1], np.inf), np.nan])
        idx = np.searchsorted(guard, values, side="right")
        return np.bincount(idx, minlength=k + 3)[: k + 2].astype(np.int64)
    # Few bins: one vectorized comparison pass per edge beats a binary search per value.
    lt, le = _thresholds(edges, values.dtype.name)
    # Cumulative counts below e_0 ... e_{k-1}, then up to and including e_k.
    cum = [np.count_nonzero(values < t) for t in lt[:-1]]
    cum.append(np.count_nonzero(values <= le[-1]))
    return np.diff(np.asarray([0, *cum, valid], dtype=np.int64))


def numeric_slots(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts on ``[below, [e0,e1), ..., [e_{k-1}, e_k], above]`` (NaN values are not counted)."""
    values = np.asarray(values)
    if values.dtype != np.float32 and values.dtype != np.float64:
        values = values.astype(np.float64)
    valid = values.size - int(np.count_nonzero(np.isnan(values)))
    return _slot_counts(values, tuple(float(e) for e in edges), valid)


def numeric_moments(values: np.ndarray, shift: float) -> tuple[np.ndarray, int]:
    """(``[nulls, n, s1, s2, min, max]`` of the finite values, count of NaN) of one batch column.

    NaN counts as null; infinities are neither null nor in the moments (they
    fall in the out-of-range slots). One min/max pass proves the common case
    (all finite), which then needs no mask.
    """
    lo = values.min(initial=np.inf)
    hi = values.max(initial=-np.inf)
    nans = 0
    finite = values
    if not (np.isfinite(lo) and np.isfinite(hi)) and values.size:
        nans = int(np.count_nonzero(np.isnan(values)))
        finite = values[np.isfinite(values)]
        lo = finite.min(initial=np.inf)
        hi = finite.max(initial=-np.inf)
    d = finite.astype(np.float64)  # always a copy: squared in place below
    d -= shift
    s1 = d.sum()
    np.square(d, out=d)
    return np.array([nans, finite.size, s1, d.sum(), lo, hi], dtype=np.float64), nans


@functools.lru_cache(maxsize=256)
def _value_set(categories: tuple[str, ...]) -> pa.Array:
    return pa.array(list(categories), pa.string())


def categorical_slots(values: pa.Array, categories: Sequence[str]) -> tuple[np.ndarray, int]:
    """(counts on ``[categories..., other]``, nulls) of a string array."""
    nulls = values.null_count
    k = len(categories)
    idx = pc.index_in(values, value_set=_value_set(tuple(categories)))  # null: null or unseen
    idx = idx.fill_null(k).to_numpy(zero_copy_only=False)
    counts = np.bincount(idx, minlength=k + 1).astype(np.int64)
    counts[k] -= nulls
    return counts, nulls


def accumulate(
    batch: ScoringBatch | pa.Table, targets: Sequence[Target], shifts: Mapping[str, float]
) -> DriftAccumulator:
    """The drift accumulator of one batch (whole-column numpy / pyarrow calls, no copies
    of clean float columns)."""
    table, predictions = batch_parts(batch)
    acc = DriftAccumulator(rows=table.num_rows)
    if not table.num_rows:
        return acc
    for t in targets:
        if t.source == PREDICTION and t.column not in predictions:
            continue  # not scored by this step (e.g. a profile without --model)
        if t.kind == NUMERIC:
            values = column_values(table, predictions, t)
            moments, nans = numeric_moments(values, shifts.get(t.reference or t.name, 0.0))
            acc.counts[t.name] = _slot_counts(values, t.edges, values.size - nans)
            acc.moments[t.name] = moments
        else:
            if t.source == PREDICTION:
                raw = pa.array(np.asarray(predictions[t.column]).reshape(-1))
            else:
                raw = table.column(t.column)
            counts, nulls = categorical_slots(category_strings(raw), t.values)
            acc.counts[t.name] = counts
            m = _empty_moments()
            m[0] = nulls
            m[1] = counts.sum()
            acc.moments[t.name] = m
    return acc


def reference_shifts(profile: Profile) -> dict[str, float]:
    """The reference mean of every numeric target (the shift of the accumulated moments)."""
    return {
        name: stats.mean
        for section in (profile.features, profile.predictions)
        for name, stats in section.items()
        if isinstance(stats, NumericStats)
    }


class MergeAccumulatorsFn(beam.CombineFn):
    """Merges :class:`DriftAccumulator` objects (mergeable, runner-agnostic)."""

    def create_accumulator(self) -> DriftAccumulator:
        return DriftAccumulator()

    def add_input(self, acc: DriftAccumulator, element: DriftAccumulator) -> DriftAccumulator:
        return acc.merge(element)

    def merge_accumulators(self, accumulators: Iterable[DriftAccumulator]) -> DriftAccumulator:
        merged = DriftAccumulator()
        for acc in accumulators:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: DriftAccumulator) -> DriftAccumulator:
        return acc


class HistogramFn(MergeAccumulatorsFn):
    """Columnar batches -> one :class:`DriftAccumulator` of histograms on the reference bins."""

    def __init__(self, targets: Sequence[Target], shifts: Mapping[str, float]) -> None:
        self._targets = tuple(targets)
        self._shifts = dict(shifts)

    def add_input(self, acc: DriftAccumulator, batch: ScoringBatch | pa.Table) -> DriftAccumulator:  # type: ignore[override]
        return acc.merge(accumulate(batch, self._targets, self._shifts))


# --------------------------------------------------------------------------- report


def _current_summary(
    acc: DriftAccumulator, target: Target, shift: float
) -> dict[str, float | int | None]:
    m = acc.moments.get(target.name, _empty_moments())
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


def write_reports(report: Mapping[str, Any], output_dir: str) -> list[str]:
    """Writes ``drift.json`` and ``drift.html`` into ``output_dir``; returns their paths."""
    from keras_batch_score.transforms.drift.html import render_html

    paths = report_paths(output_dir)
    texts = (json.dumps(report, indent=2, allow_nan=False) + "\n", render_html(report))
    for path, text in zip(paths, texts, strict=True):
        with FileSystems.create(path) as f:
            f.write(text.encode("utf-8"))
    return paths


def report_paths(output_dir: str) -> list[str]:
    """Where :func:`write_reports` puts ``drift.json`` and ``drift.html`` in ``output_dir``."""
    return [FileSystems.join(output_dir, name) for name in (DRIFT_JSON, DRIFT_HTML)]


def read_report(output_dir: str) -> dict[str, Any]:
    """Reads ``drift.json`` back (for the launcher's ``--fail-on-drift`` check)."""
    with FileSystems.open(FileSystems.join(output_dir, DRIFT_JSON)) as f:
        return json.loads(f.read().decode("utf-8"))


class _BuildAndWrite(beam.DoFn):
    def __init__(self, plan: DriftPlan, output_dir: str, metadata: Mapping[str, Any]) -> None:
        self._plan = plan
        self._output_dir = output_dir
        self._metadata = dict(metadata)

    def process(self, acc: DriftAccumulator):
        report = build_report(acc, self._plan, metadata=self._metadata)
        write_reports(report, self._output_dir)
        yield report


class ComputeDrift(beam.PTransform):
    """Scored batches -> drift report dict, written to ``drift.json`` and ``drift.html``.

    The scoring job writes them into its staging directory; its final step
    publishes them with the other outputs (:mod:`keras_batch_score.transforms.run.publish`).

    Args:
        plan: The checked reference profile (:func:`plan_drift`).
        output_dir: Directory the two files are written to.
        metadata: Extra provenance stored under ``run`` in ``drift.json``.
    """

    def __init__(
        self, plan: DriftPlan, output_dir: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(plan, DriftPlan):
            raise TypeError(f"plan must be a DriftPlan, got {type(plan).__name__}")
        if not output_dir:
            raise ValueError("output_dir must not be empty")
        self._plan = plan
        self._output_dir = output_dir
        self._metadata = dict(metadata or {})

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        fn = HistogramFn(self._plan.targets, reference_shifts(self._plan.profile))
        return (
            batches
            | "Histograms" >> beam.CombineGlobally(fn)
            | "MetricsAndWrite"
            >> beam.ParDo(_BuildAndWrite(self._plan, self._output_dir, self._metadata))
        )


# --------------------------------------------------------------------------- job hooks


def plan_drift_from_config(
    config: Any, schema: pa.Schema, outputs: Sequence[TensorInfo], output_columns: Sequence[str]
) -> DriftPlan | None:
    """The scoring job's drift plan, or None without ``reference_profile`` (checked at plan time)."""
    if not getattr(config, "reference_profile", None):
        return None
    return plan_drift(
        config.reference_profile,
        schema,
        outputs,
        thresholds=config.drift_thresholds,
        drift_share=config.drift_share,
        reserved=[c for c in output_columns if c not in config.id_columns],
    )


def kept_columns(id_columns: Sequence[str], plan: DriftPlan | None) -> list[str]:
    """Columns the scored batches keep: the id columns plus the profiled input columns."""
    extra = plan.feature_columns if plan is not None else []
    return list(dict.fromkeys([*id_columns, *extra]))


def drift_outcome(output_dir: str, *, fail_on_drift: bool) -> dict[str, Any]:
    """Reads the job's ``drift.json``; a short summary of it for the launcher.

    Raises:
        DriftDetectedError: when ``fail_on_drift`` and dataset drift was detected
            (the files are already written).
    """
    report = read_report(output_dir)
    outcome = {
        "drift_detected": report["drift_detected"],
        "prediction_drift_detected": report["prediction_drift_detected"],
        "drifted_features": report["dataset"]["drifted_features"],
        "message": report["message"],
        "report": FileSystems.join(output_dir, DRIFT_HTML),
    }
    if fail_on_drift and report["drift_detected"]:
        raise DriftDetectedError(
            f"dataset drift detected ({report['message']}); see {outcome['report']}"
        )
    return outcome
