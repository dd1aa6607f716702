"""Local copies of remote models, keyed by what the remote object holds, and model identity.

A remote model (``gs://…/model.keras`` or a SavedModel directory) is copied
through Beam ``FileSystems`` into a local cache directory. The cache entry is
keyed by the path *and* the object's content identity, read from its
metadata: size, last-update time and the file system's checksum (GCS: the
object's crc32c, through ``FileSystems.checksum``). Replacing the object
changes that identity, so the next run fetches the new bytes instead of
serving the old copy. A file system that offers no checksum is fetched on
every call and keyed by size and the sha256 of the bytes.

The model id written to the ``model`` column is the hash of the local bytes
that are actually loaded (:func:`model_id`), never of the remote metadata.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any

from keras_batch_score.transforms.core.errors import ModelError

CACHE_ENV = "KERAS_BATCH_SCORE_MODEL_CACHE"
HASH_PREFIX = 12  # hex digits of the sha256 in a model id


def default_cache_dir() -> str:
    """``$KERAS_BATCH_SCORE_MODEL_CACHE``, else ``<tmp>/keras-batch-score-models``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        tempfile.gettempdir(), "keras-batch-score-models"
    )


def is_local(path: str) -> bool:
    """Whether ``path`` is on the local file system (no scheme or ``file://``)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_scheme(path) in (None, "file")


def localize(path: str, cache_dir: str | None = None) -> str:
    """Returns a local copy of ``path`` (a file or a SavedModel directory).

    Local paths are returned unchanged. A remote one is copied into
    ``<cache_dir>/<path key>/<content key>/<name>``; a later call reuses that
    copy only while the remote object's size, update time and checksum are
    unchanged.

    Raises:
        ModelError: if the path does not exist or is an empty directory.
    """
    if is_local(path):
        return path
    cache_dir = cache_dir or default_cache_dir()
    base = path.rstrip("/")
    files = _remote_files(base)
    path_key = hashlib.sha256(base.encode()).hexdigest()[:16]
    name = os.path.basename(base)
    identity = _identity(files)
    if identity is not None:
        target = os.path.join(cache_dir, path_key, identity, name)
        if os.path.exists(target):
            return target
        staging = _fetch(base, files, os.path.join(cache_dir, path_key), name)
        return _publish(staging, target)
    # No checksum: fetch, then key the copy by size and the hash of its bytes.
    staging = _fetch(base, files, os.path.join(cache_dir, path_key), name)
    size = sum(os.path.getsize(p) for p in _local_files(staging))
    key = f"b{size}-{content_hash(staging)[:24]}"
    return _publish(staging, os.path.join(cache_dir, path_key, key, name))


def _remote_files(base: str) -> list[tuple[str, Any]]:
    """``[(relative path, FileMetadata)]``: ``[("", meta)]`` for a single file."""
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([base])[0].metadata_list
    if matches and matches[0].path.rstrip("/") == base and not matches[0].path.endswith("/"):
        return [("", matches[0])]
    metas = FileSystems.match([f"{base}/**"])[0].metadata_list
    files = [(m.path[len(base) + 1 :], m) for m in metas if not m.path.endswith("/")]
    if not files:
        raise ModelError(f"model path {base} does not exist or is empty")
    return sorted(files, key=lambda item: item[0])


def _identity(files: list[tuple[str, Any]]) -> str | None:
    """A key of every file's size, update time and checksum; None when a checksum is missing."""
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    for rel, meta in files:
        try:
            checksum = FileSystems.checksum(meta.path)
        except Exception:  # NotImplementedError, BeamIOError: no checksum on this file system
            return None
        if not checksum:
            return None
        digest.update(
            f"{rel}\0{meta.size_in_bytes}\0{meta.last_updated_in_seconds!r}\0{checksum}\n".encode()
        )
    return "m" + digest.hexdigest()[:24]


def _fetch(base: str, files: list[tuple[str, Any]], parent: str, name: str) -> str:
    staging = os.path.join(parent, f".partial-{os.getpid()}-{os.urandom(4).hex()}", name)
    for rel, meta in files:
        dest = os.path.join(staging, rel) if rel else staging
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        _copy_file(meta.path, dest)
    return staging


def _publish(staging: str, target: str) -> str:
    """Moves a fetched copy into place; another process that got there first wins."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:  # a non-empty directory already at target: the same content, keep it
        if not os.path.exists(target):
            raise
    shutil.rmtree(os.path.dirname(staging), ignore_errors=True)
    return target


def _copy_file(src: str, dest: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(src) as fin, open(dest, "wb") as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)


# --------------------------------------------------------------------------- hashing

_HASHES: dict[tuple[Any, ...], str] = {}


def _local_files(local_path: str) -> list[str]:
    if not os.path.isdir(local_path):
        return [local_path]
    out = []
    for root, dirs, names in os.walk(local_path):
        dirs.sort()
        out += [os.path.join(root, n) for n in sorted(names)]
    return out


def content_hash(local_path: str) -> str:
    """sha256 of a file, or of a directory's relative paths and file contents.

    Memoized per process on the files' paths, sizes and modification times.
    """
    files = _local_files(local_path)
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append((f, st.st_size, st.st_mtime_ns, st.st_ino))
    key = (os.path.abspath(local_path), os.path.isdir(local_path), tuple(stats))
    if key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    for f in files:
        if os.path.isdir(local_path):
            digest.update(os.path.relpath(f, local_path).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(8 << 20):
                digest.update(chunk)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def sha256_of(path: str) -> str:
    """sha256 of one file's bytes, local or remote (streamed through Beam ``FileSystems``)."""
    if is_local(path) and os.path.isfile(path):
        return content_hash(path)
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(path) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_id(path: str, local_path: str) -> str:
    """``<file name>@<sha256 prefix>`` of the bytes at ``local_path`` (the copy that is loaded)."""
    name = os.path.basename(path.rstrip("/"))
    return f"{name}@{content_hash(local_path)[:HASH_PREFIX]}"


def verify_sha256(local_path: str, expected: str, path: str) -> None:
    """Checks the loaded bytes against a pinned sha256 (``--model-sha256``, a bundle manifest).

    Raises:
        ModelError: naming the model and both hashes' prefixes.
    """
    actual = content_hash(local_path)
    if actual != expected.lower():
        raise ModelError(
            f"model {path}: its sha256 is {actual[:HASH_PREFIX]}…, but {expected[:HASH_PREFIX]}… "
            "was expected (--model-sha256 or the bundle manifest): the model file was replaced "
            "or corrupted; package it again or pin the new hash"
        )
