"""Arrow tables -> ScoringBatches ready for the model: sliced, optionally reshuffled, checked.

:class:`PrepareBatches` is the step between reading and scoring that every
command running a model shares (``score``, ``profile --model``,
``calibrate``): tables are sliced to at most ``batch_rows`` rows, then either
fed through a preprocessing spec or validated against the feature layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam

from keras_batch_score.transforms.core.rebatch import Rebatch
from keras_batch_score.transforms.features.layout import FeatureLayout
from keras_batch_score.transforms.features.transforms import ValidateFeatures
from keras_batch_score.transforms.preprocess.plan import PreprocessPlan
from keras_batch_score.transforms.preprocess.transforms import PreprocessFeatures


class PrepareBatches(beam.PTransform):
    """Arrow tables -> ScoringBatches of at most ``batch_rows`` rows, validated or preprocessed.

    Args:
        layout: Which columns feed which model input (used without a preprocessing plan).
        keep_columns: Columns carried along in each batch (ids, drift features, labels).
        batch_rows: Max rows per batch.
        preprocess: The preprocessing plan; None validates the raw columns against ``layout``.
        reshuffle: Redistribute the slices across workers before checking them.

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors`` (errors tables).
    """

    def __init__(
        self,
        layout: FeatureLayout,
        keep_columns: Sequence[str],
        *,
        batch_rows: int,
        preprocess: PreprocessPlan | None = None,
        reshuffle: bool = False,
    ) -> None:
        super().__init__()
        self._layout = layout
        self._keep = list(keep_columns)
        self._rows = batch_rows
        self._preprocess = preprocess
        self._reshuffle = reshuffle

    def expand(self, tables: beam.PCollection):
        sliced = tables | "Shard" >> Rebatch(self._rows)
        if self._reshuffle:
            sliced = sliced | "Reshuffle" >> beam.Reshuffle()
        if self._preprocess is not None:
            return sliced | "Preprocess" >> PreprocessFeatures(self._preprocess, self._keep)
        return sliced | "Check" >> ValidateFeatures(self._layout, self._keep)
