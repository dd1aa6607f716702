"""The Beam wiring of scoring and post-processing: model runs, A/B routing, fallback, counts.

The numeric work is pure numpy elsewhere
(:mod:`~keras_batch_score.transforms.postprocess.apply`,
:mod:`~keras_batch_score.transforms.postprocess.routing`,
:mod:`~keras_batch_score.transforms.model.members`); the Beam pieces here are thin:

* :class:`ScoreModels` chains one ``RunInference`` per ensemble member over
  the same batches (``Model[name]``; no shuffle, no join), or routes rows to
  the A/B arms, and sends the rows on which a model raised or gave NaN/Inf
  to the fallback model or to the errors output. Each member is scored by a
  :class:`~keras_batch_score.transforms.model.members.MemberModelHandler`,
  which stores its outputs under member keys (``<output>__<member>``),
  optionally with MC-dropout mean and std computed inside the handler.
* :class:`Postprocess` turns member outputs into the final columns:
  ensemble -> calibrate -> inverse standardization -> clip -> top-k; rows
  whose final prediction is NaN/Inf go to errors (stage ``postprocess``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from keras_batch_score.transforms.core.batch import ScoringBatch, drop_rows, take_rows
from keras_batch_score.transforms.core.errors import error_table
from keras_batch_score.transforms.model import shadow
from keras_batch_score.transforms.model.handler import (
    FailedRows,
    failed_rows_to_errors,
    run_model,
)
from keras_batch_score.transforms.model.members import MemberModelHandler
from keras_batch_score.transforms.model.output_keys import SHADOW, member_key
from keras_batch_score.transforms.model.row_failures import nonfinite_rows
from keras_batch_score.transforms.postprocess.apply import final_subjects, postprocess_predictions
from keras_batch_score.transforms.postprocess.plan import MemberRun, PostprocessPlan
from keras_batch_score.transforms.postprocess.privacy import row_keys
from keras_batch_score.transforms.postprocess.routing import route

_LOG = logging.getLogger("keras_batch_score")

POSTPROCESS_ERRORS = "errors"


class PostprocessDoFn(beam.DoFn):
    """Applies :func:`postprocess_predictions` to every batch.

    Rows whose final prediction is NaN or Inf (e.g. an overflow in inverse
    standardization) are sent to the ``errors`` output, stage ``postprocess``.
    """

    def __init__(self, plan: PostprocessPlan) -> None:
        self._plan = plan
        self._subjects = final_subjects(plan)

    def process(self, batch: ScoringBatch) -> Iterable[Any]:
        plan = self._plan
        combined = (
            plan.is_ensemble
            and member_key(plan.outputs[0].key, plan.members[0].name) in batch.predictions
        )
        keys = row_keys(batch.table, plan.noise_key_columns) if plan.noise is not None else None
        with np.errstate(over="ignore", invalid="ignore"):
            predictions = postprocess_predictions(batch.predictions, plan, keys)
        model_id = plan.ensemble_label if combined else batch.model_id
        out = dataclasses.replace(batch, predictions=predictions, model_id=model_id)
        bad, reasons = nonfinite_rows(predictions, self._subjects, " after post-processing")
        if bad.size:
            n = len(bad)
            yield pvalue.TaggedOutput(
                POSTPROCESS_ERRORS,
                error_table(batch.table, bad, "postprocess", [None] * n, reasons),
            )
            out = drop_rows(out, bad)
        yield out


class Postprocess(beam.PTransform):
    """Scored batches -> (batches holding exactly the final prediction columns, errors tables)."""

    def __init__(self, plan: PostprocessPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection):
        results = batches | "EnsembleCalibrateClipLabel" >> beam.ParDo(
            PostprocessDoFn(self._plan)
        ).with_output_types(ScoringBatch).with_outputs(POSTPROCESS_ERRORS, main="scored")
        return results.scored, results[POSTPROCESS_ERRORS]


class RouteDoFn(beam.DoFn):
    """Splits each batch into one sub-batch per A/B arm (tagged outputs named after the arms)."""

    def __init__(
        self, names: Sequence[str], shares: Sequence[float], id_columns: Sequence[str]
    ) -> None:
        self._names = list(names)
        self._shares = list(shares)
        self._id_columns = list(id_columns)

    def process(self, batch: ScoringBatch):
        arms = route(batch.table, self._id_columns, self._shares)
        rejected = batch.rows_rejected  # carried once, by the first arm that gets rows
        for i, name in enumerate(self._names):
            rows = np.flatnonzero(arms == i)
            if rows.size:
                sub = take_rows(batch, rows)
                sub.rows_rejected, rejected = rejected, 0
                yield pvalue.TaggedOutput(name, sub)


class ToFallbackDoFn(beam.DoFn):
    """Failed rows -> batches for the fallback model; logs each distinct reason once per worker."""

    def setup(self) -> None:
        self._seen: set[str] = set()
        self._rows = beam.metrics.Metrics.counter("keras_batch_score", "rows_fallback")

    def process(self, failed: FailedRows) -> Iterable[ScoringBatch]:
        for reason in dict.fromkeys(failed.reasons):  # per failed row only
            if reason not in self._seen:
                self._seen.add(reason)
                _LOG.warning(
                    "primary model failed on some rows, scoring them with the fallback model: %s",
                    reason,
                )
        self._rows.inc(failed.batch.num_rows)
        yield dataclasses.replace(failed.batch, predictions={})


class ScoreModels(beam.PTransform):
    """Validated batches -> (scored batches, errors tables): members, A/B arms and fallback.

    * Ensemble: one ``Model[name]`` RunInference per member, chained.
    * A/B: rows routed by a hash of the id columns, one ``Model[name]`` per arm, flattened.
    * Fallback: rows on which a model raised (isolated by bisection) or gave
      NaN/Inf go to ``Fallback[name]``; without one, or when the fallback
      fails on them too, they become errors (stage ``inference``).
    """

    def __init__(
        self,
        plan: PostprocessPlan,
        feature_widths: Mapping[str, int],
        *,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
    ) -> None:
        super().__init__()
        self._plan = plan
        self._widths = dict(feature_widths)
        self._max = max_batch_rows
        self._min = min_batch_rows

    def _handler(self, run: MemberRun, member: str | None) -> MemberModelHandler:
        return MemberModelHandler(
            run.spec,
            self._widths,
            member=member,
            mc_samples=self._plan.mc_samples,
            seed=self._plan.seed,
            output_names=[o.key for o in self._plan.outputs],
            max_batch_rows=self._max,
            min_batch_rows=self._min,
        )

    def shadow_shapes(self) -> list[tuple[str, list[str]]]:
        """Per shadow key, the released keys whose shape a failed row's NaN output copies."""
        first = self._plan.members[0].name
        return [
            (member_key(o.key, SHADOW), [o.key, member_key(o.key, first)])
            for o in self._plan.outputs
        ]

    def _run(self, batches: beam.PCollection, label: str, handler: MemberModelHandler):
        return run_model(batches, handler, label)

    def expand(self, batches: beam.PCollection):
        plan = self._plan
        scored: list[beam.PCollection] = []
        failed: list[beam.PCollection] = []
        if plan.ab_split is not None:
            names = [n for n, _ in plan.ab_split]
            arms = batches | "RouteAB" >> beam.ParDo(
                RouteDoFn(names, [s for _, s in plan.ab_split], plan.id_columns)
            ).with_outputs(*names)
            by_name = {m.name: m for m in plan.members}
            for name in names:
                ok, bad = self._run(
                    arms[name], f"Model[{name}]", self._handler(by_name[name], None)
                )
                scored.append(ok)
                failed.append(bad)
        else:
            current = batches
            ensemble_members = plan.is_ensemble
            for m in plan.members:
                current, bad = self._run(
                    current,
                    f"Model[{m.name}]",
                    self._handler(m, m.name if ensemble_members else None),
                )
                failed.append(bad)
            scored.append(current)
        all_failed = tuple(failed) | "FailedRows" >> beam.Flatten()
        if plan.fallback is not None:
            retry = all_failed | "ToFallback" >> beam.ParDo(ToFallbackDoFn()).with_output_types(
                ScoringBatch
            )
            ok, bad = self._run(
                retry, f"Fallback[{plan.fallback.name}]", self._handler(plan.fallback, None)
            )
            scored.append(ok)
            all_failed = bad
        if plan.shadow is not None:
            released = tuple(scored) | "Released" >> beam.Flatten()
            handler = shadow.ShadowModelHandler(
                plan.shadow.spec,
                self._widths,
                member=SHADOW,
                output_names=[o.key for o in plan.outputs],
                max_batch_rows=self._max,
                min_batch_rows=self._min,
            )
            scored = [shadow.run_shadow(released, handler, self.shadow_shapes())]
        errors = all_failed | "FailedRowsToErrors" >> beam.Map(
            failed_rows_to_errors
        ).with_output_types(pa.Table)
        return tuple(scored) | "AllScored" >> beam.Flatten(), errors


# --------------------------------------------------------------------------- summary counts


def _model_count(batch: ScoringBatch) -> tuple[str, int]:
    return batch.model_id or "", batch.num_rows


class _AddModelCounts(beam.DoFn):
    def process(self, counts: dict[str, int], by_model: Mapping[str, int], fallback_id: str | None):
        out = dict(counts)
        out["rows_by_model"] = dict(sorted(by_model.items()))
        if fallback_id is not None:
            out["rows_fallback"] = int(by_model.get(fallback_id, 0))
        yield out


def add_model_counts(
    counts: beam.PCollection, scored: beam.PCollection, fallback_id: str | None = None
) -> beam.PCollection:
    """Adds ``rows_by_model`` (and ``rows_fallback``) to the run's counts dict."""
    from keras_batch_score.transforms.run.finalize import SumByKeyFn

    by_model = (
        scored
        | "CountByModel" >> beam.Map(_model_count)
        | "SumByModel" >> beam.CombineGlobally(SumByKeyFn(()))
    )
    return counts | "AddModelCounts" >> beam.ParDo(
        _AddModelCounts(), pvalue.AsSingleton(by_model), fallback_id
    )
