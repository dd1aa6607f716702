"""Small Arrow helpers shared by the columnar stages (pure pyarrow, no Beam)."""

from __future__ import annotations

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
