"""Input files: what an ``--input`` path, directory or glob matches.

Paths go through Beam ``FileSystems``, so local paths, globs and ``gs://``
work the same.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError


def match_files(pattern: str) -> list[str]:
    """Files matching ``pattern`` (a path, a directory or a glob), sorted.

    For a directory, names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``
    files) are skipped, as Hadoop, Spark and Arrow datasets do.

    Raises:
        ConfigError: if nothing matches.
    """
    patterns = [pattern]
    directory = not any(ch in pattern for ch in "*?[") and _is_dir(pattern)
    if directory:
        patterns = [pattern.rstrip("/") + "/*"]
    try:
        found = FileSystems.match(patterns)[0].metadata_list
    except Exception as e:
        raise ConfigError(f"--input {pattern}: cannot list files: {e}") from None
    files = sorted(
        m.path
        for m in found
        if (m.size_in_bytes > 0 or m.path.endswith(".parquet"))
        and not (directory and posixpath.basename(m.path).startswith(("_", ".")))
    )
    if not files:
        raise ConfigError(f"--input {pattern}: no files match")
    return files


def _is_dir(path: str) -> bool:
    import os

    scheme = FileSystems.get_scheme(path)
    if scheme in (None, "file"):
        return os.path.isdir(path)
    if path.endswith("/"):
        return True
    # Object stores have no directories: a path that is no object but prefixes objects is one.
    try:
        inside = FileSystems.match([path + "/*"], limits=[1])[0].metadata_list
        return bool(inside) and not FileSystems.exists(path)
    except Exception:
        return False


def input_pattern(files: Sequence[str], pattern: str) -> str:
    """The pattern Beam should read: a directory argument becomes ``dir/*``."""
    if len(files) == 1 and files[0].rstrip("/") == pattern.rstrip("/"):
        return files[0]
    if not any(ch in pattern for ch in "*?[") and _is_dir(pattern):
        return pattern.rstrip("/") + "/*"
    return pattern
