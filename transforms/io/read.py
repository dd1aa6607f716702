"""The pipeline's input step: Parquet or TFRecord files as a PCollection of Arrow tables.

Both readers produce the same element type (one ``pyarrow.Table`` of many
rows), so everything downstream is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from keras_batch_score.transforms.io.parquet_read import ReadParquetBatches
from keras_batch_score.transforms.io.tfrecord_read import DEFAULT_PARSE_ROWS, ReadTFRecordBatches
from keras_batch_score.transforms.io.tfrecord_spec import TFRecordFeature


class ReadInput(beam.PTransform):
    """Reads the input files as Arrow tables.

    Args:
        input_format: ``parquet`` or ``tfrecord``.
        files: The matched input files (Parquet reads them row group by row group).
        pattern: The input pattern (TFRecord reads it with Beam's source).
        columns: Only these columns are read.
        tfrecord_features: The TFRecord feature spec.
        batch_rows: Records per vectorized ``tf.io.parse_example`` call (TFRecord).
        schema: The planned (unified) Parquet schema; each table is cast to it.
        locator: Append the row locator columns ``source_file`` and ``row_index``.
        with_errors: Return ``(tables, errors)``, where errors are the records that
            cannot be parsed (TFRecord; none for Parquet). Otherwise return the tables.
    """

    def __init__(
        self,
        *,
        input_format: str,
        files: Sequence[str],
        pattern: str,
        columns: Sequence[str],
        tfrecord_features: Sequence[TFRecordFeature] = (),
        batch_rows: int = DEFAULT_PARSE_ROWS,
        schema: pa.Schema | None = None,
        locator: bool = False,
        with_errors: bool = False,
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
        self._schema = schema
        self._locator = locator
        self._with_errors = with_errors

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        if self._format == "tfrecord":
            return pbegin | "TFRecord" >> ReadTFRecordBatches(
                self._pattern,
                self._features,
                self._batch_rows,
                self._columns,
                locator=self._locator,
                with_errors=self._with_errors,
            )
        tables = pbegin | "Parquet" >> ReadParquetBatches(
            self._files, self._columns, self._schema, self._locator
        )
        if not self._with_errors:
            return tables
        return tables, pbegin | "NoReadErrors" >> beam.Create([]).with_output_types(pa.Table)
