"""TFRecord input with Beam: ``tf.train.Example`` records -> the same Arrow tables the Parquet reader yields.

The matched files are read whole by one DoFn each (Beam never splits a
TFRecord file: it has no sync markers), with Beam's record framing and CRC
checks, into lists of ``batch_rows`` serialized records: records never travel
through the pipeline one by one. Each list is parsed by
:func:`keras_batch_score.transforms.io.tfrecord_parse.parse_examples_located`,
a few batches ahead on a background thread.
GZIP and the other Beam compressions are detected from the file extension.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from keras_batch_score.transforms.core import coders  # noqa: F401  (registers the Arrow / ScoringBatch coders)
from keras_batch_score.transforms.io.prefetch import read_ahead
from keras_batch_score.transforms.io.tfrecord_parse import BadRecord, parse_examples_located
from keras_batch_score.transforms.io.tfrecord_spec import (
    CorruptTFRecordError,
    TFRecordFeature,
    arrow_schema,
)

_LOG = logging.getLogger("keras_batch_score")

DEFAULT_PARSE_ROWS = 2048
READ_AHEAD_BATCHES = 2  # parsed record batches held ahead of the model

RecordBatch = tuple[str, int, list[bytes]]
"""``(file, index of the first record in its file, serialized records)``."""


def read_record_batches(path: str, batch_rows: int) -> Iterator[RecordBatch]:
    """The records of ``path`` (any Beam filesystem), ``batch_rows`` at a time.

    Raises:
        CorruptTFRecordError: naming the file, when a record is truncated or its
            CRC does not match.
    """
    start, records = 0, []
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
            while (record := _TFRecordUtil.read_record(f)) is not None:
                records.append(record)
                if len(records) == batch_rows:
                    yield path, start, records
                    start, records = start + batch_rows, []
    except Exception as e:
        detail = str(e).split(": b'")[0]  # drop Beam's hex dump of the bad bytes
        raise CorruptTFRecordError(f"TFRecord file {path} is truncated or corrupt: {detail}") from e
    if records:
        yield path, start, records


def parse_batches(
    batches: Iterable[RecordBatch], specs: Sequence[TFRecordFeature]
) -> Iterator[tuple[RecordBatch, pa.Table, list[BadRecord]]]:
    """Each record batch with its parsed table and the records that do not parse."""
    for batch in batches:
        yield batch, *parse_examples_located(batch[2], specs)


class _ReadExamplesDoFn(beam.DoFn):
    """A matched file -> parsed Arrow tables (+ errors tables), read and parsed ahead.

    The file's records are read and parsed on a background thread
    (:func:`keras_batch_score.transforms.io.prefetch.read_ahead`; the CRC checks
    and ``tf.io.parse_example`` release the GIL) while the steps fused after
    this one score the previous batch. Records that cannot be parsed go to the
    ``errors`` output (stage ``parse``), or, without ``emit_errors``, are logged
    and dropped.
    """

    ERRORS = "errors"

    def __init__(
        self,
        specs: Sequence[TFRecordFeature],
        batch_rows: int,
        locator: bool,
        emit_errors: bool,
    ) -> None:
        self._specs = tuple(specs)
        self._batch_rows = batch_rows
        self._locator = locator
        self._emit_errors = emit_errors

    def setup(self) -> None:
        self._unparsed = beam.metrics.Metrics.counter("keras_batch_score", "records_unparsed")

    def process(self, metadata: Any) -> Iterable[Any]:
        batches = read_record_batches(metadata.path, self._batch_rows)
        for batch, table, bad in read_ahead(
            parse_batches(batches, self._specs), READ_AHEAD_BATCHES, "tfrecord-read-ahead"
        ):
            yield from self._outputs(batch, table, bad)

    def _outputs(self, batch: RecordBatch, table: pa.Table, bad: list[BadRecord]) -> Iterable[Any]:
        file, start, records = batch
        if self._locator:
            keep = np.delete(np.arange(len(records)), [b.position for b in bad])
            table = table.append_column(
                "source_file", pa.repeat(pa.scalar(file, pa.string()), len(keep))
            ).append_column("row_index", pa.array(start + keep, pa.int64()))
        yield table
        if bad:
            self._unparsed.inc(len(bad))
            errors = self._errors(bad, file, start)
            if self._emit_errors:
                yield beam.pvalue.TaggedOutput(self.ERRORS, errors)
            else:
                _LOG.warning(
                    "%d TFRecord record(s) cannot be parsed and are skipped, e.g. %s",
                    len(bad),
                    errors.column("reason")[0].as_py(),
                )

    def _errors(self, bad: Sequence[BadRecord], file: str, start: int) -> pa.Table:
        from keras_batch_score.transforms.core.errors import error_table

        schema = arrow_schema(self._specs)
        rows = []
        for b in bad:
            row = dict(b.values)
            if self._locator:
                row |= {"source_file": file, "row_index": start + b.position}
            rows.append(row)
        if self._locator:
            schema = pa.schema([*schema, ("source_file", pa.string()), ("row_index", pa.int64())])
        reasons = [
            f"TFRecord file {file} record {start + b.position}: "
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
        parsed = (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadExamples"
            >> beam.ParDo(
                _ReadExamplesDoFn(self._specs, self._batch_rows, self._locator, self._with_errors)
            )
            .with_output_types(pa.Table, errors=pa.Table)
            .with_outputs(_ReadExamplesDoFn.ERRORS, main="tables")
        )
        if self._with_errors:
            return parsed.tables, parsed.errors
        return parsed.tables
