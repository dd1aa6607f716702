"""Predictions as JSON Lines (Vertex AI batch prediction layout) or TFRecord ``tf.train.Example``.

Both are written from the same Arrow predictions tables as the Parquet
output, sharded by Beam's text / TFRecord sinks into the run's staging
directory and published by the final step like every other file.

JSON Lines, one object per row, as Vertex AI Batch Prediction writes
``prediction.results-*`` files (``instance`` + ``prediction``)::

    {"instance": {"id": 7}, "prediction": 0.93, "model": "m-1a2b"}
    {"instance": {"id": 8}, "prediction": [0.1, 0.9], "top_k_labels": ["cat"], ...}
    {"instance": {"id": 9}, "prediction": {"score": 0.4, "embedding": [...]}, "model": "..."}

* ``instance``: the passthrough columns (the ``--id-column`` columns, or the
  row locator ``source_file`` / ``row_index``), by name. The model's features
  are not repeated (Vertex echoes the whole input; a key is enough to join).
* ``prediction``: a number (one output of width 1), a list (a wider output),
  or, for several named outputs, an object keyed by output name.
* Every other output column (``model``, ``prediction_std``, ``top_k_*``,
  ``prob_*``, ``labels``, ``*_shadow`` ...) is a top-level key named like
  its Parquet column. NaN is written as ``null`` (JSON has no NaN).

TFRecord: one ``tf.train.Example`` per row with one feature per output
column, named like the Parquet column: float columns as ``float_list``,
integer and boolean columns as ``int64_list``, strings as ``bytes_list``
(list columns give one value per element); a null value leaves the feature
out. This is what TFX ``BulkInferrer`` users read with ``tf.io.parse_example``.

TFRecord records are encoded columnar (:mod:`transforms.example_encoder`,
numpy over whole tables); JSON lines are encoded per row with ``json.dumps``
in the write step (only when ``jsonl`` is chosen).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.example_encoder import serialize_examples

FORMATS = ("parquet", "jsonl", "tfrecord")
SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "tfrecord": ".tfrecord"}


@dataclasses.dataclass(frozen=True)
class JsonLayout:
    """Which columns form ``instance`` and ``prediction`` in a JSON line.

    Attributes:
        instance_columns: The passthrough columns.
        prediction_columns: ``(column, output name)`` of the model outputs' base columns.
    """

    instance_columns: tuple[str, ...]
    prediction_columns: tuple[tuple[str, str], ...]


def _nan_to_null(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if pa.types.is_floating(t):
        return pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type):
        flat = _nan_to_null(arr.values)
        return type(arr).from_arrays(arr.offsets, flat, mask=arr.is_null())
    return arr


def json_lines(table: pa.Table, layout: JsonLayout) -> str:
    """The rows of a predictions table as JSON lines (no trailing newline)."""
    values = {name: _nan_to_null(table.column(name)).to_pylist() for name in table.column_names}
    n = table.num_rows
    instance_cols = [c for c in layout.instance_columns if c in values]
    pred_cols = list(layout.prediction_columns)
    taken = set(instance_cols) | {c for c, _ in pred_cols}
    rest = [c for c in table.column_names if c not in taken]
    lines = []
    for i in range(n):
        record: dict[str, Any] = {"instance": {c: values[c][i] for c in instance_cols}}
        if len(pred_cols) == 1:
            record["prediction"] = values[pred_cols[0][0]][i]
        else:
            record["prediction"] = {name: values[c][i] for c, name in pred_cols}
        for c in rest:
            record[c] = values[c][i]
        lines.append(json.dumps(record, default=str, allow_nan=False))
    return "\n".join(lines)


def examples(table: pa.Table) -> list[bytes]:
    """The rows of a predictions table as serialized ``tf.train.Example`` messages (columnar encoder)."""
    return serialize_examples(table).rows()


class WriteJsonLines(beam.PTransform):
    """Predictions tables -> ``<prefix>-SSSSS-of-NNNNN.jsonl``; returns the file names."""

    def __init__(self, file_prefix: str, layout: JsonLayout, *, num_shards: int = 0) -> None:
        super().__init__()
        self._prefix = file_prefix
        self._layout = layout
        self._num_shards = num_shards

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        layout = self._layout
        return (
            tables
            | "NonEmpty" >> beam.Filter(lambda t: t.num_rows > 0)
            | "ToJsonLines" >> beam.Map(json_lines, layout)
            | "WriteText"
            >> beam.io.WriteToText(
                self._prefix, file_name_suffix=SUFFIX["jsonl"], num_shards=self._num_shards
            )
        )


class WriteTFRecords(beam.PTransform):
    """Predictions tables -> ``<prefix>-SSSSS-of-NNNNN.tfrecord``; returns the file names."""

    def __init__(self, file_prefix: str, *, num_shards: int = 0) -> None:
        super().__init__()
        self._prefix = file_prefix
        self._num_shards = num_shards

    def expand(self, tables: beam.PCollection) -> beam.PCollection:
        return (
            tables
            | "ToExamples" >> beam.FlatMap(examples).with_output_types(bytes)
            | "WriteRecords"
            >> beam.io.WriteToTFRecord(
                self._prefix, file_name_suffix=SUFFIX["tfrecord"], num_shards=self._num_shards
            )
        )


def prediction_layout(
    passthrough: Sequence[str], columns: Sequence[str], names: Sequence[str]
) -> JsonLayout:
    """The JSON layout from the passthrough columns and the base prediction columns + output names."""
    return JsonLayout(tuple(passthrough), tuple(zip(columns, names, strict=True)))
