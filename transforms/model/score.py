"""ScoringBatches -> scored batches: the one scoring path of every command that runs a model.

A plain run is a trivial post-processing plan (one member, nothing to
combine or transform), so a single model, an ensemble, A/B arms and a
fallback model all take the same steps: ``Models`` (one ``RunInference``
per member, :class:`keras_batch_score.transforms.postprocess.transforms.ScoreModels`)
then ``Postprocess`` (ensemble, calibration, clipping, labels).
"""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam

from keras_batch_score.transforms.postprocess.plan import PostprocessPlan
from keras_batch_score.transforms.postprocess.transforms import Postprocess, ScoreModels


class ScoreBatches(beam.PTransform):
    """ScoringBatches -> ``(scored batches, errors tables)``.

    Args:
        plan: The members, A/B arms, fallback and post-processing of the run
            (one member and nothing else for a plain run).
        feature_widths: Values per row per model input (each model's health check).
        max_batch_rows: Max rows per model call.
        min_batch_rows: Min rows per model call.
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
        self._models = ScoreModels(
            plan, feature_widths, max_batch_rows=max_batch_rows, min_batch_rows=min_batch_rows
        )
        self._postprocess = Postprocess(plan)

    def expand(self, batches: beam.PCollection):
        scored, errors = batches | "Models" >> self._models
        final, post_errors = scored | "Postprocess" >> self._postprocess
        return final, (errors, post_errors) | "InferenceAndPostprocessErrors" >> beam.Flatten()
