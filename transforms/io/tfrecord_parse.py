"""Parsing serialized ``tf.train.Example`` records into Arrow tables (TensorFlow, no Beam).

Every feature is parsed as a ``RaggedFeature`` with ONE ``tf.io.parse_example``
call per batch, so that a record with a missing feature or a vector of the
wrong length becomes a null in its column (and a row-level error downstream)
instead of failing the whole batch. Records TensorFlow refuses, and records
with a value that their feature's type cannot hold (a ``string`` that is not
UTF-8), are located and split off by :func:`parse_examples_located`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from keras_batch_score.transforms.io.tfrecord_spec import ARROW_TYPES, TFRecordFeature, arrow_schema

_NOT_UTF8 = "the value is not UTF-8 text (declare the feature as dtype 'bytes' to read binary data)"


class InvalidValue(ValueError):
    """A value that its feature's declared type cannot hold (a ``string`` that is not UTF-8)."""


def parse_examples(serialized: Sequence[bytes] | Any, specs: Sequence[TFRecordFeature]) -> pa.Table:
    """Parses serialized ``tf.train.Example`` records with one ``tf.io.parse_example`` call.

    A record lacking a feature gets its default, or a null without one; a record
    whose feature has the wrong number of values gets a null.
    """
    import tensorflow as tf

    tf_dtypes = {"float": tf.float32, "int": tf.int64, "bytes": tf.string, "string": tf.string}
    features = {
        s.name: tf.io.RaggedFeature(tf_dtypes[s.dtype], row_splits_dtype=tf.int64) for s in specs
    }
    parsed = tf.io.parse_example(tf.convert_to_tensor(serialized, dtype=tf.string), features)
    n = int(tf.shape(parsed[specs[0].name].row_splits)[0]) - 1 if specs else 0
    columns = [_to_arrow(parsed[s.name], s, n) for s in specs]
    return pa.Table.from_arrays(columns, schema=arrow_schema(specs))


def _to_arrow(ragged: Any, spec: TFRecordFeature, n: int) -> pa.Array:
    splits = ragged.row_splits.numpy()
    lengths = np.diff(splits)
    width = spec.width
    ok = lengths == width
    if ok.all():
        flat, mask = _values_array(ragged.values, spec), None
    else:
        values, mask = _padded_values(ragged.values.numpy(), splits, lengths, spec, n)
        flat = _array(values, spec, None if spec.shape else mask)  # a scalar column takes its mask
    if not spec.shape:
        return flat
    return pa.FixedSizeListArray.from_arrays(
        flat, width, mask=None if mask is None else pa.array(mask)
    )


def _values_array(values: Any, spec: TFRecordFeature) -> pa.Array:
    """The parsed values of a batch where every record has all of them, as one Arrow array.

    Strings go through one ``reduce_join`` into a single buffer that Arrow takes
    as it is, instead of one Python ``bytes`` object per value copied again into
    Arrow (half the CPU of this step on encoded images).

    Raises:
        InvalidValue: A ``string`` feature holds bytes that are not UTF-8.
    """
    import tensorflow as tf

    if spec.dtype not in ("bytes", "string"):
        return pa.array(values.numpy(), type=ARROW_TYPES[spec.dtype])
    offsets = np.zeros(int(values.shape[0]) + 1, np.int64)
    np.cumsum(tf.strings.length(values).numpy(), out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:  # more than Arrow's binary type holds in one array
        return _array(values.numpy(), spec, None)
    data = tf.strings.reduce_join(values).numpy()
    binary = pa.Array.from_buffers(
        pa.binary(),
        len(offsets) - 1,
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
    )
    if spec.dtype == "bytes":
        return binary
    try:
        return binary.cast(pa.string())
    except pa.ArrowInvalid as e:
        raise InvalidValue(_NOT_UTF8) from e


def _padded_values(
    values: np.ndarray, splits: np.ndarray, lengths: np.ndarray, spec: TFRecordFeature, n: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat ``n x width`` values and the null mask, where some records lack values or have too many."""
    width = spec.width
    ok = lengths == width
    # Rows with the wrong number of values read `width` filler values past the end.
    filler = (
        np.full(width, b"", dtype=object)
        if values.dtype == object
        else np.zeros(width, values.dtype)
    )
    padded = np.concatenate([values, filler])
    starts = np.where(ok, splits[:-1], len(values))
    flat = padded[(starts[:, None] + np.arange(width)).ravel()]
    if spec.default is not None:
        missing = lengths == 0
        if missing.any():
            flat = flat.reshape(n, width)
            flat[missing] = _default_values(spec)
            flat = flat.ravel()
            ok = ok | missing
    return flat, None if ok.all() else ~ok


def _array(flat: np.ndarray, spec: TFRecordFeature, mask: np.ndarray | None) -> pa.Array:
    """``flat`` as the feature's Arrow type; a ``string`` that is not UTF-8 raises InvalidValue."""
    try:
        return pa.array(flat, type=ARROW_TYPES[spec.dtype], mask=mask)
    except pa.ArrowInvalid as e:
        if spec.dtype == "string":
            raise InvalidValue(_NOT_UTF8) from e
        raise


def _default_values(spec: TFRecordFeature) -> np.ndarray:
    default = spec.default if isinstance(spec.default, list) else [spec.default]
    if spec.dtype in ("bytes", "string"):
        default = [d.encode() if isinstance(d, str) else d for d in default]
        return np.array(default * (spec.width // len(default)), dtype=object)
    return np.array(default * (spec.width // len(default)))


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that ``tf.io.parse_example`` refuses, or with a value its type cannot hold.

    Attributes:
        position: The record's position in the parsed batch.
        column: The feature that cannot be parsed (``None``: not a ``tf.train.Example``).
        detail: What TensorFlow said, without its op prefix.
        values: The record's other features that do parse (for the errors output).
    """

    position: int
    column: str | None
    detail: str
    values: dict[str, Any]


def parse_examples_located(
    serialized: Sequence[bytes], specs: Sequence[TFRecordFeature]
) -> tuple[pa.Table, list[BadRecord]]:
    """:func:`parse_examples`, but records it refuses are split off instead of failing the batch.

    The batch is parsed with one vectorized call. Only when that call raises
    (a feature of the wrong type, e.g. an ``int64_list`` where a ``float_list``
    is expected, or bytes that are no ``tf.train.Example``) are the bad records
    located by bisection: halves that parse are kept whole, so ``k`` bad records
    in ``n`` cost about ``2 k log2(n)`` calls and never more than ``2 n``. Each
    bad record is then parsed feature by feature to name the culprit (one more
    call per feature and bad record).

    Returns:
        The good records' table (in batch order) and the bad records.
    """
    records = list(serialized)
    errors = _parse_errors()
    try:
        return parse_examples(records, specs), []
    except errors:
        pass
    parts: list[pa.Table] = []
    bad: list[BadRecord] = []

    def visit(lo: int, hi: int) -> None:
        try:
            parts.append(parse_examples(records[lo:hi], specs))
        except errors as e:
            if hi - lo == 1:
                bad.append(_diagnose(records[lo], lo, specs, e))
            else:
                visit(lo, (lo + hi) // 2)
                visit((lo + hi) // 2, hi)

    mid = len(records) // 2
    if mid:
        visit(0, mid)
    visit(mid, len(records))
    table = pa.concat_tables(parts) if parts else arrow_schema(specs).empty_table()
    return table, bad


def _parse_errors() -> tuple[type[Exception], ...]:
    """What ``tf.io.parse_example`` raises for a bad record.

    TensorFlow raises ``UnicodeDecodeError`` when its message quotes non-UTF-8 bytes,
    and :class:`InvalidValue` is ours, for values their declared type cannot hold.
    """
    import tensorflow as tf

    return (tf.errors.InvalidArgumentError, UnicodeDecodeError, InvalidValue)


def _tf_detail(error: Exception) -> str:
    text = str(getattr(error, "message", error))
    text = text.split("}} ", 1)[-1].split(" [Op:", 1)[0]
    if "Index: " in text:  # "Name: <unknown>, Key: a, Index: 0.  Data types don't match. ..."
        text = text.split(".  ", 1)[-1]
    return text.strip()


def _diagnose(
    record: bytes, position: int, specs: Sequence[TFRecordFeature], error: Exception
) -> BadRecord:
    values: dict[str, Any] = {}
    failed: list[tuple[str, str]] = []
    for spec in specs:
        try:
            values[spec.name] = parse_examples([record], [spec]).column(0)[0].as_py()
        except _parse_errors() as e:
            failed.append((spec.name, _tf_detail(e)))
    if len(failed) == len(specs) and all(
        "Could not parse example" in d or "codec can't decode" in d for _, d in failed
    ):
        return BadRecord(position, None, "the record is not a tf.train.Example", {})
    if not failed:  # only the combination fails (should not happen); report TF's words
        return BadRecord(position, None, _tf_detail(error), values)
    column, detail = failed[0]
    return BadRecord(position, column, detail, values)


def example_bytes(row: Mapping[str, Any]) -> bytes:
    """Serializes one row (feature name -> value or list) as a ``tf.train.Example`` (tests, tools)."""
    import tensorflow as tf

    feature = {}
    for name, value in row.items():
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if values and isinstance(values[0], (bytes, str)):
            values = [v.encode() if isinstance(v, str) else v for v in values]
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif values and isinstance(values[0], (float, np.floating)):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(v) for v in values])
            )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
