"""Keras inference through Beam's ``RunInference``, one columnar batch per element.

:class:`KerasModelHandler` is a ``ModelHandler`` whose examples are whole
:class:`ScoringBatch` objects. Beam's ``BatchElements`` groups them by row
count (``element_size_fn``), the handler concatenates their inputs, runs one
compiled model call and splits the outputs back. The model is loaded in the
``RunInference`` DoFn's ``setup()`` through ``shared.Shared``, as Beam does for
every handler, so Beam's metrics (``num_inferences``,
``inference_batch_latency_micro_secs``, ``load_model_latency_milli_secs``)
come for free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from transforms import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from transforms.batch import ScoringBatch, concat_features, slice_table, split_rows
from transforms.keras_model import LoadedModel, ModelSpec, health_check, load
from transforms.validate import error_table


def _num_rows(batch: ScoringBatch) -> int:
    return batch.num_rows


class KerasModelHandler(ModelHandler[ScoringBatch, PredictionResult, LoadedModel]):
    """Loads a Keras model (.keras, .h5, SavedModel) and scores ScoringBatches.

    Args:
        spec: What model to load and how.
        feature_widths: Values per row fed to each model input (for the health check).
        max_batch_rows: Max rows per model call.
        min_batch_rows: Min rows per model call (defaults to ``max_batch_rows``).
    """

    def __init__(
        self,
        spec: ModelSpec,
        feature_widths: Mapping[str, int],
        *,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
    ) -> None:
        super().__init__(
            min_batch_size=min_batch_rows or max_batch_rows,
            max_batch_size=max_batch_rows,
            element_size_fn=_num_rows,
        )
        self._spec = spec
        self._feature_widths = dict(feature_widths)

    def load_model(self) -> LoadedModel:
        model = load(self._spec)
        health_check(model, self._feature_widths)
        return model

    def run_inference(
        self,
        batch: Sequence[ScoringBatch],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        sizes = [b.num_rows for b in batch]
        if sum(sizes) == 0:
            return [
                PredictionResult(
                    b, b.with_predictions(_empty_outputs(model), model.model_id), model.model_id
                )
                for b in batch
            ]
        outputs = model.predict(concat_features(batch))
        return [
            PredictionResult(b, b.with_predictions(piece, model.model_id), model.model_id)
            for b, piece in zip(batch, split_rows(outputs, sizes), strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[ScoringBatch]) -> int:
        return sum(v.nbytes for b in batch for v in b.features.values())

    def get_metrics_namespace(self) -> str:
        return "RunInference"


def _empty_outputs(model: LoadedModel) -> dict[str, np.ndarray]:
    out = {}
    for info in model.outputs:
        width = info.width
        shape = (0,) if width == 1 else (0, *[int(d or 0) for d in info.shape])
        out[info.name] = np.zeros(shape, dtype=np.float32)
    return out


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


def _inference_of(result: PredictionResult) -> ScoringBatch:
    return result.inference


def _failed_batches_to_errors(failed: tuple[Sequence[ScoringBatch], BaseException]):
    batches, exc = failed
    reason = f"inference failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    for b in batches:
        if b.num_rows:
            rows = np.arange(b.num_rows)
            yield error_table(
                b.table, rows, "inference", [None] * b.num_rows, [reason] * b.num_rows
            )


class RunKerasInference(beam.PTransform):
    """ScoringBatches -> ScoringBatches with predictions, plus errors for failed batches.

    Every input row comes out exactly once: in a scored batch, or, when the
    model call raises, in an errors table with stage ``inference``.

    Returns:
        ``(scored, errors)``: two PCollections.
    """

    def __init__(self, handler: KerasModelHandler, label: str = "Model") -> None:
        super().__init__()
        self._handler = handler
        self._label = label

    def expand(self, batches: beam.PCollection):
        main, dlq = (
            batches | "RunInference" >> RunInference(self._handler).with_exception_handling()
        )
        scored = main | "Unwrap" >> beam.Map(_inference_of).with_output_types(ScoringBatch)
        errors = dlq.failed_inferences | "FailedBatchesToErrors" >> beam.FlatMap(
            _failed_batches_to_errors
        ).with_output_types(pa.Table)
        return scored, errors
