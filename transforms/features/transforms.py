"""The Beam wiring of validation: Arrow tables -> (ScoringBatch of scorable rows, errors tables).

The checks themselves are pure numpy in :mod:`keras_batch_score.transforms.features.validate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.features.layout import FeatureLayout
from keras_batch_score.transforms.features.validate import assemble_features, rejected_rows_table


class ValidateDoFn(beam.DoFn):
    """Arrow table -> :class:`ScoringBatch` of the good rows, plus an errors table on ``errors``."""

    ERRORS = "errors"

    def __init__(self, layout: FeatureLayout, keep_columns: Sequence[str]) -> None:
        self._layout = layout
        self._keep = list(keep_columns)

    def setup(self) -> None:
        self._rejected = beam.metrics.Metrics.counter("keras_batch_score", "rows_rejected")

    def process(self, table: pa.Table):
        assembled = assemble_features(table, self._layout)
        kept = table.select(self._keep)
        if assembled.good is not None:
            self._rejected.inc(assembled.num_bad)
            yield pvalue.TaggedOutput(self.ERRORS, rejected_rows_table(table, assembled.problems))
            kept = kept.filter(pa.array(assembled.good))
        yield ScoringBatch(table=kept, features=assembled.features, rows_rejected=assembled.num_bad)


class ValidateFeatures(beam.PTransform):
    """Arrow tables -> (ScoringBatch of scorable rows, errors tables).

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors``.
    """

    def __init__(self, layout: FeatureLayout, keep_columns: Sequence[str]) -> None:
        super().__init__()
        if not layout.bindings:
            raise ValueError("layout has no model inputs")
        self._layout = layout
        self._keep = list(keep_columns)

    def expand(self, tables: beam.PCollection) -> pvalue.DoOutputsTuple:
        return tables | "AssembleAndCheck" >> beam.ParDo(
            ValidateDoFn(self._layout, self._keep)
        ).with_output_types(ScoringBatch, errors=pa.Table).with_outputs(
            ValidateDoFn.ERRORS, main="batches"
        )
