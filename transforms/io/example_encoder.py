"""Columnar ``tf.train.Example`` serialization: a whole Arrow table in numpy, no per-row protobufs.

An Example is nested length-delimited protobuf messages::

    Example   { 1: Features }
    Features  { repeated 1: MapEntry }            (map<string, Feature>)
    MapEntry  { 1: key (string), 2: Feature }
    Feature   { 1: BytesList | 2: FloatList | 3: Int64List }
    FloatList { 1: packed float }  Int64List { 1: packed varint }  BytesList { repeated 1: bytes }

Every level is built for all rows at once as a :class:`Ragged` byte array
(one byte string per row, as data + offsets), so the cost is a few numpy
calls per column. The bytes parse with ``tf.train.Example.FromString`` and
``tf.io.parse_example`` (the tests check them against independent parses).
A null value leaves the feature out of that row's Example.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LEN = 2  # wire type: length-delimited


@dataclasses.dataclass(frozen=True)
class Ragged:
    """One byte string per row: ``data[offsets[i]:offsets[i + 1]]`` (``offsets[0] == 0``)."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, n + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self) -> list[bytes]:
        """The byte strings (one Python bytes object per row, for the record sink)."""
        buf = self.data.tobytes()
        o = self.offsets.tolist()
        return [buf[a:b] for a, b in itertools.pairwise(o)]


def _from_lengths(data: np.ndarray, lengths: np.ndarray) -> Ragged:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Ragged(np.ascontiguousarray(data, dtype=np.uint8), offsets)


def concat_rows(parts: Sequence[Ragged]) -> Ragged:
    """Row ``i`` of the result is row ``i`` of every part, concatenated in order."""
    lengths = np.stack([p.lengths for p in parts])  # (parts, n)
    total = lengths.sum(axis=0)
    out = np.empty(int(total.sum()), dtype=np.uint8)
    row_start = np.concatenate([[0], np.cumsum(total)[:-1]]).astype(np.int64)
    before = np.cumsum(lengths, axis=0) - lengths  # bytes of earlier parts in the same row
    for part, lens, prior in zip(parts, lengths, before, strict=True):
        if not part.data.size:
            continue
        shift = np.repeat(row_start + prior - part.offsets[:-1], lens)
        out[shift + np.arange(part.data.size, dtype=np.int64)] = part.data
    return _from_lengths(out, total)


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of each value's base-128 varint (uint64 view; negative int64 take 10)."""
    v = np.asarray(values, dtype=np.uint64)
    sizes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, 10):
        sizes += v >= np.uint64(1 << (7 * k))
    return sizes


def varints(values: np.ndarray) -> Ragged:
    """Each value's varint encoding, one row per value."""
    v = np.asarray(values).astype(np.int64, copy=False).view(np.uint64).ravel()
    sizes = varint_sizes(v)
    owner = np.repeat(np.arange(v.size), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    k = np.arange(int(sizes.sum()), dtype=np.int64) - starts[owner]
    groups = (v[owner] >> (np.uint64(7) * k.astype(np.uint64))) & np.uint64(0x7F)
    more = (k < sizes[owner] - 1).astype(np.uint64) << np.uint64(7)
    return _from_lengths((groups | more).astype(np.uint8), sizes)


def group_rows(values: Ragged, value_offsets: np.ndarray) -> Ragged:
    """Per-value byte strings grouped into rows (row ``i`` holds values ``offsets[i]:offsets[i+1]``)."""
    offsets = values.offsets[np.asarray(value_offsets, dtype=np.int64)]
    return Ragged(values.data[offsets[0] : offsets[-1]], offsets - offsets[0])


def _constant(payload: bytes, present: np.ndarray) -> Ragged:
    """``payload`` in every row where ``present``, else nothing."""
    lengths = np.where(present, len(payload), 0).astype(np.int64)
    data = np.tile(np.frombuffer(payload, dtype=np.uint8), int(present.sum()))
    return _from_lengths(data, lengths)


def _list_parts(column: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``(flat values, value offsets per row, present)`` of a scalar or list column."""
    present = np.asarray(column.is_valid()) if column.null_count else np.ones(len(column), bool)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        # offsets index column.values; a null list's row is dropped by ``present``
        return column.values, np.asarray(column.offsets, dtype=np.int64), present
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        flat = column.values.slice(column.offset * width, len(column) * width)
        return flat, np.arange(len(column) + 1, dtype=np.int64) * width, present
    return column, np.arange(len(column) + 1, dtype=np.int64), present


def _float_payload(values: pa.Array, offsets: np.ndarray) -> Ragged:
    """Packed little-endian float32 values of each row."""
    flat = pc.cast(values, pa.float32()).fill_null(float("nan")).to_numpy(zero_copy_only=False)
    flat = np.ascontiguousarray(flat, dtype="<f4")
    lo, hi = int(offsets[0]), int(offsets[-1])
    return _from_lengths(flat[lo:hi].view(np.uint8), np.diff(offsets) * 4)


def _int64_payload(values: pa.Array, offsets: np.ndarray) -> Ragged:
    """Packed varints of each row."""
    t = values.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
        values = values.cast(pa.int64())
    flat = pc.cast(values, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    lo, hi = int(offsets[0]), int(offsets[-1])
    return group_rows(varints(flat[lo:hi]), offsets - lo)


def _bytes_payload(values: pa.Array, offsets: np.ndarray) -> Ragged:
    """``BytesList.value`` fields (tag, length, bytes) of each row's values."""
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        values = pc.cast(values, pa.large_string())
    arr = values.cast(pa.large_binary()).fill_null(b"")
    lo, hi = int(offsets[0]), int(offsets[-1])
    arr = arr.slice(lo, hi - lo)
    value_offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    raw = arr.buffers()[2]
    data = (
        np.frombuffer(raw, dtype=np.uint8)[value_offsets[0] : value_offsets[-1]]
        if raw is not None
        else np.zeros(0, np.uint8)
    )
    strings = Ragged(data, value_offsets - value_offsets[0])
    each = concat_rows([header(1, strings.lengths, np.ones(len(arr), dtype=bool)), strings])
    return group_rows(each, offsets - lo)


def header(number: int, lengths: np.ndarray, present: np.ndarray) -> Ragged:
    """Tag and length of a length-delimited field whose bodies have ``lengths``; nothing where absent."""
    tag = _constant(bytes([(number << 3) | _LEN]), present)
    sizes = varints(np.asarray(lengths, dtype=np.int64))
    if not present.all():
        sizes = mask(sizes, present)
    return concat_rows([tag, sizes])


def mask(r: Ragged, present: np.ndarray) -> Ragged:
    """``r`` with the rows where not ``present`` emptied."""
    if present.all():
        return r
    return _from_lengths(r.data[np.repeat(present, r.lengths)], np.where(present, r.lengths, 0))


def kind(t: pa.DataType) -> str:
    """``float``, ``int64`` or ``bytes``: the feature list a column of type ``t`` is written to."""
    base = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
    if pa.types.is_fixed_size_list(t):
        base = t.value_type
    if pa.types.is_floating(base) or pa.types.is_decimal(base):
        return "float"
    if (
        pa.types.is_integer(base)
        or pa.types.is_boolean(base)
        or pa.types.is_timestamp(base)
        or pa.types.is_date(base)
        or pa.types.is_duration(base)
    ):
        return "int64"
    return "bytes"


_FEATURE_FIELD = {"bytes": 1, "float": 2, "int64": 3}


def map_entry(name: str, column: pa.Array | pa.ChunkedArray) -> tuple[Ragged, Ragged]:
    """``Features.feature[name]`` of every row as ``(headers, payload)``; nothing where null.

    Lengths are computed bottom-up from the payload's, so the payload bytes
    are copied only once, into the final record.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values, offsets, present = _list_parts(column)
    k = kind(column.type)
    payload = {"float": _float_payload, "int64": _int64_payload, "bytes": _bytes_payload}[k](
        values, offsets
    )
    everywhere = np.ones(len(column), dtype=bool)
    parts: list[Ragged] = []
    body = payload.lengths
    if k != "bytes":  # FloatList / Int64List: one packed field, left out when empty
        packed = header(1, body, body > 0)
        parts.insert(0, packed)
        body = body + packed.lengths
    feature = header(_FEATURE_FIELD[k], body, everywhere)  # Feature.{bytes,float,int64}_list
    parts.insert(0, feature)
    body = body + feature.lengths
    value = header(2, body, everywhere)  # MapEntry.value
    key = name.encode("utf-8")
    key_field = _constant(bytes([0x0A]) + _varint_bytes(len(key)) + key, everywhere)
    parts[:0] = [key_field, value]
    body = body + value.lengths + key_field.lengths
    parts.insert(0, header(1, body, present))  # Features.feature (map entry)
    headers = concat_rows([mask(p, present) for p in parts])
    return headers, mask(payload, present)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def serialize_examples(table: pa.Table) -> Ragged:
    """Every row of ``table`` as a serialized ``tf.train.Example`` (one feature per column)."""
    n = table.num_rows
    parts: list[Ragged] = []
    for name in table.column_names:
        parts.extend(map_entry(name, table.column(name)))
    total = sum((p.lengths for p in parts), np.zeros(n, dtype=np.int64))
    return concat_rows([header(1, total, np.ones(n, dtype=bool)), *parts])  # Example.features
