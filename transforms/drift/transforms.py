"""Beam wiring of drift: the histogram ``CombineFn`` and :class:`ComputeDrift`.

:class:`HistogramFn` is a mergeable ``CombineFn`` over columnar batches
(:func:`keras_batch_score.transforms.drift.histograms.accumulate` per batch).
:class:`ComputeDrift` turns the merged counts into the report
(:mod:`keras_batch_score.transforms.drift.report`) and writes ``drift.json``
and ``drift.html`` from a pipeline step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.drift.histograms import (
    DriftAccumulator,
    accumulate,
    reference_shifts,
)
from keras_batch_score.transforms.drift.plan import DriftPlan, Target
from keras_batch_score.transforms.drift.report import build_report
from keras_batch_score.transforms.drift.report_files import write_reports


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
