"""Building a reference profile with Beam: one mergeable pass over columnar batches.

One ``CombineFn`` (:class:`SketchFn`) keeps a
:class:`keras_batch_score.transforms.drift.sketches.ColumnSketch` per column;
:class:`BuildProfile` merges them and writes the profile JSON
(:func:`keras_batch_score.transforms.drift.profile_build.build_profile`).

The batches are Arrow tables (no model) or scored :class:`ScoringBatch`
objects (``--model``), whose predictions are profiled too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.drift.histograms import batch_parts, column_values
from keras_batch_score.transforms.drift.profile_build import (
    Candidate,
    ProfileSettings,
    build_profile,
    prediction_candidates,
)
from keras_batch_score.transforms.drift.profile_format import (
    CATEGORICAL,
    NUMERIC,
    KindRule,
    ProfileError,
    write_profile,
)
from keras_batch_score.transforms.drift.sketches import (
    KLL_K,
    TRACKED_CATEGORIES_MIN,
    ColumnSketch,
    ProfileAccumulator,
    add_categorical,
    add_numeric,
    prune_categories,
)

_DEFAULT_SETTINGS = ProfileSettings()


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
                    sketch.values = prune_categories(sketch.values, self._keep)
        return merged

    def extract_output(self, acc: ProfileAccumulator) -> ProfileAccumulator:
        return acc


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
        settings: ProfileSettings = _DEFAULT_SETTINGS,
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
