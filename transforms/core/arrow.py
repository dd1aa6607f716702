"""Small Arrow helpers shared by the columnar stages (pure pyarrow, no Beam)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``column`` as one contiguous array, without a copy when it already is one.

    ``ChunkedArray.combine_chunks`` copies even a single chunk, which on the
    scoring path cost a fresh allocation per column of every batch.
    """
    if not isinstance(column, pa.ChunkedArray):
        return column
    if column.num_chunks == 1:
        return column.chunk(0)
    return column.combine_chunks()


def invalid_utf8(arr: pa.Array) -> np.ndarray | None:
    """The rows of a string array whose bytes are not UTF-8, or ``None`` when there are none.

    Arrow does not check the text it reads (Parquet from a writer that does not
    validate, Latin-1 data), and turning such a value into Python raises. One
    C++ pass checks the whole array; only an array that fails it is looked at
    row by row.

    Returns:
        A boolean mask of the rows to reject, or ``None`` (also for non-string arrays).
    """
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    try:
        arr.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    return np.array([v is not None and not _is_utf8(v) for v in _raw(arr).to_pylist()], bool)


def readable_text(arr: pa.Array) -> pa.Array:
    """``arr`` with bytes that are not UTF-8 written as backslash escapes (``caf\\xe9``).

    For messages and the errors output; a string array that is valid comes back as it is.
    """
    if invalid_utf8(arr) is None:
        return arr
    values = _raw(arr).to_pylist()
    return pa.array(
        [None if v is None else v.decode("utf-8", "backslashreplace") for v in values], arr.type
    )


def _raw(arr: pa.Array) -> pa.Array:
    return arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
