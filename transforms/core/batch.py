"""The one element type of the pipeline: a columnar batch of many rows.

Every stage after the reader consumes and produces :class:`ScoringBatch`
objects. A batch holds the rows as read (an Arrow table, zero-copy slices of
the file's row group), the model inputs as numpy arrays, and whatever
predictions the inference steps have added. No stage ever iterates over rows
in Python; all per-row work is a vectorized numpy / pyarrow call.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa


@dataclasses.dataclass
class ScoringBatch:
    """Many rows on their way through the scoring pipeline.

    Attributes:
        table: The input rows (passthrough and raw feature columns), only the
            rows that passed validation.
        features: Model inputs keyed by model input name. Every array has
            ``table.num_rows`` rows along its first axis.
        predictions: Output columns keyed by output column name (for example
            ``prediction``). Filled by the inference step.
        model_id: Identifier of the model that produced ``predictions``.
        rows_rejected: Rows of the same input slice that validation sent to
            the errors output (for progress reporting only).
    """

    table: pa.Table
    features: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    model_id: str | None = None
    rows_rejected: int = 0

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def slice(self, start: int, stop: int) -> ScoringBatch:
        """Rows ``[start, stop)`` as a new batch (views, no copy)."""
        return ScoringBatch(
            table=self.table.slice(start, stop - start),
            features={k: v[start:stop] for k, v in self.features.items()},
            predictions={k: v[start:stop] for k, v in self.predictions.items()},
            model_id=self.model_id,
            rows_rejected=0,
        )

    def with_predictions(
        self, predictions: Mapping[str, np.ndarray], model_id: str
    ) -> ScoringBatch:
        """A copy of this batch with ``predictions`` added (existing keys replaced)."""
        for name, values in predictions.items():
            if len(values) != self.num_rows:
                raise ValueError(
                    f"prediction {name!r} has {len(values)} rows, the batch has {self.num_rows}"
                )
        return dataclasses.replace(
            self, predictions={**self.predictions, **predictions}, model_id=model_id
        )


def concat_features(batches: Sequence[ScoringBatch]) -> dict[str, np.ndarray]:
    """Model inputs of several batches joined along the row axis.

    A single batch is passed through without a copy.
    """
    if len(batches) == 1:
        return batches[0].features
    names = batches[0].features.keys()
    return {name: np.concatenate([b.features[name] for b in batches]) for name in names}


def split_rows(
    arrays: Mapping[str, np.ndarray], sizes: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Splits row-aligned arrays into consecutive pieces of the given sizes (views)."""
    bounds = np.cumsum([0, *sizes])
    return [
        {name: values[bounds[i] : bounds[i + 1]] for name, values in arrays.items()}
        for i in range(len(sizes))
    ]


def slice_table(table: pa.Table, max_rows: int) -> list[pa.Table]:
    """Zero-copy slices of ``table`` with at most ``max_rows`` rows each.

    Slices are balanced: 70,000 rows with ``max_rows=32768`` give three slices
    of about 23,333 rows rather than two full ones and a small remainder.
    """
    n = table.num_rows
    if n <= max_rows:
        return [table]
    pieces = -(-n // max_rows)
    bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
    return [table.slice(int(a), int(b - a)) for a, b in itertools.pairwise(bounds)]


def take_rows(batch: ScoringBatch, rows: np.ndarray) -> ScoringBatch:
    """The batch restricted to ``rows`` (vectorized take; ``rows_rejected`` is not carried)."""
    return ScoringBatch(
        table=batch.table.take(pa.array(rows, type=pa.int64())),
        features={k: v[rows] for k, v in batch.features.items()},
        predictions={k: v[rows] for k, v in batch.predictions.items()},
        model_id=batch.model_id,
        rows_rejected=0,
    )


def drop_rows(batch: ScoringBatch, rows: np.ndarray) -> ScoringBatch:
    """The batch without ``rows`` (indices), keeping its ``model_id`` and ``rows_rejected``."""
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[rows] = False
    kept = take_rows(batch, np.flatnonzero(keep))
    kept.rows_rejected = batch.rows_rejected
    return kept
