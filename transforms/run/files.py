"""File-system helpers of output ownership: paths, existence, small reads and writes, error causes.

Paths go through Beam ``FileSystems``, so local paths and ``gs://`` work the same.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

_MAX_LISTED = 20


class PublishError(RuntimeError):
    """The final step could not publish the run's files (the previous ones are kept)."""


def cut(names: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` for at most ``limit`` names, then ``… and N more``."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} … and {len(names) - limit} more"


def reason(e: BaseException) -> str:
    """A one-line cause of a file-system error (Beam wraps OSErrors in BeamIOError)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    for code, name in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only")):
        if name in text:
            return os.strerror(code)
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def normalized_path(path: str) -> str:
    """``path`` comparable with another: a local path resolved (``..``, links), else without a trailing ``/``."""
    if is_local(path):
        return os.path.realpath(path.removeprefix("file://"))
    return path.rstrip("/")


def is_inside(path: str, base: str) -> bool:
    """Whether ``path`` equals ``base`` or lies below it (after resolving ``..`` and links)."""
    p, b = normalized_path(path), normalized_path(base)
    return p == b or p.startswith(b.rstrip("/") + "/")


def input_base(pattern: str) -> str:
    """The directory a glob reads from (``data/*.parquet`` -> ``data``), else the path itself."""
    first = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=None)
    if first is None:
        return pattern
    return posixpath.dirname(pattern[:first]) or "."


def is_file(path: str) -> bool:
    """Whether ``path`` is an existing file (an object, on object stores)."""
    if is_local(path):
        return os.path.isfile(path)
    return not path.endswith("/") and FileSystems.exists(path)


def is_dir(path: str) -> bool:
    """Whether ``path`` is a directory (on object stores: a prefix of at least one object)."""
    if is_local(path):
        return os.path.isdir(path)
    try:
        prefix = path.rstrip("/") + "/"
        return bool(FileSystems.match([prefix + "**"], limits=[1])[0].metadata_list)
    except Exception:
        return False


def write_bytes(path: str, payload: bytes) -> None:
    """Writes ``payload`` to ``path`` (created or replaced)."""
    with FileSystems.create(path) as f:
        f.write(payload)


def read_bytes(path: str) -> bytes | None:
    """The bytes of ``path``, or None if it does not exist.

    Raises:
        PublishError: if it exists but cannot be read.
    """
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return f.read()
    except Exception as e:
        raise PublishError(f"cannot read {path}: {reason(e)}") from None
