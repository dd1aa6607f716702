"""Building a reference profile with Beam: two mergeable passes over columnar batches.

1. **Sketch**: a ``CombineFn`` of per-column moments (Chan's parallel
   update), min, max, nulls, category counts and the distinct values of
   integer columns (up to the categorical limit), plus Beam's
   ``ApproximateQuantiles`` on the batches' values (``input_batched``) for the
   bin edges. No step sorts the whole column.
2. **Histogram**: with the edges and top categories decided, the same
   accumulator the scoring job uses (:func:`transforms.drift.accumulate`)
   counts each batch on the reference slots.

The batches are Arrow tables (no model) or scored :class:`ScoringBatch`
objects (``--model``), whose predictions are profiled too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batch import ScoringBatch
from transforms.drift import (
    FEATURE,
    PREDICTION,
    DriftAccumulator,
    MergeAccumulatorsFn,
    Target,
    accumulate,
    batch_parts,
    numeric_values,
)
from transforms.profile import (
    CATEGORICAL,
    DEFAULT_NUM_BINS,
    DEFAULT_TOP_K,
    NUMERIC,
    CategoricalStats,
    ColumnStats,
    KindRule,
    NumericStats,
    Profile,
    ProfileError,
    category_strings,
    quantile_edges,
    write_profile,
)

TRACKED_CATEGORIES_MIN = 1000
"""Category counts kept per column while sketching (at least this, or 50 x top N)."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A column to profile: its name, where it comes from and its type-level kind.

    ``kind`` is ``numeric``, ``categorical`` or ``integer`` (decided from the
    distinct count once the sketch is complete).
    """

    name: str
    source: str
    column: str
    index: int | None
    kind: str


def prediction_name(output_names: Sequence[str], output: str) -> str:
    """The predictions-file column of a model output (see ``transforms.io.output_fields``)."""
    return "prediction" if len(output_names) == 1 else f"prediction_{output}"


@dataclasses.dataclass
class ColumnSketch:
    """Mergeable first-pass state of one column."""

    nulls: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    values: dict[str, int] | None = dataclasses.field(default_factory=dict)

    def merge(self, other: ColumnSketch, cap: int) -> ColumnSketch:
        self.nulls += other.nulls
        if other.n:
            n = self.n + other.n
            delta = other.mean - self.mean
            self.m2 += other.m2 + delta * delta * self.n * other.n / n
            self.mean += delta * other.n / n
            self.n = n
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        if self.values is None or other.values is None:
            self.values = None
        else:
            for k, c in other.values.items():
                self.values[k] = self.values.get(k, 0) + c
            if len(self.values) > cap:
                self.values = None
        return self


def _prune(values: dict[str, int], keep: int) -> dict[str, int]:
    if len(values) <= 2 * keep:
        return values
    top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    return dict(top)


class SketchFn(beam.CombineFn):
    """Batches -> ``{column: ColumnSketch}`` (first pass).

    Integer columns keep their distinct values only up to ``rule.max_distinct``
    (beyond that they are numeric); categorical columns keep the counts of
    their most frequent values (approximate beyond :data:`TRACKED_CATEGORIES_MIN`).
    """

    def __init__(
        self,
        candidates: Sequence[Candidate],
        rule: KindRule,
        top_k: int,
        output_names: Sequence[str],
    ) -> None:
        self._candidates = tuple(candidates)
        self._rule = rule
        self._keep = max(TRACKED_CATEGORIES_MIN, 50 * top_k)
        self._output_names = tuple(output_names)

    def create_accumulator(self) -> dict[str, ColumnSketch]:
        return {}

    def _cap(self, kind: str) -> int:
        return self._rule.max_distinct if kind == "integer" else 10**12

    def add_input(
        self, acc: dict[str, ColumnSketch], batch: ScoringBatch | pa.Table
    ) -> dict[str, ColumnSketch]:
        for cand, sketch in batch_sketches(batch, self._candidates, self._output_names):
            if cand.kind == CATEGORICAL and sketch.values is not None:
                sketch.values = _prune(sketch.values, self._keep)
            if cand.name in acc:
                acc[cand.name].merge(sketch, self._cap(cand.kind))
            else:
                acc[cand.name] = sketch
                if sketch.values is not None and len(sketch.values) > self._cap(cand.kind):
                    sketch.values = None
        return acc

    def merge_accumulators(
        self, accumulators: Iterable[dict[str, ColumnSketch]]
    ) -> dict[str, ColumnSketch]:
        merged: dict[str, ColumnSketch] = {}
        kinds = {c.name: c.kind for c in self._candidates}
        for acc in accumulators:
            for name, sketch in acc.items():
                cap = self._cap(kinds.get(name, NUMERIC))
                if name in merged:
                    merged[name].merge(sketch, cap)
                else:
                    merged[name] = dataclasses.replace(
                        sketch, values=None if sketch.values is None else dict(sketch.values)
                    )
            for sketch in merged.values():
                if sketch.values is not None and len(sketch.values) > 2 * self._keep:
                    sketch.values = _prune(sketch.values, self._keep)
        return merged

    def extract_output(self, acc: dict[str, ColumnSketch]) -> dict[str, ColumnSketch]:
        return acc


def prediction_candidates(
    predictions: Mapping[str, np.ndarray], output_names: Sequence[str]
) -> list[Candidate]:
    """Numeric candidates for every model output position of a scored batch."""
    out = []
    for output in output_names:
        if output not in predictions:
            continue
        values = np.asarray(predictions[output])
        base = prediction_name(output_names, output)
        if values.ndim <= 1:
            out.append(Candidate(base, PREDICTION, output, None, NUMERIC))
        elif values.ndim == 2:
            out += [
                Candidate(f"{base}[{j}]", PREDICTION, output, j, NUMERIC)
                for j in range(values.shape[1])
            ]
    return out


def _numeric_array(
    table: pa.Table, predictions: Mapping[str, np.ndarray], cand: Candidate
) -> tuple[np.ndarray, int]:
    """Finite float64 values of a numeric candidate, and the count of nulls, NaNs and infinities."""
    values, nulls = numeric_values(table, predictions, cand)  # type: ignore[arg-type]
    inf = np.isinf(values)
    if inf.any():
        nulls += int(inf.sum())
        values = values[~inf]
    return values, nulls


def batch_sketches(
    batch: ScoringBatch | pa.Table, candidates: Sequence[Candidate], output_names: Sequence[str]
) -> list[tuple[Candidate, ColumnSketch]]:
    """First-pass state of every candidate in one batch (vectorized per column)."""
    table, predictions = batch_parts(batch)
    out = []
    if not table.num_rows:
        return out
    for cand in [*candidates, *prediction_candidates(predictions, output_names)]:
        if cand.kind == CATEGORICAL:
            strings = category_strings(table.column(cand.column))
            nulls = strings.null_count
            vc = pc.value_counts(pc.drop_null(strings) if nulls else strings)
            values = dict(
                zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
            )
            n = len(strings) - nulls
            out.append((cand, ColumnSketch(nulls=nulls, n=n, values=values)))
            continue
        values, nulls = _numeric_array(table, predictions, cand)
        sketch = ColumnSketch(nulls=nulls, n=int(values.size), values=None)
        if values.size:
            sketch.mean = float(values.mean())
            sketch.m2 = float(np.sum((values - sketch.mean) ** 2))
            sketch.min = float(values.min())
            sketch.max = float(values.max())
        if cand.kind == "integer":
            uniq, counts = np.unique(values, return_counts=True)
            sketch.values = {str(int(v)): int(c) for v, c in zip(uniq, counts, strict=True)}
        out.append((cand, sketch))
    return out


def quantile_inputs(
    batch: ScoringBatch | pa.Table, candidates: Sequence[Candidate], output_names: Sequence[str]
) -> Iterable[tuple[str, list[float]]]:
    """``(column, finite values)`` of every numeric candidate, for ``ApproximateQuantiles``."""
    table, predictions = batch_parts(batch)
    if not table.num_rows:
        return
    for cand in [*candidates, *prediction_candidates(predictions, output_names)]:
        if cand.kind != CATEGORICAL:
            values, _ = _numeric_array(table, predictions, cand)
            if values.size:
                yield cand.name, values.tolist()


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    """Binning and kind settings of a profile run."""

    num_bins: int = DEFAULT_NUM_BINS
    top_k: int = DEFAULT_TOP_K
    rule: KindRule = dataclasses.field(default_factory=KindRule)

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {self.num_bins}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def decide_targets(
    sketches: Mapping[str, ColumnSketch],
    quantiles: Mapping[str, Sequence[float]],
    candidates: Sequence[Candidate],
    output_names: Sequence[str],
    settings: ProfileSettings,
) -> list[Target]:
    """Kinds, bin edges and top categories from the first pass (columns with no values are skipped)."""
    by_name = {c.name: c for c in candidates}
    targets = []
    for name, sketch in sketches.items():
        cand = by_name.get(name)
        if cand is None:  # a prediction column discovered in the batches
            source, column, index = PREDICTION, *_prediction_source(name, output_names)
            kind = NUMERIC
        else:
            source, column, index, kind = FEATURE, cand.column, None, cand.kind
        if sketch.n == 0:
            continue
        if kind == "integer":
            kind = CATEGORICAL if sketch.values is not None else NUMERIC
        if kind == CATEGORICAL:
            top = sorted((sketch.values or {}).items(), key=lambda kv: (-kv[1], kv[0]))
            values = tuple(str(v) for v, _ in top[: settings.top_k])
            targets.append(Target(name, source, column, index, CATEGORICAL, values=values))
        else:
            edges = list(quantile_edges(quantiles.get(name, []), settings.num_bins))
            if not edges:
                continue
            edges[0], edges[-1] = sketch.min, sketch.max
            edges = sorted(edges)
            targets.append(Target(name, source, column, index, NUMERIC, edges=tuple(edges)))
    return targets


def _prediction_source(name: str, output_names: Sequence[str]) -> tuple[str, int | None]:
    base, index = name, None
    if name.endswith("]") and "[" in name:
        base, _, rest = name.rpartition("[")
        index = int(rest[:-1])
    for output in output_names:
        if prediction_name(output_names, output) == base:
            return output, index
    raise ValueError(f"prediction column {name!r} matches no model output {list(output_names)}")


def assemble_profile(
    targets: Sequence[Target],
    sketches: Mapping[str, ColumnSketch],
    histograms: DriftAccumulator,
    metadata: Mapping[str, Any],
) -> Profile:
    """The profile from the sketch (moments, nulls) and the exact second-pass histograms."""
    features: dict[str, ColumnStats] = {}
    predictions: dict[str, ColumnStats] = {}
    for t in targets:
        sketch = sketches[t.name]
        counts = histograms.counts.get(t.name, np.zeros(t.num_slots, dtype=np.int64))
        if t.kind == NUMERIC:
            bins = counts[1:-1].copy()
            bins[0] += counts[0]  # edges are the exact min and max: nothing is out of range,
            bins[-1] += counts[-1]  # but keep every value if a float rounding disagrees
            stats: ColumnStats = NumericStats(
                edges=t.edges,
                counts=tuple(int(c) for c in bins),
                count=sketch.n,
                null_count=sketch.nulls,
                min=sketch.min,
                max=sketch.max,
                mean=sketch.mean,
                std=float(np.sqrt(sketch.m2 / sketch.n)) if sketch.n else 0.0,
            )
        else:
            stats = CategoricalStats(
                values=t.values,
                counts=tuple(int(c) for c in counts[:-1]),
                other_count=int(counts[-1]),
                count=sketch.n,
                null_count=sketch.nulls,
            )
        (features if t.source == FEATURE else predictions)[t.name] = stats
    return Profile(features, predictions, histograms.rows, dict(metadata))


def _histogram(batch: ScoringBatch | pa.Table, targets: Sequence[Target]) -> DriftAccumulator:
    return accumulate(batch, targets, {})


def _decide(
    _: None,
    sketches: Mapping[str, ColumnSketch],
    quantiles: Mapping[str, Sequence[float]],
    candidates: Sequence[Candidate],
    output_names: Sequence[str],
    settings: ProfileSettings,
) -> list[Target]:
    return decide_targets(sketches, quantiles, candidates, output_names, settings)


def _write(
    _: None,
    targets: Sequence[Target],
    sketches: Mapping[str, ColumnSketch],
    histograms: DriftAccumulator,
    path: str,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    if histograms.rows == 0:
        raise ProfileError(
            "the reference data has no rows (or none the model could score): nothing to profile"
        )
    meta = {**metadata, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    profile = assemble_profile(targets, sketches, histograms, meta)
    write_profile(profile, path)
    return profile.to_dict()


class BuildProfile(beam.PTransform):
    """Columnar batches -> the profile dict, also written as JSON to ``path``.

    Args:
        candidates: Input columns to profile (predictions are found in the batches).
        path: Where the profile JSON is written.
        settings: Bins, top N and the kind rule.
        output_names: Model output names, in model order (empty without a model).
        metadata: Provenance stored in the profile.
    """

    def __init__(
        self,
        candidates: Sequence[Candidate],
        path: str,
        settings: ProfileSettings = ProfileSettings(),
        output_names: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not path:
            raise ValueError("path must not be empty")
        self._candidates = tuple(candidates)
        self._path = path
        self._settings = settings
        self._outputs = tuple(output_names)
        self._metadata = {
            **(metadata or {}),
            "num_bins": settings.num_bins,
            "top_k": settings.top_k,
            "categorical_max_distinct": settings.rule.max_distinct,
        }

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        cands, outs = self._candidates, self._outputs
        sketches = batches | "Sketch" >> beam.CombineGlobally(
            SketchFn(cands, self._settings.rule, self._settings.top_k, outs)
        )
        quantiles = (
            batches
            | "QuantileInputs" >> beam.FlatMap(quantile_inputs, cands, outs)
            | "Quantiles"
            >> beam.ApproximateQuantiles.PerKey(self._settings.num_bins + 1, input_batched=True)
        )
        once = batches.pipeline | "Once" >> beam.Create([None])
        targets = once | "DecideBins" >> beam.Map(
            _decide,
            sketches=beam.pvalue.AsSingleton(sketches),
            quantiles=beam.pvalue.AsDict(quantiles),
            candidates=cands,
            output_names=outs,
            settings=self._settings,
        )
        histograms = (
            batches
            | "CountOnBins" >> beam.Map(_histogram, targets=beam.pvalue.AsSingleton(targets))
            | "MergeCounts" >> beam.CombineGlobally(MergeAccumulatorsFn())
        )
        return once | "WriteProfile" >> beam.Map(
            _write,
            targets=beam.pvalue.AsSingleton(targets),
            sketches=beam.pvalue.AsSingleton(sketches),
            histograms=beam.pvalue.AsSingleton(histograms),
            path=self._path,
            metadata=self._metadata,
        )
