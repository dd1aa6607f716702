"""Drift accumulation on the reference bins (pure numpy / pyarrow, no Beam).

:func:`accumulate` turns one columnar batch (:class:`ScoringBatch` or Arrow
table) into a :class:`DriftAccumulator`, with a few numpy / pyarrow calls per
column: its counts on the reference bins (plus below- and above-range slots)
or top categories (plus ``other``), its null count and shifted moments.
Accumulators only hold small arrays and merge by addition, so any runner can
combine them in any grouping.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.arrow import one_array
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.drift.plan import PREDICTION, Target
from keras_batch_score.transforms.drift.profile_format import (
    NUMERIC,
    NumericStats,
    Profile,
    category_strings,
)


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


def empty_moments() -> np.ndarray:
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
        arr = one_array(col)
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
    the same answer as comparing the exact values in float64. ``lt`` is a
    column (one comparison call tests every edge). Cached: the reference
    edges are fixed for a whole job.
    """
    e = np.asarray(edges, dtype=np.float64)
    if dtype != "f":
        return e[:, None], e
    with np.errstate(over="ignore"):
        near = e.astype(np.float32)
    wide = near.astype(np.float64)
    lt = np.where(wide < e, np.nextafter(near, np.float32(np.inf)), near)
    le = np.where(wide > e, np.nextafter(near, np.float32(-np.inf)), near)
    return lt[:, None], le


# Most (edges x rows) booleans compared in one call; larger batches go edge by edge.
_ONE_CALL_CELLS = 1 << 22


def _slot_counts(values: np.ndarray, edges: tuple[float, ...], valid: int) -> np.ndarray:
    """Counts on the ``k + 2`` slots of ``values`` (``valid`` of them not NaN; NaN in no slot)."""
    k = len(edges) - 1
    if k > 31:  # many bins: one binary search per value (NaN sorts last, past the guard)
        e = np.asarray(edges, dtype=np.float64)
        guard = np.append(e[:-1], [np.nextafter(e[-1], np.inf), np.nan])
        idx = np.searchsorted(guard, values, side="right")
        return np.bincount(idx, minlength=k + 3)[: k + 2].astype(np.int64)
    # Few bins: vectorized comparisons beat a binary search per value.
    # Cumulative counts below e_0 ... e_{k-1}, then up to and including e_k.
    lt, le = _thresholds(edges, values.dtype.char)
    if k * values.size <= _ONE_CALL_CELLS:
        below = [np.count_nonzero(row) for row in np.less(values, lt[:-1])]
    else:
        below = [np.count_nonzero(values < t) for t in lt[:-1, 0]]
    cum = np.array([0, *below, np.count_nonzero(values <= le[-1]), valid], np.int64)
    return cum[1:] - cum[:-1]


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
    if not (math.isfinite(lo) and math.isfinite(hi)) and values.size:
        nans = int(np.count_nonzero(np.isnan(values)))
        finite = values[np.isfinite(values)]
        lo = finite.min(initial=np.inf)
        hi = finite.max(initial=-np.inf)
    d = finite.astype(np.float64)  # always a copy: squared in place below
    d -= shift
    s1 = d.sum()
    np.square(d, out=d)  # not np.dot: BLAS would wake its own threads
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
            m = empty_moments()
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
