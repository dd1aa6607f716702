"""Fitting a preprocessing spec on training data with mergeable Beam CombineFns.

:class:`FitSpecFn` accumulates, per feature that needs it, the statistics the
spec left out, batch by batch with whole-column numpy / pyarrow calls:

* ``fill_missing: mean``: the mean of the raw, non-missing values;
* ``standardize``: mean and population std (``ddof=0``, as Keras
  ``Normalization`` and sklearn ``StandardScaler``) of the values entering the
  step (after ``log1p`` and ``clip``), missing values left out; a vector
  feature gets one mean / std over all its values; a std of 0 becomes 1
  (as sklearn does);
* ``min_max``: min and max of the values entering the step (equal ones
  become ``[min, min + 1]``);
* vocabularies (categorical values, text tokens after TextVectorization's
  standardization): by descending frequency, ties in ascending order,
  optionally cut to ``max_tokens`` and to values seen ``min_frequency`` times.

Means and variances are merged with Chan et al.'s parallel formula, so the
result does not depend on how the runner splits the data.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.errors import DataError
from keras_batch_score.transforms.preprocess import ops
from keras_batch_score.transforms.preprocess.spec import PreprocessFeature, PreprocessSpec


@dataclasses.dataclass
class Moments:
    """Count, mean, sum of squared deviations, min and max of a set of values."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls()
        mean = float(values.mean())
        return cls(
            int(values.size),
            mean,
            float(((values - mean) ** 2).sum()),
            float(values.min()),
            float(values.max()),
        )

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            n,
            self.mean + delta * other.count / n,
            self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            min(self.min, other.min),
            max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count else float("nan")


def _pre_normalization(f: PreprocessFeature, x: np.ndarray) -> np.ndarray:
    """The values entering standardize / min_max (after log1p and clip), NaN kept."""
    if f.get("log1p"):
        with np.errstate(invalid="ignore", divide="ignore"):
            x = ops.log1p(x)
    if f.get("clip") is not None:
        x = ops.clip(x, *f.get("clip"))
    return x


def batch_stats(spec: PreprocessSpec, table: pa.Table) -> dict[str, Any]:
    """The partial statistics of one table, for every feature that needs fitting."""
    acc: dict[str, Any] = {}
    for f in spec.features:
        needs = f.needs_fit()
        if not needs:
            continue
        column = table.column(f.column).combine_chunks()
        stats: dict[str, Any] = {}
        if f.type == "numeric":
            x, lengths = ops.numeric_values(column, f.width)
            x = x[lengths == f.width]
            if "fill_missing mean" in needs:
                stats["raw"] = Moments.of(x.ravel())
            if "standardize" in needs or "min_max" in needs:
                stats["norm"] = Moments.of(_pre_normalization(f, x).ravel())
        else:
            counts = ops.token_counts(column) if f.type == "text" else pc.value_counts(column)
            values = counts.field("values").to_pylist()
            stats["vocab"] = Counter(
                {
                    v: c
                    for v, c in zip(values, counts.field("counts").to_pylist(), strict=True)
                    if v is not None
                }
            )
        acc[f.name] = stats
    return acc


def merge_stats(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    for name, stats in b.items():
        mine = a.setdefault(name, {})
        for key, value in stats.items():
            if key not in mine:
                mine[key] = copy.copy(value)
            elif key == "vocab":
                mine[key].update(value)
            else:
                mine[key] = mine[key].merge(value)
    return a


def _vocabulary(f: PreprocessFeature, counts: Counter) -> list[Any]:
    min_freq = f.get("min_frequency") or 1
    items = [(v, c) for v, c in counts.items() if c >= min_freq]
    items.sort(key=lambda vc: (-vc[1], vc[0]))
    if f.get("max_tokens"):
        items = items[: f.get("max_tokens")]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v, _ in items]


def fitted_spec(spec: PreprocessSpec, stats: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's YAML mapping with every missing statistic filled in.

    Raises:
        ValueError: if a feature has no usable values in the data.
    """
    raw = copy.deepcopy(dict(spec.raw))
    for f in spec.features:
        needs = f.needs_fit()
        if not needs:
            continue
        s = stats.get(f.name, {})
        out = raw["features"][f.name]
        if "fill_missing mean" in needs:
            m = s.get("raw", Moments())
            if m.count == 0:
                raise DataError(
                    f"feature {f.name!r}: every value is null or missing; cannot compute the mean"
                )
            out["fill_missing"] = {"mean": m.mean}
        for op in ("standardize", "min_max"):
            if op not in needs:
                continue
            m = s.get("norm", Moments())
            if m.count == 0:
                raise DataError(
                    f"feature {f.name!r}: every value is null or non-finite; cannot fit {op}"
                )
            if op == "standardize":
                out[op] = {"mean": m.mean, "std": m.std if m.std > 0 else 1.0}
            else:
                out[op] = {"min": m.min, "max": m.max if m.max > m.min else m.min + 1.0}
        if "vocab" in needs:
            vocab = _vocabulary(f, s.get("vocab", Counter()))
            if not vocab:
                raise DataError(
                    f"feature {f.name!r}: every value is null; cannot build a vocabulary"
                )
            out["vocab"] = [v.item() if isinstance(v, np.generic) else v for v in vocab]
    return raw


class FitSpecFn(beam.CombineFn):
    """Arrow tables -> the statistics :func:`fitted_spec` needs (mergeable accumulators)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self._spec = spec

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], table: pa.Table) -> dict[str, Any]:
        return merge_stats(acc, batch_stats(self._spec, table))

    def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for acc in accumulators:
            merge_stats(merged, acc)
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc


class FitPreprocessSpec(beam.PTransform):
    """Arrow tables -> one fitted spec mapping (the input spec with statistics filled in)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        spec = self._spec
        return (
            tables
            | "Statistics" >> beam.CombineGlobally(FitSpecFn(spec))
            | "FillSpec" >> beam.Map(lambda stats: fitted_spec(spec, stats))
        )
