"""TFRecord input with Beam: ``tf.train.Example`` records -> the same Arrow tables the Parquet reader yields.

The serialized records are read by Beam's TFRecord source (GZIP detected from
the file extension), grouped into fixed-size batches, and each batch is parsed
by :func:`keras_batch_score.transforms.io.tfrecord_parse.parse_examples_located`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.tfrecordio import _TFRecordSource

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.io.tfrecord_parse import BadRecord, parse_examples_located
from keras_batch_score.transforms.io.tfrecord_spec import (
    CorruptTFRecordError,
    TFRecordFeature,
    arrow_schema,
)

_LOG = logging.getLogger("keras_batch_score")

DEFAULT_PARSE_ROWS = 2048


class _NamedTFRecordSource(_TFRecordSource):
    """Beam's TFRecord source, yielding ``(file, record index, record)``; read errors name the file.

    Beam never splits a TFRecord file (it has no sync markers), so counting the
    records of one ``read_records`` call gives each record's index in its file.
    """

    def read_records(self, file_name: str, offset_range_tracker: Any) -> Iterable[Any]:
        try:
            for index, record in enumerate(super().read_records(file_name, offset_range_tracker)):
                yield file_name, index, record
        except Exception as e:
            detail = str(e).split(": b'")[0]  # drop Beam's hex dump of the bad bytes
            raise CorruptTFRecordError(
                f"TFRecord file {file_name} is truncated or corrupt: {detail}"
            ) from e

    def default_output_coder(self) -> beam.coders.Coder:
        return beam.coders.TupleCoder(
            [beam.coders.StrUtf8Coder(), beam.coders.VarIntCoder(), beam.coders.BytesCoder()]
        )


class _ParseExamplesDoFn(beam.DoFn):
    """A list of ``(file, record index, record)`` -> one parsed Arrow table (+ an errors table).

    Records that cannot be parsed go to the ``errors`` output (stage ``parse``),
    or, without ``emit_errors``, are logged and dropped.
    """

    ERRORS = "errors"

    def __init__(self, specs: Sequence[TFRecordFeature], locator: bool, emit_errors: bool) -> None:
        self._specs = tuple(specs)
        self._locator = locator
        self._emit_errors = emit_errors

    def setup(self) -> None:
        self._unparsed = beam.metrics.Metrics.counter("keras_batch_score", "records_unparsed")

    def process(self, batch: list[tuple[str, int, bytes]]) -> Iterable[Any]:
        if not batch:
            return
        files, indices, records = zip(*batch, strict=True)
        table, bad = parse_examples_located(records, self._specs)
        if self._locator:
            keep = np.delete(np.arange(len(records)), [b.position for b in bad])
            file_col = pa.array(files, pa.string())
            index_col = pa.array(np.asarray(indices, dtype=np.int64))
            if bad:
                file_col, index_col = file_col.take(keep), index_col.take(keep)
            table = table.append_column("source_file", file_col).append_column(
                "row_index", index_col
            )
        yield table
        if bad:
            self._unparsed.inc(len(bad))
            errors = self._errors(bad, files, indices)
            if self._emit_errors:
                yield beam.pvalue.TaggedOutput(self.ERRORS, errors)
            else:
                _LOG.warning(
                    "%d TFRecord record(s) cannot be parsed and are skipped, e.g. %s",
                    len(bad),
                    errors.column("reason")[0].as_py(),
                )

    def _errors(
        self, bad: Sequence[BadRecord], files: Sequence[str], indices: Sequence[int]
    ) -> pa.Table:
        from keras_batch_score.transforms.core.errors import error_table

        schema = arrow_schema(self._specs)
        rows = []
        for b in bad:
            row = dict(b.values)
            if self._locator:
                row |= {"source_file": files[b.position], "row_index": indices[b.position]}
            rows.append(row)
        if self._locator:
            schema = pa.schema([*schema, ("source_file", pa.string()), ("row_index", pa.int64())])
        reasons = [
            f"TFRecord file {files[b.position]} record {indices[b.position]}: "
            + (f"feature {b.column!r}: {b.detail}" if b.column else b.detail)
            for b in bad
        ]
        return error_table(
            pa.Table.from_pylist(rows, schema=schema),
            np.arange(len(bad)),
            "parse",
            [b.column for b in bad],
            reasons,
        )


class ReadTFRecordBatches(beam.PTransform):
    """TFRecord files -> Arrow tables of up to ``batch_rows`` parsed ``tf.train.Example`` rows.

    Args:
        pattern: Files to read.
        specs: The feature spec.
        batch_rows: Records per vectorized ``tf.io.parse_example`` call.
        columns: Only these features are parsed.
        locator: Append ``source_file`` and ``row_index`` (the record's index in its file).
        with_errors: Return ``(tables, errors)``: records that cannot be parsed
            become errors-output rows. Otherwise they are logged and skipped.
    """

    def __init__(
        self,
        pattern: str,
        specs: Sequence[TFRecordFeature],
        batch_rows: int = DEFAULT_PARSE_ROWS,
        columns: Sequence[str] | None = None,
        *,
        locator: bool = False,
        with_errors: bool = False,
    ) -> None:
        super().__init__()
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        wanted = set(columns) if columns is not None else None
        self._specs = tuple(s for s in specs if wanted is None or s.name in wanted)
        if not self._specs:
            raise ValueError("no features to read")
        self._pattern = pattern
        self._batch_rows = batch_rows
        self._locator = locator
        self._with_errors = with_errors

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        source = _NamedTFRecordSource(
            self._pattern, beam.coders.BytesCoder(), CompressionTypes.AUTO, validate=True
        )
        parsed = (
            pbegin
            | "ReadRecords" >> beam.io.Read(source)
            | "BatchRecords"
            >> beam.BatchElements(min_batch_size=self._batch_rows, max_batch_size=self._batch_rows)
            | "ParseExamples"
            >> beam.ParDo(_ParseExamplesDoFn(self._specs, self._locator, self._with_errors))
            .with_output_types(pa.Table, errors=pa.Table)
            .with_outputs(_ParseExamplesDoFn.ERRORS, main="tables")
        )
        if self._with_errors:
            return parsed.tables, parsed.errors
        return parsed.tables
