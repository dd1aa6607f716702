"""Per-row out-of-distribution scores against a reference profile (pure numpy / pyarrow).

For every feature the reference profile describes (:mod:`keras_batch_score.transforms.drift.profile_format`):

* numeric: the value is *outside* when it lies below the reference's 0.1%
  quantile or above its 99.9% quantile (:data:`TAIL`). The profile stores
  quantile bin edges (first and last the exact min and max) and the count in
  each bin, not these quantiles, so they are read off the piecewise-linear
  cumulative distribution through ``(edge_i, cumulative share_i)``
  (:func:`tail_quantiles`). With the default 10 decile bins that places the
  0.1% quantile 1/100 of the way from the minimum to the first decile: for
  bell-shaped data that is a little further out than the true quantile, so
  reference rows are flagged at most at about the nominal rate.
  Also ``|x - mean| / std`` against the reference moments (a constant
  reference column: 0 for its value, infinity for any other).
* categorical: a value the reference never saw is outside. The profile lists
  the top values; when it lists them all (``other_count == 0``) every other
  value is unseen. When it pruned rare values, an unlisted value may have been
  seen, and counts as outside only if the pruned values were together at most
  ``2 x TAIL`` of the reference (as rare as the two numeric tails).

``ood_score`` is the share of a row's (non-null) profiled features that are
outside; ``ood_max_abs_z`` the largest ``|z|`` over its numeric features (0
when it has none). Nulls are neither inside nor outside. One batch is a few
whole-column numpy calls; nothing loops over rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.drift.profile_format import (
    CategoricalStats,
    NumericStats,
    Profile,
    category_strings,
)

TAIL = 0.001
OOD_SCORE = "ood_score"
OOD_MAX_ABS_Z = "ood_max_abs_z"
OOD = "ood"


@dataclasses.dataclass(frozen=True)
class OodReference:
    """What a batch is compared with: per-feature bounds, moments and known categories.

    Attributes:
        numeric: Numeric feature names.
        lo, hi: Their tail quantiles (``[lo, hi]`` is inside).
        mean, std: Their reference moments.
        categorical: Categorical feature names.
        known: Per categorical feature, the listed reference values.
        strict: Per categorical feature, whether unlisted values count as outside.
    """

    numeric: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categorical: tuple[str, ...] = ()
    known: tuple[tuple[str, ...], ...] = ()
    strict: tuple[bool, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def tail_quantiles(stats: NumericStats, tail: float = TAIL) -> tuple[float, float]:
    """The ``tail`` and ``1 - tail`` quantiles, interpolated on the profile's cumulative counts."""
    edges = np.asarray(stats.edges, dtype=np.float64)
    counts = np.asarray(stats.counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float(stats.min), float(stats.max)
    cum = np.concatenate([[0.0], np.cumsum(counts)]) / total
    return float(np.interp(tail, cum, edges)), float(np.interp(1.0 - tail, cum, edges))


def reference_from_profile(profile: Profile, tail: float = TAIL) -> OodReference:
    """The :class:`OodReference` of every feature in ``profile``."""
    numeric = [(k, v) for k, v in profile.features.items() if isinstance(v, NumericStats)]
    categorical = [(k, v) for k, v in profile.features.items() if isinstance(v, CategoricalStats)]
    bounds = [tail_quantiles(v, tail) for _, v in numeric]
    return OodReference(
        numeric=tuple(k for k, _ in numeric),
        lo=tuple(b[0] for b in bounds),
        hi=tuple(b[1] for b in bounds),
        mean=tuple(v.mean for _, v in numeric),
        std=tuple(v.std for _, v in numeric),
        categorical=tuple(k for k, _ in categorical),
        known=tuple(v.values for _, v in categorical),
        strict=tuple(v.other_count <= 2 * tail * max(v.count, 1) for _, v in categorical),
    )


def numeric_matrix(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """``(n, k)`` float64 values of ``columns``, nulls as NaN."""
    out = np.empty((table.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        out[:, j] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return out


def abs_z(values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``|x - mean| / std`` per value (std 0: 0 at the mean, infinity elsewhere; NaN stays NaN)."""
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    d = np.abs(values - m)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, d / np.where(s > 0, s, 1.0), np.where(d == 0, 0.0, np.inf))
    return np.where(np.isnan(values), np.nan, z)


def ood_scores(table: pa.Table, ref: OodReference) -> tuple[np.ndarray, np.ndarray]:
    """``(ood_score, ood_max_abs_z)`` of every row of ``table``, both float32 ``(n,)``."""
    n = table.num_rows
    outside = np.zeros(n, dtype=np.int64)
    present = np.zeros(n, dtype=np.int64)
    max_z = np.zeros(n, dtype=np.float64)
    if ref.numeric:
        x = numeric_matrix(table, ref.numeric)
        valid = ~np.isnan(x)
        with np.errstate(invalid="ignore"):
            out = (x < np.asarray(ref.lo)) | (x > np.asarray(ref.hi))
        outside += np.count_nonzero(out & valid, axis=1)
        present += np.count_nonzero(valid, axis=1)
        z = abs_z(x, ref.mean, ref.std)
        max_z = np.where(valid, z, 0.0).max(axis=1, initial=0.0)
    for name, known, strict in zip(ref.categorical, ref.known, ref.strict, strict=True):
        values = category_strings(table.column(name))
        valid = np.asarray(values.is_valid())
        present += valid
        if strict:
            seen = pc.is_in(values, value_set=pa.array(list(known), pa.string()))
            seen = np.asarray(seen.fill_null(True))
            outside += valid & ~seen
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(present > 0, outside / np.maximum(present, 1), 0.0)
    return score.astype(np.float32), max_z.astype(np.float32)
