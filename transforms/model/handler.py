"""Keras inference through Beam's ``RunInference``, one columnar batch per element.

:class:`KerasModelHandler` is a ``ModelHandler`` whose examples are whole
:class:`ScoringBatch` objects. Beam's ``BatchElements`` groups them by row
count (``element_size_fn``), the handler concatenates their inputs, runs one
compiled model call and splits the outputs back. The model is loaded in the
``RunInference`` DoFn's ``setup()`` through ``shared.Shared``, as Beam does for
every handler, so Beam's metrics (``num_inferences``,
``inference_batch_latency_micro_secs``, ``load_model_latency_milli_secs``)
come for free.

Failures are row-precise: when the model call raises, the handler bisects
the rows (:func:`keras_batch_score.transforms.model.row_failures.predict_rows`), and rows whose output
is NaN or Inf are failed too. Each result carries the scored rows and the
failed rows (:class:`InferenceOutcome`); :func:`run_model` splits them into two
PCollections, so every input row comes out exactly once.

Model calls overlap the rest of the fused stage: Beam's ``RunInference``
calls the handler synchronously, one batch at a time, so the handler starts
the call on one of ``calls_in_flight`` background threads and returns at
once, each result's inference a :class:`~keras_batch_score.transforms.core.deferred.Deferred`
outcome. :class:`SplitOutcomesDoFn` waits for the outcomes in input order,
``calls_in_flight`` batches behind, while the stage reads and validates the
next batches (TensorFlow releases the GIL inside the call). The results are
the same as in a synchronous call; Beam's ``inference_batch_latency_micro_secs``
then measures handing the call over, not the call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.core.batch import (
    ScoringBatch,
    concat_features,
    drop_rows,
    split_rows,
    take_rows,
)
from keras_batch_score.transforms.core.deferred import Deferred, InOrderDoFn
from keras_batch_score.transforms.core.errors import error_table
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.row_failures import (
    inference_failed,
    output_subjects,
    predict_rows,
)
from keras_batch_score.transforms.model.spec import ModelSpec

FAILED = "failed"

CALLS_IN_FLIGHT = 2


@dataclasses.dataclass
class FailedRows:
    """Rows a model failed on (it raised, or gave NaN/Inf), with one reason per row."""

    batch: ScoringBatch
    reasons: list[str]


@dataclasses.dataclass
class InferenceOutcome:
    """What the handler returns per input batch: the scored rows, and the failed ones if any."""

    scored: ScoringBatch
    failed: FailedRows | None = None


def _num_rows(batch: ScoringBatch) -> int:
    return batch.num_rows


class _CallThreads:
    """Background threads for model calls, started on first use; pickles without them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="model-call")
        return self._pool.submit(fn, *args)

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return _CallThreads, (self.workers,)


class KerasModelHandler(ModelHandler[ScoringBatch, PredictionResult, LoadedModel]):
    """Loads a Keras model (.keras, .h5, SavedModel) and scores ScoringBatches.

    Args:
        spec: What model to load and how.
        feature_widths: Values per row fed to each model input (for the health check).
        max_batch_rows: Max rows per model call.
        min_batch_rows: Min rows per model call (defaults to ``max_batch_rows``).
        calls_in_flight: Model calls run at once on background threads, while
            the stage prepares the next batches; 0 calls the model on the
            calling thread and returns finished outcomes.
    """

    def __init__(
        self,
        spec: ModelSpec,
        feature_widths: Mapping[str, int],
        *,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
        calls_in_flight: int = CALLS_IN_FLIGHT,
    ) -> None:
        super().__init__(
            min_batch_size=min_batch_rows or max_batch_rows,
            max_batch_size=max_batch_rows,
            element_size_fn=_num_rows,
        )
        if calls_in_flight < 0:
            raise ValueError(f"calls_in_flight must be >= 0, got {calls_in_flight}")
        self._spec = spec
        self._feature_widths = dict(feature_widths)
        self._threads = _CallThreads(calls_in_flight) if calls_in_flight else None

    @property
    def calls_in_flight(self) -> int:
        """Model calls that run at once on background threads (0: on the calling thread)."""
        return self._threads.workers if self._threads is not None else 0

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
        """Scores the batches in one model call; returns one :class:`InferenceOutcome` per batch.

        A call that raises is bisected and rows with NaN/Inf outputs are
        failed (:func:`keras_batch_score.transforms.model.row_failures.predict_rows`), so only the
        failing rows end up in ``InferenceOutcome.failed``. With calls in
        flight the call runs on a background thread and each outcome is
        :class:`~keras_batch_score.transforms.core.deferred.Deferred`.
        """
        if self._threads is None:
            return self._score(batch, model)
        future = self._threads.submit(self._outcomes, batch, model)
        return [
            PredictionResult(b, Deferred(future, i), model.model_id) for i, b in enumerate(batch)
        ]

    def _outcomes(
        self, batch: Sequence[ScoringBatch], model: LoadedModel
    ) -> list[InferenceOutcome]:
        """The outcomes of :meth:`_score`, run on a call thread; if it raises, every row fails.

        Beam's dead-letter output does the same for a synchronous call, with the same reason.
        """
        try:
            return [result.inference for result in self._score(batch, model)]
        except Exception as e:
            reason = inference_failed(e)
            empty = _empty_outputs(model)
            return [
                InferenceOutcome(
                    drop_rows(b, np.arange(b.num_rows)).with_predictions(empty, model.model_id),
                    FailedRows(dataclasses.replace(b, rows_rejected=0), [reason] * b.num_rows),
                )
                for b in batch
            ]

    def _score(self, batch: Sequence[ScoringBatch], model: LoadedModel) -> list[PredictionResult]:
        sizes = [b.num_rows for b in batch]
        n = sum(sizes)
        if n == 0:
            return [
                self._result(b, b.with_predictions(_empty_outputs(model), model.model_id), model)
                for b in batch
            ]
        result = predict_rows(
            model.predict, concat_features(batch), n, subjects=self.output_subjects(model)
        )
        if result.extra_calls:  # monitoring: how much bisection costs
            beam.metrics.Metrics.counter("keras_batch_score", "bisection_model_calls").inc(
                result.extra_calls
            )
        outputs = result.outputs or _empty_outputs(model)
        if not result.failed.size:
            return [
                self._result(b, b.with_predictions(piece, model.model_id), model)
                for b, piece in zip(batch, split_rows(outputs, sizes), strict=True)
            ]
        bounds = np.cumsum([0, *sizes])
        cuts = np.searchsorted(result.failed, bounds)
        failed_per_batch = np.diff(cuts)
        pieces = split_rows(outputs, [s - f for s, f in zip(sizes, failed_per_batch, strict=True)])
        results = []
        for i, (b, piece) in enumerate(zip(batch, pieces, strict=True)):
            if not failed_per_batch[i]:
                results.append(self._result(b, b.with_predictions(piece, model.model_id), model))
                continue
            local = result.failed[cuts[i] : cuts[i + 1]] - bounds[i]
            scored = drop_rows(b, local)
            failed = FailedRows(take_rows(b, local), result.reasons[cuts[i] : cuts[i + 1]])
            results.append(
                self._result(b, scored.with_predictions(piece, model.model_id), model, failed)
            )
        return results

    @staticmethod
    def _result(
        example: ScoringBatch,
        scored: ScoringBatch,
        model: LoadedModel,
        failed: FailedRows | None = None,
    ) -> PredictionResult:
        return PredictionResult(example, InferenceOutcome(scored, failed), model.model_id)

    def output_subjects(self, model: LoadedModel) -> dict[str, str]:
        """Per output key, how NaN/Inf reasons name it (``model output`` or ``model output 'x'``)."""
        return output_subjects([(info.name, info.name) for info in model.outputs])

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


class SplitOutcomesDoFn(InOrderDoFn):
    """``PredictionResult`` of an :class:`InferenceOutcome` -> scored batch, plus failed rows on ``failed``.

    Deferred outcomes (calls still running on the handler's threads) are
    awaited in input order, ``depth`` results behind, and the last ones in
    ``finish_bundle``; finished outcomes are emitted at once when none wait.

    Args:
        depth: How many deferred results may wait (the handler's calls in flight).
    """

    def __init__(self, depth: int = CALLS_IN_FLIGHT) -> None:
        super().__init__(depth)

    def process(
        self,
        result: PredictionResult,
        window: Any = beam.DoFn.WindowParam,
        timestamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterable[Any]:
        if isinstance(result.inference, Deferred) or self.waiting:
            yield from self.emit_in_order(partial(_split, result.inference), window, timestamp)
        else:
            yield from _split(result.inference)


def _split(inference: InferenceOutcome | Deferred) -> Iterable[Any]:
    outcome: InferenceOutcome = inference.result() if isinstance(inference, Deferred) else inference
    yield outcome.scored
    if outcome.failed is not None:
        yield pvalue.TaggedOutput(FAILED, outcome.failed)


def dead_letter_rows(failed: tuple[Sequence[ScoringBatch], Any]) -> Iterable[FailedRows]:
    """Beam's dead-letter element ``(batches, (exc_type, exc_repr, traceback_lines))`` -> FailedRows.

    The handler catches model errors itself; this catches anything else that
    raised in ``run_inference``. Every row gets the one-line reason
    ``inference failed: <ExceptionType>: <first line>``.
    """
    batches, info = failed
    reason = inference_failed(info)
    for b in batches:
        if b.num_rows:
            yield FailedRows(dataclasses.replace(b, rows_rejected=0), [reason] * b.num_rows)


def failed_rows_to_errors(failed: FailedRows) -> pa.Table:
    """Errors-output records (stage ``inference``) for rows a model failed on."""
    n = failed.batch.num_rows
    return error_table(failed.batch.table, np.arange(n), "inference", [None] * n, failed.reasons)


def run_model(
    batches: beam.PCollection, handler: KerasModelHandler, label: str = "RunInference"
) -> tuple[beam.PCollection, beam.PCollection]:
    """Applies ``RunInference(handler)``; returns ``(scored batches, FailedRows)``.

    Failed rows come from the handler (bisected exceptions, NaN/Inf outputs)
    and from Beam's dead-letter output (anything else that raised).
    """
    main, dlq = batches | label >> RunInference(handler).with_exception_handling()
    # Beam's RunInference declares no output type, so its output got the pickle
    # fallback coder, which pickles whole sampled batches just to estimate their
    # size; typed, it gets PredictionResultCoder (keras_batch_score.transforms.core.coders).
    main.element_type = PredictionResult
    split = main | f"{label}Split" >> beam.ParDo(
        SplitOutcomesDoFn(handler.calls_in_flight)
    ).with_output_types(ScoringBatch).with_outputs(FAILED, main="scored")
    dead = dlq.failed_inferences | f"{label}DeadLetters" >> beam.FlatMap(dead_letter_rows)
    failed = (split[FAILED], dead) | f"{label}FailedRows" >> beam.Flatten()
    return split.scored, failed


class RunKerasInference(beam.PTransform):
    """ScoringBatches -> ScoringBatches with predictions, plus errors for the rows that failed.

    Every input row comes out exactly once: in a scored batch, or in an errors
    table with stage ``inference`` when the model raised on it (found by
    bisection) or gave NaN/Inf for it.

    Returns:
        ``(scored, errors)``: two PCollections.
    """

    def __init__(self, handler: KerasModelHandler, label: str = "Model") -> None:
        super().__init__()
        self._handler = handler
        self._label = label

    def expand(self, batches: beam.PCollection):
        scored, failed = run_model(batches, self._handler)
        errors = failed | "FailedRowsToErrors" >> beam.Map(failed_rows_to_errors).with_output_types(
            pa.Table
        )
        return scored, errors
