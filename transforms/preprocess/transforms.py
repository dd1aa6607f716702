"""Beam wiring of preprocessing: :class:`PreprocessFeatures` and its prefetching DoFn.

:class:`PreprocessFeatures` has the same outputs as
:class:`keras_batch_score.transforms.features.transforms.ValidateFeatures`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.deferred import InOrderDoFn
from keras_batch_score.transforms.preprocess.apply import BatchPreprocessor, Preprocessed
from keras_batch_score.transforms.preprocess.plan import PreprocessPlan


class PreprocessDoFn(InOrderDoFn):
    """Arrow table -> :class:`ScoringBatch` of the good rows, plus an errors table on ``errors``.

    With image features, batches are preprocessed on ``IMAGE_WORKERS``
    background threads while the fused steps downstream (inference, writing)
    handle earlier ones, as a ``tf.data`` parallel map with prefetch would:
    decoding releases the GIL, so the threads use every core. Batches are
    emitted in input order; at most ``IMAGE_WORKERS + 1`` are held (the oldest
    is awaited when one more arrives), and the last ones are emitted in
    ``finish_bundle``.
    """

    IMAGE_WORKERS = 2

    ERRORS = "errors"

    def __init__(self, plan: PreprocessPlan, keep_columns: Sequence[str]) -> None:
        super().__init__(depth=self.IMAGE_WORKERS)
        self._plan = plan
        self._keep = list(keep_columns)

    def setup(self) -> None:
        self._run = BatchPreprocessor(self._plan)
        self._rejected = beam.metrics.Metrics.counter("keras_batch_score", "rows_rejected")
        overlap = any(f.type == "image" for f in self._plan.spec.features)
        self._pool = ThreadPoolExecutor(self.IMAGE_WORKERS, "preprocess") if overlap else None

    def process(
        self,
        table: pa.Table,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterable[Any]:
        if self._pool is None:
            yield from self._outputs(table, self._run(table))
            return
        future = self._pool.submit(self._run, table)
        yield from self.emit_in_order(
            lambda: self._outputs(table, future.result()), window, timestamp
        )

    def teardown(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)

    def _outputs(self, table: pa.Table, result: Preprocessed) -> Iterable[Any]:
        kept = table.select(self._keep)
        if result.good is not None:
            self._rejected.inc(result.num_bad)
            yield pvalue.TaggedOutput(self.ERRORS, result.errors)
            kept = kept.filter(pa.array(result.good))
        yield ScoringBatch(table=kept, features=result.features, rows_rejected=result.num_bad)


class PreprocessFeatures(beam.PTransform):
    """Arrow tables -> (ScoringBatch of preprocessed good rows, errors tables).

    A drop-in replacement for :class:`keras_batch_score.transforms.features.transforms.ValidateFeatures`.

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors``.
    """

    def __init__(self, plan: PreprocessPlan, keep_columns: Sequence[str]) -> None:
        super().__init__()
        if not plan.inputs:
            raise ValueError("the preprocessing plan has no model inputs")
        self._plan = plan
        self._keep = list(keep_columns)

    def expand(self, tables: beam.PCollection) -> pvalue.DoOutputsTuple:
        return tables | "PreprocessAndCheck" >> beam.ParDo(
            PreprocessDoFn(self._plan, self._keep)
        ).with_output_types(ScoringBatch, errors=pa.Table).with_outputs(
            PreprocessDoFn.ERRORS, main="batches"
        )
