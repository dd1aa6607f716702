"""The pipeline's input step: Parquet or TFRecord files as a PCollection of Arrow tables.

Both readers produce the same element type (one ``pyarrow.Table`` of many
rows), so everything downstream is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam

from transforms.io import ReadParquetBatches
from transforms.tfrecord import DEFAULT_PARSE_ROWS, FeatureSpec, ReadTFRecordBatches


class ReadInput(beam.PTransform):
    """Reads the input files as Arrow tables.

    Args:
        input_format: ``parquet`` or ``tfrecord``.
        files: The matched input files (Parquet reads them row group by row group).
        pattern: The input pattern (TFRecord reads it with Beam's source).
        columns: Only these columns are read.
        tfrecord_features: The TFRecord feature spec.
        batch_rows: Records per vectorized ``tf.io.parse_example`` call (TFRecord).
    """

    def __init__(
        self,
        *,
        input_format: str,
        files: Sequence[str],
        pattern: str,
        columns: Sequence[str],
        tfrecord_features: Sequence[FeatureSpec] = (),
        batch_rows: int = DEFAULT_PARSE_ROWS,
    ) -> None:
        super().__init__()
        if input_format not in ("parquet", "tfrecord"):
            raise ValueError(f"input_format must be 'parquet' or 'tfrecord', got {input_format!r}")
        self._format = input_format
        self._files = list(files)
        self._pattern = pattern
        self._columns = list(columns)
        self._features = tuple(tfrecord_features)
        self._batch_rows = min(batch_rows, DEFAULT_PARSE_ROWS)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self._format == "tfrecord":
            return pbegin | "TFRecord" >> ReadTFRecordBatches(
                self._pattern, self._features, self._batch_rows, self._columns
            )
        return pbegin | "Parquet" >> ReadParquetBatches(self._files, self._columns)
