"""The Arrow tables the outputs are written from: predictions, and errors as JSON lines (no Beam).

The predictions table holds the passthrough id columns, one prediction column
per model output and ``model``; every output format is written from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.model.tensors import TensorInfo


def output_fields(outputs: Sequence[TensorInfo]) -> list[pa.Field]:
    """Prediction columns for the model's outputs.

    A single output is ``prediction``; several are ``prediction_<output name>``.
    Width 1 gives ``float32``, wider outputs ``list<float32>``.
    """
    fields = []
    for info in outputs:
        name = "prediction" if len(outputs) == 1 else f"prediction_{info.name}"
        value_type = (
            pa.float32()
            if np.dtype(info.dtype).kind == "f"
            else pa.from_numpy_dtype(np.dtype(info.dtype))
        )
        fields.append(pa.field(name, value_type if info.width == 1 else pa.list_(value_type)))
    return fields


def predictions_schema(
    input_schema: pa.Schema, id_columns: Sequence[str], outputs: Sequence[TensorInfo]
) -> pa.Schema:
    """Passthrough id columns, then prediction column(s), then ``model``."""
    fields = [input_schema.field(c) for c in id_columns]
    fields += output_fields(outputs)
    fields.append(pa.field("model", pa.string()))
    return pa.schema(fields)


def to_predictions_table(
    batch: ScoringBatch, schema: pa.Schema, output_names: Sequence[str]
) -> pa.Table:
    """The predictions table of one scored batch (columnar, no per-row Python)."""
    n = batch.num_rows
    columns: list[pa.Array] = []
    passthrough = set(batch.table.column_names)  # all feature columns too, with drift
    pred_fields = [f for f in schema if f.name not in passthrough and f.name != "model"]
    id_names = [f.name for f in schema if f.name in passthrough]
    for name in id_names:
        columns.append(batch.table.column(name))
    for field, out_name in zip(pred_fields, output_names, strict=True):
        values = np.asarray(batch.predictions[out_name])
        if pa.types.is_list(field.type) and values.dtype == object and values.ndim == 2:
            columns.append(ragged_list(values, field.type))  # e.g. multi-label ``labels``
        elif pa.types.is_list(field.type):
            flat = values.reshape(n, -1)
            fixed = pa.FixedSizeListArray.from_arrays(
                pa.array(flat.ravel(), type=field.type.value_type), flat.shape[1]
            )
            columns.append(fixed.cast(field.type))
        else:
            # NaN (a shadow model that failed on the row) is written as null: "no value".
            columns.append(pa.array(values.reshape(n), type=field.type, from_pandas=True))
    model_id = batch.model_id or ""
    columns.append(
        pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), [model_id]).cast(pa.string())
    )
    return pa.Table.from_arrays(columns, schema=schema)


def ragged_list(values: np.ndarray, list_type: pa.DataType) -> pa.Array:
    """An ``(n, c)`` object array with None holes -> a list column of each row's non-None values."""
    present = values != None  # noqa: E711  (element-wise)
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    flat = pa.array(values[present], type=list_type.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), flat).cast(list_type)


def errors_to_jsonl(table: pa.Table) -> str:
    """One JSON object per rejected row, newline-separated (no trailing newline)."""
    lines = []
    for stage, column, reason, row in zip(
        table.column("stage").to_pylist(),
        table.column("column").to_pylist(),
        table.column("reason").to_pylist(),
        table.column("row").to_pylist(),
        strict=True,
    ):
        lines.append(
            json.dumps({"stage": stage, "column": column, "reason": reason})[:-1]
            + ', "row": '
            + row
            + "}"
        )
    return "\n".join(lines)
