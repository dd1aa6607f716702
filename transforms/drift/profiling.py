"""Building a reference profile with Beam: one mergeable pass over columnar batches.

One ``CombineFn`` (:class:`SketchFn`) keeps, per column, the moments
(Chan's parallel update), min, max and nulls; for numeric columns a KLL
quantile sketch (Apache DataSketches, C++, fed whole numpy columns); for
categorical columns the counts of the most frequent values; for integer
columns their distinct values up to the categorical limit. Accumulators
serialize their sketches (a few KB per column) and merge on any runner.

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

The batches are Arrow tables (no model) or scored :class:`ScoringBatch`
objects (``--model``), whose predictions are profiled too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.drift.profile_format import (
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
from keras_batch_score.transforms.drift.transforms import (
    FEATURE,
    PREDICTION,
    batch_parts,
    column_values,
)

TRACKED_CATEGORIES_MIN = 1000
"""Category counts kept per column while sketching (at least this, or 50 x top N)."""

KLL_K = 400
"""KLL sketch size: rank error 0.68% per quantile and 0.86% per bin mass
(``kll_doubles_sketch.get_normalized_rank_error(400, as_pmf)``, 99% confidence),
for about 5% more update time than k = 200 (1.33%, 1.65%); about 5 KB
(float32 columns) or 10 KB (others) serialized."""

_KLL_TYPES = {"f": datasketches.kll_floats_sketch, "d": datasketches.kll_doubles_sketch}


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
    """The predictions-file column of a model output (see ``keras_batch_score.transforms.io.parquet.output_fields``)."""
    return "prediction" if len(output_names) == 1 else f"prediction_{output}"


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


def _prune(values: dict[str, int], keep: int) -> dict[str, int]:
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
    sketch.values = _prune(counts, keep)
    sketch.nulls += nulls
    sketch.n += len(strings) - nulls


@dataclasses.dataclass
class ProfileAccumulator:
    """The state of :class:`SketchFn`: rows seen and one :class:`ColumnSketch` per column."""

    rows: int = 0
    columns: dict[str, ColumnSketch] = dataclasses.field(default_factory=dict)


class SketchFn(beam.CombineFn):
    """Batches -> :class:`ProfileAccumulator` (the whole profile in one pass).

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
        k: int = KLL_K,
    ) -> None:
        self._candidates = tuple(candidates)
        self._rule = rule
        self._keep = max(TRACKED_CATEGORIES_MIN, 50 * top_k)
        self._output_names = tuple(output_names)
        self._k = k

    def create_accumulator(self) -> ProfileAccumulator:
        return ProfileAccumulator()

    def _cap(self, kind: str) -> int:
        return self._rule.max_distinct if kind == "integer" else 10**12

    def add_input(
        self, acc: ProfileAccumulator, batch: ScoringBatch | pa.Table
    ) -> ProfileAccumulator:
        table, predictions = batch_parts(batch)
        acc.rows += table.num_rows
        if not table.num_rows:
            return acc
        for cand in [*self._candidates, *prediction_candidates(predictions, self._output_names)]:
            sketch = acc.columns.get(cand.name)
            if sketch is None:
                sketch = acc.columns[cand.name] = ColumnSketch(
                    values={} if cand.kind in (CATEGORICAL, "integer") else None
                )
            if cand.kind == CATEGORICAL:
                add_categorical(sketch, table.column(cand.column), self._keep)
            else:
                values = column_values(table, predictions, cand)  # type: ignore[arg-type]
                cap = self._cap(cand.kind) if cand.kind == "integer" else None
                add_numeric(sketch, values, self._k, cap)
        return acc

    def merge_accumulators(self, accumulators: Iterable[ProfileAccumulator]) -> ProfileAccumulator:
        merged = ProfileAccumulator()
        kinds = {c.name: c.kind for c in self._candidates}
        for acc in accumulators:
            merged.rows += acc.rows
            for name, sketch in acc.columns.items():
                cap = self._cap(kinds.get(name, NUMERIC))
                if name in merged.columns:
                    merged.columns[name].merge(sketch, cap)
                else:
                    merged.columns[name] = sketch.copy()
            for sketch in merged.columns.values():
                if sketch.values is not None and len(sketch.values) > 2 * self._keep:
                    sketch.values = _prune(sketch.values, self._keep)
        return merged

    def extract_output(self, acc: ProfileAccumulator) -> ProfileAccumulator:
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


def build_profile(
    acc: ProfileAccumulator,
    candidates: Sequence[Candidate],
    output_names: Sequence[str],
    settings: ProfileSettings,
    metadata: Mapping[str, Any],
) -> Profile:
    """The profile from the merged sketches (columns with no values are skipped)."""
    kinds = {c.name: c.kind for c in candidates}
    features: dict[str, ColumnStats] = {}
    predictions: dict[str, ColumnStats] = {}
    for name, sketch in acc.columns.items():
        kind = kinds.get(name)
        source = FEATURE
        if kind is None:  # a prediction column discovered in the batches
            _prediction_source(name, output_names)  # raises if it matches no model output
            source, kind = PREDICTION, NUMERIC
        if sketch.n == 0:
            continue
        if kind == "integer":
            kind = CATEGORICAL if sketch.values is not None else NUMERIC
        stats: ColumnStats | None
        if kind == CATEGORICAL:
            stats = categorical_stats(sketch, settings.top_k)
        else:
            stats = numeric_stats(sketch, settings.num_bins)
        if stats is not None:
            (features if source == FEATURE else predictions)[name] = stats
    return Profile(features, predictions, acc.rows, dict(metadata))


def _write(
    acc: ProfileAccumulator,
    candidates: Sequence[Candidate],
    output_names: Sequence[str],
    settings: ProfileSettings,
    path: str,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    if acc.rows == 0:
        raise ProfileError(
            "the reference data has no rows (or none the model could score): nothing to profile"
        )
    meta = {**metadata, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    profile = build_profile(acc, candidates, output_names, settings, meta)
    write_profile(profile, path)
    return profile.to_dict()


def _prediction_source(name: str, output_names: Sequence[str]) -> tuple[str, int | None]:
    base, index = name, None
    if name.endswith("]") and "[" in name:
        base, _, rest = name.rpartition("[")
        index = int(rest[:-1])
    for output in output_names:
        if prediction_name(output_names, output) == base:
            return output, index
    raise ValueError(f"prediction column {name!r} matches no model output {list(output_names)}")


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
        cands, outs, settings = self._candidates, self._outputs, self._settings
        return (
            batches
            | "Sketch" >> beam.CombineGlobally(SketchFn(cands, settings.rule, settings.top_k, outs))
            | "WriteProfile"
            >> beam.Map(
                _write,
                candidates=cands,
                output_names=outs,
                settings=settings,
                path=self._path,
                metadata=self._metadata,
            )
        )
