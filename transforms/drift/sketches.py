"""Mergeable column sketches of a reference profile, and the statistics they give (no Beam).

A :class:`ColumnSketch` keeps, per column, the moments (Chan's parallel
update), min, max and nulls; for numeric columns a KLL quantile sketch
(Apache DataSketches, C++, fed whole numpy columns); for categorical columns
the counts of the most frequent values; for integer columns their distinct
values up to the categorical limit. Sketches serialize (a few KB per column)
and merge on any runner.

The bin edges are the sketch's quantiles (first and last edge the exact
minimum and maximum) and the bin counts are the sketch's mass between them
(``get_pmf``), so no second pass reads the data. The masses times the count
are rounded by largest remainder, so the counts are integers that sum exactly
to the column's non-null count. Both carry the KLL error: with ``k = 400``
(:data:`KLL_K`) an edge's rank is within 0.7% of its target and a bin's
share within 0.9% of the exact one (99% confidence bounds; typically a third
of that); below about ``k`` values per column the sketch is exact.

Category counts are exact while a column has at most ``2 x`` the tracked
categories (:data:`TRACKED_CATEGORIES_MIN`) distinct values in one
accumulator; beyond that the rarest are pruned, so the top values' counts
may be low by what was pruned (``other`` takes the difference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.drift.profile_format import (
    CategoricalStats,
    NumericStats,
    ProfileError,
    category_strings,
    quantile_edges,
)

TRACKED_CATEGORIES_MIN = 1000
"""Category counts kept per column while sketching (at least this, or 50 x top N)."""


KLL_K = 400
"""KLL sketch size: rank error 0.68% per quantile and 0.86% per bin mass
(``kll_doubles_sketch.get_normalized_rank_error(400, as_pmf)``, 99% confidence),
for about 5% more update time than k = 200 (1.33%, 1.65%); about 5 KB
(float32 columns) or 10 KB (others) serialized."""


_KLL_TYPES = {"f": datasketches.kll_floats_sketch, "d": datasketches.kll_doubles_sketch}


@dataclasses.dataclass
class ColumnSketch:
    """Mergeable state of one column.

    ``kll`` is a KLL sketch of the finite values of a numeric or integer
    column: ``kll_floats_sketch`` for float32 values (lossless), else
    ``kll_doubles_sketch``. It pickles as its compact serialized bytes.
    """

    nulls: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    values: dict[str, int] | None = dataclasses.field(default_factory=dict)
    kll: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.kll is not None:
            state["kll"] = (_kll_code(self.kll), self.kll.serialize())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("kll") is not None:
            code, data = state["kll"]
            state = {**state, "kll": _KLL_TYPES[code].deserialize(data)}
        self.__dict__.update(state)

    def copy(self) -> ColumnSketch:
        """An independent copy (merging into it leaves this one unchanged)."""
        return dataclasses.replace(
            self,
            values=None if self.values is None else dict(self.values),
            kll=None if self.kll is None else type(self.kll).deserialize(self.kll.serialize()),
        )

    def add_moments(self, n: int, mean: float, m2: float, lo: float, hi: float) -> None:
        """Chan's parallel update with ``n`` more values of mean ``mean`` and sum of
        squared deviations ``m2``."""
        if not n:
            return
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    def merge(self, other: ColumnSketch, cap: int) -> ColumnSketch:
        """Adds ``other`` into this sketch (in place); drops the distinct values past ``cap``."""
        self.nulls += other.nulls
        self.add_moments(other.n, other.mean, other.m2, other.min, other.max)
        if other.kll is not None:
            if self.kll is None:
                self.kll = type(other.kll).deserialize(other.kll.serialize())
            elif type(self.kll) is not type(other.kll):
                raise ProfileError(
                    "a numeric column has float32 values in some batches and other types in "
                    "others; give all input files one schema"
                )
            else:
                self.kll.merge(other.kll)
        if self.values is None or other.values is None:
            self.values = None
        else:
            for k, c in other.values.items():
                self.values[k] = self.values.get(k, 0) + c
            if len(self.values) > cap:
                self.values = None
        return self


def _kll_code(kll: Any) -> str:
    return "f" if isinstance(kll, datasketches.kll_floats_sketch) else "d"


def prune_categories(values: dict[str, int], keep: int) -> dict[str, int]:
    """``values`` (value -> count), cut to the ``keep`` most frequent once it holds over ``2 x keep``."""
    if len(values) <= 2 * keep:
        return values
    top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    return dict(top)


def add_numeric(sketch: ColumnSketch, values: np.ndarray, k: int, distinct_cap: int | None) -> None:
    """Adds one batch of a numeric column (float32 or float64, NaN = null) to ``sketch``.

    NaN and infinities count as nulls. ``distinct_cap`` (integer columns)
    also counts the distinct values while there are at most that many.
    """
    lo = values.min(initial=np.inf)
    hi = values.max(initial=-np.inf)
    finite = values
    if values.size and not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or inf: rare, copy
        finite = values[np.isfinite(values)]
        lo = finite.min(initial=np.inf)
        hi = finite.max(initial=-np.inf)
    sketch.nulls += values.size - finite.size
    if not finite.size:
        return
    d = finite.astype(np.float64)  # a copy, squared in place below
    mean = float(d.sum()) / finite.size
    d -= mean
    np.square(d, out=d)
    sketch.add_moments(finite.size, mean, float(d.sum()), float(lo), float(hi))
    if sketch.kll is None:
        sketch.kll = (_KLL_TYPES["f" if finite.dtype == np.float32 else "d"])(k)
    elif (_kll_code(sketch.kll) == "f") != (finite.dtype == np.float32):
        raise ProfileError(
            "a numeric column has float32 values in some batches and other types in others; "
            "give all input files one schema"
        )
    # The binding takes only writable contiguous arrays (Arrow's zero-copy views are read-only).
    sketch.kll.update(np.require(finite, requirements=["C", "W"]))
    if distinct_cap is not None and sketch.values is not None:
        uniq, counts = np.unique(finite, return_counts=True)
        for v, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            key = str(int(v))
            sketch.values[key] = sketch.values.get(key, 0) + c
        if len(sketch.values) > distinct_cap:
            sketch.values = None


def add_categorical(sketch: ColumnSketch, values: pa.Array | pa.ChunkedArray, keep: int) -> None:
    """Adds one batch of a categorical column to ``sketch`` (value counts, pruned past ``keep``)."""
    strings = category_strings(values)
    nulls = strings.null_count
    vc = pc.value_counts(pc.drop_null(strings) if nulls else strings)
    counts = sketch.values if sketch.values is not None else {}
    for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
        counts[v] = counts.get(v, 0) + c
    sketch.values = prune_categories(counts, keep)
    sketch.nulls += nulls
    sketch.n += len(strings) - nulls


@dataclasses.dataclass
class ProfileAccumulator:
    """The state of :class:`SketchFn`: rows seen and one :class:`ColumnSketch` per column."""

    rows: int = 0
    columns: dict[str, ColumnSketch] = dataclasses.field(default_factory=dict)


def largest_remainder(shares: Sequence[float], total: int) -> np.ndarray:
    """Integer counts summing exactly to ``total``, proportional to ``shares``.

    Each count is ``floor(share * total)`` (shares normalized first); the
    remaining units go to the largest fractional parts (ties: lower index first).
    """
    p = np.clip(np.asarray(shares, dtype=np.float64), 0.0, None)
    if not p.size:
        return np.zeros(0, dtype=np.int64)
    p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
    raw = p * total
    counts = np.floor(raw).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def numeric_stats(sketch: ColumnSketch, num_bins: int) -> NumericStats | None:
    """Edges from the KLL quantiles (ends the exact min and max), counts from its PMF."""
    if not sketch.n or sketch.kll is None:
        return None
    ranks = np.linspace(0.0, 1.0, num_bins + 1).tolist()
    edges = list(quantile_edges(sketch.kll.get_quantiles(ranks), num_bins))
    edges[0], edges[-1] = sketch.min, sketch.max
    edges = sorted(edges)
    inner = edges[1:-1]
    # PMF intervals (-inf, e1), [e1, e2), ..., [e_{k-1}, +inf): the bins, as every value
    # lies in [min, max]; the last bin is closed at the max.
    shares = sketch.kll.get_pmf(inner) if inner else [1.0]
    counts = largest_remainder(shares, sketch.n)
    return NumericStats(
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        count=sketch.n,
        null_count=sketch.nulls,
        min=sketch.min,
        max=sketch.max,
        mean=sketch.mean,
        std=float(np.sqrt(sketch.m2 / sketch.n)),
    )


def categorical_stats(sketch: ColumnSketch, top_k: int) -> CategoricalStats:
    """The ``top_k`` most frequent values (ties by value), their counts and ``other``."""
    top = sorted((sketch.values or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    counts = tuple(int(c) for _, c in top)
    return CategoricalStats(
        values=tuple(str(v) for v, _ in top),
        counts=counts,
        other_count=sketch.n - sum(counts),
        count=sketch.n,
        null_count=sketch.nulls,
    )
