"""Model input and output metadata: name, per-row shape and dtype, and shape arithmetic.

Pure Python and numpy, no TensorFlow and no Beam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, per-row shape (batch axis removed) and dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def width(self) -> int | None:
        """Number of values per row for inputs of shape (), (1,) or (k,); None otherwise."""
        if len(self.shape) == 0:
            return 1
        if len(self.shape) == 1:
            return self.shape[0]
        return None

    @property
    def size(self) -> int | None:
        """Number of values per row (the product of the shape); None if a dimension is unknown."""
        if any(d is None for d in self.shape):
            return None
        return int(np.prod(self.shape, dtype=np.int64))


def resolve_shape(shape: Sequence[int | None], width: int) -> tuple[int, ...] | None:
    """``shape`` with its one unknown dimension set so that it holds ``width`` values per row.

    Returns None if that is impossible (several unknown dimensions, or ``width``
    not a positive multiple of the known dimensions' product).
    """
    unknown = [i for i, d in enumerate(shape) if d is None]
    if not unknown:
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]
    known = int(np.prod([d for d in shape if d is not None], dtype=np.int64))
    if len(unknown) > 1 or width <= 0 or known <= 0 or width % known:
        return None
    return tuple(width // known if d is None else int(d) for d in shape)


def is_string_dtype(dtype: str) -> bool:
    """Whether a model input/output dtype name is TensorFlow's ``string``."""
    return dtype in ("string", "str", "object", "bytes")
