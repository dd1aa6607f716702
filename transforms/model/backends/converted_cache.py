"""Converted models (ONNX, LiteRT) cached on disk by the source model's content hash.

``<model cache dir>/converted/<key>/model.<ext>``: the key hashes the model's
bytes, the conversion settings and the converter's version, so a second load,
in this or another process on the machine, reuses the file instead of converting
again. Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence

from keras_batch_score.transforms.io.model_cache import default_cache_dir


def cache_key(parts: Sequence[str]) -> str:
    """A sha256 of ``parts`` (model hash, backend, signature, converter versions)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def converted_path(key: str, ext: str, cache_dir: str | None = None) -> str:
    """Where the converted model of ``key`` lives (it may not exist yet)."""
    return os.path.join(cache_dir or default_cache_dir(), "converted", key[:32], f"model.{ext}")


def get_or_convert(path: str, convert: Callable[[str], None]) -> tuple[str, bool]:
    """``path``, converting into it first when it does not exist.

    Args:
        path: From :func:`converted_path`.
        convert: Writes the converted model to the path it is given.

    Returns:
        ``(path, converted)``: ``converted`` is False when the file was reused.
    """
    if os.path.exists(path):
        return path, False
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=parent, prefix=".converting-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        convert(staging)
        os.replace(staging, path)  # another process converting at once writes the same bytes
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path, True
