"""Slicing Arrow tables into pieces of at most ``max_rows`` rows: the Beam wiring of :func:`slice_table`."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.core.batch import slice_table


class _SliceDoFn(beam.DoFn):
    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows

    def process(self, table):
        yield from slice_table(table, self._max_rows)


class Rebatch(beam.PTransform):
    """Slices Arrow tables (row groups) into pieces of at most ``max_rows`` rows (zero-copy)."""

    def __init__(self, max_rows: int) -> None:
        super().__init__()
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self._max_rows = max_rows

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        return tables | "Slice" >> beam.ParDo(_SliceDoFn(self._max_rows)).with_output_types(
            pa.Table
        )
