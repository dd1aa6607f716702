"""Shadow (champion/challenger) scoring: a second model beside the released one.

``--shadow-model PATH`` runs one more ``RunInference`` step
(``Shadow[shadow]``) after the released model(s) and the fallback, with the
same :class:`~keras_batch_score.transforms.model.members.MemberModelHandler` the ensemble members
use; its outputs are stored under member keys ``<output>__shadow`` and written
as ``<prediction column>_shadow``. The released prediction, the ``model``
column and the row set never change: rows on which the shadow model raises or
gives NaN/Inf keep their prediction and get NaN in the shadow column (written as null in the output files).

Agreement statistics (mean |diff|, Pearson correlation, decision agreement)
are computed per batch with numpy and merged by one global ``CombineFn``
(:class:`AgreementFn`, parallel moment merging after Chan et al.), then added
to the run's counts dict, which the final step writes into
``run_summary.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.ml.inference.base import PredictionResult

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.model.handler import FailedRows, run_model
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.members import MemberModelHandler
from keras_batch_score.transforms.model.output_keys import SHADOW, member_key

SHADOW_SUFFIX = "_shadow"

# Accumulator layout per output column (float64 vector).
_N, _MX, _MY, _M2X, _M2Y, _CXY, _ABS, _DN, _AGREE, _MIN, _MAX = range(11)
_SIZE = 11


class ShadowModelHandler(MemberModelHandler):
    """A member handler that keeps each batch's ``model_id`` (the released model's)."""

    def _score(self, batch: Sequence[ScoringBatch], model: LoadedModel) -> list[PredictionResult]:
        ids = [b.model_id for b in batch]
        results = super()._score(batch, model)
        for result, model_id in zip(results, ids, strict=True):
            result.inference.scored.model_id = model_id
            if result.inference.failed is not None:
                result.inference.failed.batch.model_id = model_id
        return results


class _FillShadowDoFn(beam.DoFn):
    """Rows the shadow failed on: back into the scored stream with NaN shadow outputs."""

    def __init__(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> None:
        # (shadow key, candidate keys of the released output whose shape it copies)
        self._pairs = [(k, list(c)) for k, c in pairs]

    def setup(self) -> None:
        self._rows = beam.metrics.Metrics.counter("keras_batch_score", "rows_shadow_failed")

    def process(self, failed: FailedRows) -> Iterable[ScoringBatch]:
        batch = failed.batch
        self._rows.inc(batch.num_rows)
        predictions = dict(batch.predictions)
        for key, candidates in self._pairs:
            like = next(batch.predictions[c] for c in candidates if c in batch.predictions)
            predictions[key] = np.full(np.shape(like), np.nan, dtype=np.float32)
        yield dataclasses.replace(batch, predictions=predictions)


def run_shadow(
    scored: beam.PCollection,
    handler: ShadowModelHandler,
    pairs: Sequence[tuple[str, Sequence[str]]],
) -> beam.PCollection:
    """Scored batches -> the same batches with shadow outputs; no row is dropped."""
    ok, failed = run_model(scored, handler, f"Shadow[{SHADOW}]")
    filled = failed | "ShadowFailedRowsAsNaN" >> beam.ParDo(
        _FillShadowDoFn(pairs)
    ).with_output_types(ScoringBatch)
    return (ok, filled) | "WithShadow" >> beam.Flatten()


# --------------------------------------------------------------------------- agreement statistics


def partial_stats(released: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """The accumulator of one batch for one output; rows with a non-finite shadow value are skipped.

    Width-1 outputs compare values and decide by ``>= 0.5``; wider outputs
    compare every element and decide by argmax. Decisions count only while
    all values lie in [0, 1] (tracked by min/max, see :func:`finish`).
    """
    x = np.asarray(released, dtype=np.float64)
    y = np.asarray(shadow, dtype=np.float64)
    n = x.shape[0]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x, y = x[ok], y[ok]
    acc = np.zeros(_SIZE)
    acc[_MIN], acc[_MAX] = np.inf, -np.inf
    if not x.size:
        return acc
    fx, fy = x.ravel(), y.ravel()
    acc[_N] = fx.size
    acc[_MX], acc[_MY] = fx.mean(), fy.mean()
    dx, dy = fx - acc[_MX], fy - acc[_MY]
    acc[_M2X], acc[_M2Y], acc[_CXY] = (dx * dx).sum(), (dy * dy).sum(), (dx * dy).sum()
    acc[_ABS] = np.abs(fx - fy).sum()
    if x.shape[1] == 1:
        agree = (x[:, 0] >= 0.5) == (y[:, 0] >= 0.5)
    else:
        agree = np.argmax(x, axis=1) == np.argmax(y, axis=1)
    acc[_DN], acc[_AGREE] = len(agree), agree.sum()
    acc[_MIN] = min(fx.min(), fy.min())
    acc[_MAX] = max(fx.max(), fy.max())
    return acc


def merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two accumulators -> one (Chan et al.'s parallel update of means and co-moments)."""
    if a[_N] == 0:
        return b.copy()
    if b[_N] == 0:
        return a.copy()
    out = np.zeros(_SIZE)
    n = a[_N] + b[_N]
    ddx, ddy = b[_MX] - a[_MX], b[_MY] - a[_MY]
    f = a[_N] * b[_N] / n
    out[_N] = n
    out[_MX] = a[_MX] + ddx * b[_N] / n
    out[_MY] = a[_MY] + ddy * b[_N] / n
    out[_M2X] = a[_M2X] + b[_M2X] + ddx * ddx * f
    out[_M2Y] = a[_M2Y] + b[_M2Y] + ddy * ddy * f
    out[_CXY] = a[_CXY] + b[_CXY] + ddx * ddy * f
    for i in (_ABS, _DN, _AGREE):
        out[i] = a[i] + b[i]
    out[_MIN], out[_MAX] = min(a[_MIN], b[_MIN]), max(a[_MAX], b[_MAX])
    return out


def finish(acc: np.ndarray) -> dict[str, Any]:
    """The statistics of an accumulator, as written to ``run_summary.json``."""
    n = int(acc[_N])
    denom = np.sqrt(acc[_M2X] * acc[_M2Y])
    probabilities = n > 0 and acc[_MIN] >= 0.0 and acc[_MAX] <= 1.0
    return {
        "values_compared": n,
        "rows_compared": int(acc[_DN]),
        "mean_abs_diff": float(acc[_ABS] / n) if n else None,
        "pearson": float(acc[_CXY] / denom) if n > 1 and denom > 0 else None,
        "decision_agreement": float(acc[_AGREE] / acc[_DN]) if probabilities else None,
    }


class AgreementFn(beam.CombineFn):
    """Per-output accumulators (``{column: vector}``) merged into the final statistics."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._columns = list(columns)

    def create_accumulator(self) -> dict[str, np.ndarray]:
        empty = np.zeros(_SIZE)
        empty[_MIN], empty[_MAX] = np.inf, -np.inf
        return {c: empty.copy() for c in self._columns}

    def add_input(self, acc: dict[str, np.ndarray], element: Mapping[str, np.ndarray]):
        return {c: merge(acc[c], element[c]) for c in self._columns}

    def merge_accumulators(self, accumulators: Iterable[dict[str, np.ndarray]]):
        out = self.create_accumulator()
        for acc in accumulators:
            out = {c: merge(out[c], acc[c]) for c in self._columns}
        return out

    def extract_output(self, acc: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        return {c: finish(acc[c]) for c in self._columns}


class _BatchStats(beam.DoFn):
    def __init__(self, pairs: Sequence[tuple[str, str, str]]) -> None:
        self._pairs = list(pairs)  # (column, released key, shadow key)

    def process(self, batch: ScoringBatch):
        yield {
            column: partial_stats(batch.predictions[key], batch.predictions[shadow_key])
            for column, key, shadow_key in self._pairs
        }


class _AddShadow(beam.DoFn):
    def process(self, counts: dict[str, Any], stats: Mapping[str, Any], info: Mapping[str, Any]):
        yield {**counts, "shadow": {**info, "outputs": dict(stats)}}


def shadow_pairs(plan: Any) -> list[tuple[str, str, str]]:
    """``(released column, released key, shadow key)`` per output of a PostprocessPlan."""
    return [(o.column, o.key, member_key(o.key, SHADOW)) for o in plan.outputs]


def shadow_keys(plan: Any) -> dict[str, str]:
    """Model output name -> the key of the shadow model's output in the batches."""
    return {key: shadow_key for _, key, shadow_key in shadow_pairs(plan)}


def add_shadow_stats(
    counts: beam.PCollection,
    scored: beam.PCollection,
    pairs: Sequence[tuple[str, str, str]],
    info: Mapping[str, Any],
) -> beam.PCollection:
    """Adds ``shadow`` (``info`` plus per-column agreement statistics) to the run's counts dict.

    Args:
        counts: The counts singleton passed to the final step.
        scored: Post-processed batches (the written values).
        pairs: ``(released column, released key, shadow key)`` per output.
        info: Static facts (the shadow model's id).
    """
    stats = (
        scored
        | "ShadowBatchStats" >> beam.ParDo(_BatchStats(pairs))
        | "ShadowAgreement" >> beam.CombineGlobally(AgreementFn([c for c, _, _ in pairs]))
    )
    return counts | "AddShadowStats" >> beam.ParDo(
        _AddShadow(), pvalue.AsSingleton(stats), dict(info)
    )
