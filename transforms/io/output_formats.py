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

Both are encoded columnar: JSON text with Arrow compute string kernels,
``tf.train.Example`` bytes with numpy (:mod:`keras_batch_score.transforms.io.example_encoder`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.arrow import one_array, readable_text
from keras_batch_score.transforms.io.example_encoder import serialize_examples

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


def _quoted(arr: pa.Array) -> pa.Array:
    """JSON string literals of a string array (escapes quotes, backslashes, control characters)."""
    text = pc.replace_substring(arr, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            text = pc.replace_substring(text, chr(code), f"\\u{code:04x}")
    return pc.binary_join_element_wise('"', text, '"', "")


def json_values(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value of ``column`` as JSON text (``null`` for nulls, NaN and Inf), without nulls."""
    arr = one_array(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_floating(t):
        text = pc.cast(arr, pa.string())
        text = pc.if_else(pc.is_finite(arr), text, pa.scalar(None, pa.string()))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = _quoted(readable_text(arr).cast(pa.string()))  # JSON text: bytes not UTF-8 escaped
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_fixed_size_list(t):
            width = t.list_size
            values = arr.values.slice(arr.offset * width, len(arr) * width)
            offsets = pa.array(np.arange(len(arr) + 1, dtype=np.int32) * width)
        else:
            values = arr.values
            offsets = arr.offsets
        inner = pa.ListArray.from_arrays(offsets, json_values(values).cast(pa.string()))
        joined = pc.binary_join(inner, ",")
        text = pc.binary_join_element_wise("[", joined, "]", "")
        text = pc.if_else(arr.is_valid(), text, pa.scalar(None, pa.string()))
    else:  # dates, binaries, ...: rare in predictions; per value
        text = pa.array([json.dumps(v, default=str) for v in arr.to_pylist()], type=pa.string())
    return text.cast(pa.string()).fill_null("null")


def json_lines(table: pa.Table, layout: JsonLayout) -> str:
    """The rows of a predictions table as JSON lines (no trailing newline), columnar.

    Floats are written in their shortest round-trip form for their own
    precision (a float32 ``0.37759227`` parses back to the same float32).
    """
    if not table.num_rows:
        return ""
    instance_cols = [c for c in layout.instance_columns if c in table.column_names]
    pred_cols = list(layout.prediction_columns)
    taken = set(instance_cols) | {c for c, _ in pred_cols}
    rest = [c for c in table.column_names if c not in taken]
    pieces: list[Any] = []

    def literal(text: str) -> None:
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += text
        else:
            pieces.append(text)

    literal('{"instance": {')
    for i, c in enumerate(instance_cols):
        literal((", " if i else "") + json.dumps(c) + ": ")
        pieces.append(json_values(table.column(c)))
    literal('}, "prediction": ')
    if len(pred_cols) == 1:
        pieces.append(json_values(table.column(pred_cols[0][0])))
    else:
        literal("{")
        for i, (c, name) in enumerate(pred_cols):
            literal((", " if i else "") + json.dumps(name) + ": ")
            pieces.append(json_values(table.column(c)))
        literal("}")
    for c in rest:
        literal(", " + json.dumps(c) + ": ")
        pieces.append(json_values(table.column(c)))
    literal("}")
    lines = pc.binary_join_element_wise(*pieces, "").cast(pa.large_string())
    one = pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines)
    return pc.binary_join(one, pa.scalar("\n", pa.large_string()))[0].as_py()


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
