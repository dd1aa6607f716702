"""Arrays whose data starts on a cache-line boundary, so TensorFlow can use them in place.

TensorFlow's CPU kernels need tensor buffers aligned to 64 bytes (Eigen's
largest vector). numpy only promises 16, so ``tf.convert_to_tensor`` copies
every batch. A model input built with :func:`aligned_empty` is handed to the
model through DLPack instead, without a copy (see
:meth:`keras_batch_score.transforms.model.loaded_model.LoadedModel.predict`).
"""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64
"""Bytes: TensorFlow's ``EIGEN_MAX_ALIGN_BYTES`` on AVX-512 builds, and a cache line."""


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialized C-ordered array of ``shape`` and ``dtype`` starting on an ``ALIGNMENT`` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    return np.ndarray(shape, dtype, buffer=raw, offset=-raw.ctypes.data % ALIGNMENT)


def is_aligned(array: np.ndarray) -> bool:
    """Whether ``array`` is C-contiguous and starts on an ``ALIGNMENT`` boundary."""
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def as_aligned(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """``array`` as ``dtype``: itself when already aligned and of that type, else an aligned copy."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype and is_aligned(array):
        return array
    out = aligned_empty(array.shape, dtype)
    out[...] = array
    return out
