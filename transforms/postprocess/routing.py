"""A/B routing: a stable 64-bit hash of the id columns maps each row to an arm.

Pure numpy and pyarrow, no Beam; the same ids go to the same arm on every run
and machine, however the rows are batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.arrow import one_array

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_column(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per value (same value, same hash, on every run and machine).

    Numbers hash their int64/float64 bit pattern, strings and binaries their
    UTF-8 bytes (through the Arrow buffers: a sum of position-keyed mixes of
    each byte, then mixed with the length); nulls hash to a constant.
    """
    arr = one_array(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    n = len(arr)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        arr = arr.cast(pa.large_binary())
        valid = np.ones(n, dtype=bool) if arr.null_count == 0 else np.asarray(arr.is_valid())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = (
            np.frombuffer(arr.buffers()[2], dtype=np.uint8)
            if arr.buffers()[2] is not None
            else np.zeros(0, np.uint8)
        )
        start, stop = int(offsets[0]), int(offsets[-1])
        lengths = np.diff(offsets)
        row_of_byte = np.repeat(np.arange(n), lengths)
        position = np.arange(stop - start, dtype=np.int64) - (offsets[:-1] - start)[row_of_byte]
        keyed = _mix64(
            data[start:stop].astype(np.uint64) | (position.astype(np.uint64) << np.uint64(8))
        )
        sums = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        if keyed.size:  # segment sums; empty strings have no segment and keep 0
            sums[nonempty] = np.add.reduceat(keyed, (offsets[:-1] - start)[nonempty])
        h = _mix64(sums ^ _mix64(lengths.astype(np.uint64)))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        ints = pc.cast(arr, pa.int64()) if not pa.types.is_temporal(t) else arr.cast(pa.int64())
        valid = np.asarray(ints.is_valid())
        h = _mix64(
            ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        )
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = pc.cast(arr, pa.float64())
        valid = np.asarray(floats.is_valid())
        h = _mix64(
            floats.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64).view(np.uint64)
        )
    else:
        raise ValueError(
            f"id column of type {t} cannot be hashed for --ab-split; use a string or integer id"
        )
    return np.where(valid, h, np.uint64(0x5BD1E995))


def route(table: pa.Table, id_columns: Sequence[str], shares: Sequence[float]) -> np.ndarray:
    """Arm index per row: a hash of the id columns mapped to [0, 1) against cumulative shares.

    Deterministic: the same ids go to the same arm on every run, however the
    rows are batched.
    """
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in id_columns:
            h = _mix64(h * np.uint64(31) ^ hash_column(table.column(name)))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    edges = np.cumsum(np.asarray(shares, dtype=np.float64))
    return np.minimum(np.searchsorted(edges, u, side="right"), len(shares) - 1)
