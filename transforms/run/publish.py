"""Output ownership: the run manifest, the output checks at planning, the one-step publish.

A scoring run writes every file (predictions, errors, drift report, summary)
under ``<output>/_staging-<run id>/``. Its final step publishes them with
:func:`publish` and records their names in ``<output>/_manifest.json``::

    {"format": "keras-batch-score/manifest", "version": 1, "run_id": "...",
     "state": "complete", "published_at": "...",
     "files": [{"name": "predictions-00000-of-00001.parquet", "size": 1234}, ...]}

A later run removes exactly the files that manifest lists, never anything
else. The publish order keeps the directory consistent:

1. every new file is already staged; names that clash with files the tool
   did not write stop the publish before anything changes;
2. the manifest is replaced by one listing the old and the new names
   (``state: publishing``), so a crash never leaves files nobody owns;
3. the old files are moved into the staging directory, ``run_summary.json``
   first, so an old summary never describes new data;
4. the new files are moved in, ``run_summary.json`` last;
5. the final manifest (new files only) replaces the interim one.

If any step fails, the moves are undone and the old manifest's bytes are
written back: the published files are as before. Paths go through Beam
``FileSystems``, so ``gs://`` works (renames there are copy + delete).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError

_LOG = logging.getLogger("keras_batch_score")

MANIFEST_FILE = "_manifest.json"
MANIFEST_FORMAT = "keras-batch-score/manifest"
MANIFEST_VERSION = 1
STAGING_PREFIX = "_staging-"
PROBE_PREFIX = "_kbs-probe-"
BACKUP_DIR = "_previous"
# Names a scoring run publishes. A file with such a name that no manifest lists is
# never replaced, even with --overwrite.
OUTPUT_NAME = re.compile(
    r"^(run_summary\.json|drift\.json|drift\.html|"
    r"(predictions|errors)-\d{5,}-of-\d{5,}\.(parquet|jsonl|tfrecord))$"
)
_MAX_LISTED = 20


class PublishError(RuntimeError):
    """The final step could not publish the run's files (the previous ones are kept)."""


# --------------------------------------------------------------------------- small helpers


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


def _normalized(path: str) -> str:
    if is_local(path):
        return os.path.realpath(path.removeprefix("file://"))
    return path.rstrip("/")


def is_inside(path: str, base: str) -> bool:
    """Whether ``path`` equals ``base`` or lies below it (after resolving ``..`` and links)."""
    p, b = _normalized(path), _normalized(base)
    return p == b or p.startswith(b.rstrip("/") + "/")


def input_base(pattern: str) -> str:
    """The directory a glob reads from (``data/*.parquet`` -> ``data``), else the path itself."""
    first = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=None)
    if first is None:
        return pattern
    return posixpath.dirname(pattern[:first]) or "."


# One name of each kind a scoring run writes (see OUTPUT_NAME).
_SAMPLE_OUTPUTS = (
    "predictions-00000-of-00001.parquet",
    "predictions-00000-of-00001.tfrecord",
    "errors-00000-of-00001.jsonl",
    "run_summary.json",
    "drift.json",
    "drift.html",
    MANIFEST_FILE,
)


def reads_output(input_pattern: str, output: str) -> bool:
    """Whether scoring ``input_pattern`` could read back what a run writes into ``output``.

    True when ``output`` equals or lies inside an input directory, equals the
    directory a glob reads from, or holds files the glob matches
    (``data/**``, ``data/*/*.parquet`` and ``--output data/scores``).
    """
    base = input_base(input_pattern)
    if base == input_pattern:  # a file or a directory
        return is_inside(output, base)
    if _normalized(output) == _normalized(base):
        return True
    if not is_inside(output, base):
        return False
    # Compare below the base, both sides normalized the same way.
    rest = _normalized(output)[len(_normalized(base).rstrip("/")) + 1 :]
    pattern = input_pattern[len(base.rstrip("/")) + 1 :] if base != "." else input_pattern
    regex = re.compile(FileSystem.translate_pattern(pattern))
    return any(regex.fullmatch(f"{rest}/{name}") for name in _SAMPLE_OUTPUTS)


def _is_file(path: str) -> bool:
    if is_local(path):
        return os.path.isfile(path)
    return not path.endswith("/") and FileSystems.exists(path)


def _is_dir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(path)
    try:
        prefix = path.rstrip("/") + "/"
        return bool(FileSystems.match([prefix + "**"], limits=[1])[0].metadata_list)
    except Exception:
        return False


def move_file(source: str, target: str) -> None:
    """Renames one file (a local target's directory is created first)."""
    if is_local(target):
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    FileSystems.rename([source], [target])


def _write_bytes(path: str, payload: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(payload)


def _read_bytes(path: str) -> bytes | None:
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return f.read()
    except Exception as e:
        raise PublishError(f"cannot read {path}: {reason(e)}") from None


# --------------------------------------------------------------------------- manifest


def manifest_payload(run_id: str, files: Mapping[str, int], state: str) -> dict[str, Any]:
    """The ``_manifest.json`` document for ``files`` (name -> size in bytes)."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "state": state,
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [{"name": n, "size": int(s)} for n, s in sorted(files.items())],
    }


def parse_manifest(payload: bytes, where: str) -> dict[str, int]:
    """The file names (-> sizes) a manifest lists.

    Raises:
        ConfigError: if it is not a manifest of this tool, or lists a name that
            is not a plain file name of the output directory.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {MANIFEST_FORMAT!r}")
        files = {str(e["name"]): int(e.get("size", -1)) for e in data["files"]}
    except Exception as e:
        raise ConfigError(
            f"{where} is not a valid {MANIFEST_FILE} ({reason(e)}); it records which files this "
            "tool wrote there: restore it, or choose another output directory"
        ) from None
    bad = [n for n in files if not _plain_name(n) or n == MANIFEST_FILE]
    if bad:
        raise ConfigError(f"{where} lists names that are not files of the directory: {cut(bad)}")
    return files


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def read_manifest(output_dir: str) -> dict[str, int]:
    """The files the previous run published into ``output_dir`` (empty without a manifest)."""
    path = FileSystems.join(output_dir, MANIFEST_FILE)
    payload = _read_bytes(path)
    return {} if payload is None else parse_manifest(payload, path)


def list_entries(output_dir: str) -> list[str]:
    """Names of the files and directories directly inside ``output_dir`` (sorted)."""
    if is_local(output_dir):
        path = output_dir.removeprefix("file://")
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    prefix = output_dir.rstrip("/") + "/"
    found = FileSystems.match([prefix + "**"])[0].metadata_list
    return sorted({m.path[len(prefix) :].split("/", 1)[0] for m in found} - {""})


def foreign_entries(output_dir: str, owned: Iterable[str]) -> list[str]:
    """Entries of ``output_dir`` this tool did not write (not in the manifest, not its own)."""
    mine = {*owned, MANIFEST_FILE}
    return [
        name
        for name in list_entries(output_dir)
        if name not in mine and not name.startswith((STAGING_PREFIX, PROBE_PREFIX))
    ]


# --------------------------------------------------------------------------- planning checks


def check_writable(directory: str, flag: str = "--output") -> None:
    """Creates and deletes a probe file in ``directory`` (or its nearest existing parent).

    Raises:
        ConfigError: if a parent is a file, or the probe cannot be written.
    """
    where = directory
    if is_local(directory):
        where = os.path.abspath(directory.removeprefix("file://"))
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
        if not os.path.isdir(where):
            raise ConfigError(f"{flag} {directory}: {where} is a file, not a directory")
    probe = FileSystems.join(where, f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        _write_bytes(probe, b"")
        FileSystems.delete([probe])
    except Exception as e:
        raise ConfigError(f"{flag} {directory} is not writable: {reason(e)} ({where})") from None


def check_score_output(output: str, input_pattern: str, *, overwrite: bool = False) -> None:
    """The scoring job's output checks, before any data is read.

    Refuses an output that is an existing file, that equals or lies inside the
    input directory, that the input glob reads from (:func:`reads_output`), that cannot be written, or
    that holds files this tool did not write (unless ``overwrite``; they are
    kept either way, and one with the name of an output file is refused).

    Raises:
        ConfigError: naming what to fix.
    """
    if _is_file(output):
        raise ConfigError(f"--output {output} is an existing file; pass a directory")
    if reads_output(input_pattern, output):
        raise ConfigError(
            f"--output {output} is inside the input {input_pattern}: outputs written there could be "
            "read back as input; choose a directory outside it"
        )
    check_writable(output)
    owned = read_manifest(output)
    foreign = foreign_entries(output, owned)
    if foreign and not overwrite:
        raise ConfigError(
            f"--output {output} holds {len(foreign)} file(s) this tool did not write: {cut(foreign)}; "
            f"choose an empty or new directory, or pass --overwrite to write beside them "
            "(they are kept, never deleted)"
        )
    clash = [name for name in foreign if OUTPUT_NAME.match(name)]
    if clash:
        raise ConfigError(
            f"--output {output} holds {cut(clash)}, which this run would replace, but no "
            f"{MANIFEST_FILE} says this tool wrote them (an older version or someone else did); "
            "move them away or choose another directory"
        )


def check_id_columns(id_columns: Sequence[str], schema: pa.Schema) -> None:
    """Refuses id columns that have the name of one of the output's own columns.

    Raises:
        ConfigError: naming the column.
    """
    own = list(schema.names)
    for name in id_columns:
        if name in own:
            own.remove(name)  # the passthrough copy itself
    clash = [name for name in id_columns if name in own]
    if clash:
        raise ConfigError(
            f"id column {clash[0]!r} has the name of an output column (the output has "
            f"{cut(own)}); rename it in the input or drop it from --id-column"
        )


def resolve_output_file(output: str, default_name: str, flag: str = "--output") -> str:
    """``output`` as a file path: a ``.json`` path as is, else ``<directory>/<default_name>``.

    Checked before any data is read: a ``.json`` path must not be a directory,
    a directory must not be an existing file, and the place must be writable.

    Raises:
        ConfigError: naming what to fix.
    """
    if output.endswith(".json"):
        if _is_dir(output):
            raise ConfigError(
                f"{flag} {output} is a directory; pass a .json file path or a directory "
                f"(then {default_name} is written inside)"
            )
        path = output
    else:
        if _is_file(output):
            raise ConfigError(
                f"{flag} {output} is an existing file; pass a directory (then {default_name} is "
                "written inside) or a .json file path"
            )
        path = FileSystems.join(output.rstrip("/") or "/", default_name)
    check_writable(posixpath.dirname(path) or ".", flag)
    return path


# --------------------------------------------------------------------------- publish


def publish(
    staged: Sequence[str],
    output_dir: str,
    staging_dir: str,
    run_id: str,
    *,
    commit_file: str = "run_summary.json",
) -> list[str]:
    """Moves the staged files into ``output_dir`` in one step and rewrites the manifest.

    Removes exactly the files the previous manifest lists; ``commit_file`` is
    removed first and published last (see the module docstring).

    Returns:
        The published paths, in the order of ``staged``.

    Raises:
        PublishError: if nothing could be published; the previous files are restored.
    """
    names = [posixpath.basename(p) for p in staged]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PublishError(f"two staged files share the names {cut(dupes)}; nothing was published")
    sizes = _sizes(staged)
    manifest_path = FileSystems.join(output_dir, MANIFEST_FILE)
    old_bytes = _read_bytes(manifest_path)
    try:
        old = {} if old_bytes is None else parse_manifest(old_bytes, manifest_path)
    except ConfigError as e:
        raise PublishError(f"{e}; nothing was published") from None
    present = set(list_entries(output_dir))
    clash = [n for n in names if n in present and n not in old]
    if clash:
        raise PublishError(
            f"{output_dir} holds {cut(clash)}, not written by this tool; nothing was published"
        )
    backup = FileSystems.join(staging_dir, BACKUP_DIR)
    moved_out: list[tuple[str, str]] = []
    moved_in: list[tuple[str, str]] = []
    targets = [FileSystems.join(output_dir, n) for n in names]
    try:
        _write_manifest(
            output_dir, staging_dir, manifest_payload(run_id, {**old, **sizes}, "publishing")
        )
        for name in sorted(old, key=lambda n: n != commit_file):
            path = FileSystems.join(output_dir, name)
            if name in present:
                move_file(path, FileSystems.join(backup, name))
                moved_out.append((path, FileSystems.join(backup, name)))
        for source, target in sorted(
            zip(staged, targets, strict=True),
            key=lambda st: posixpath.basename(st[0]) == commit_file,
        ):
            move_file(source, target)
            moved_in.append((source, target))
        _write_manifest(output_dir, staging_dir, manifest_payload(run_id, sizes, "complete"))
    except Exception as e:
        restored = _roll_back(moved_in, moved_out, manifest_path, old_bytes)
        outcome = (
            "the previous outputs were restored"
            if restored
            else f"the previous outputs could not all be restored (see {backup})"
        )
        raise PublishError(f"publishing into {output_dir} failed: {reason(e)}; {outcome}") from e
    return targets


def _sizes(paths: Sequence[str]) -> dict[str, int]:
    if not paths:
        return {}
    out = {}
    for path, result in zip(paths, FileSystems.match(list(paths)), strict=True):
        if not result.metadata_list:
            raise PublishError(f"staged file {path} is missing; nothing was published")
        out[posixpath.basename(path)] = int(result.metadata_list[0].size_in_bytes)
    return out


def _write_manifest(output_dir: str, staging_dir: str, payload: Mapping[str, Any]) -> None:
    staged = FileSystems.join(staging_dir, MANIFEST_FILE)
    _write_bytes(staged, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
    move_file(staged, FileSystems.join(output_dir, MANIFEST_FILE))


def _roll_back(
    moved_in: Sequence[tuple[str, str]],
    moved_out: Sequence[tuple[str, str]],
    manifest_path: str,
    old_manifest: bytes | None,
) -> bool:
    """Undoes the moves (newest first) and restores the old manifest; False if a step failed."""
    ok = True
    for original, moved in [*reversed(moved_in), *reversed(moved_out)]:
        try:
            move_file(moved, original)
        except Exception as e:
            ok = False
            _LOG.error("could not move %s back to %s: %s", moved, original, reason(e))
    try:
        if old_manifest is None:
            if FileSystems.exists(manifest_path):
                FileSystems.delete([manifest_path])
        else:
            _write_bytes(manifest_path, old_manifest)
    except Exception as e:
        ok = False
        _LOG.error("could not restore %s: %s", manifest_path, reason(e))
    return ok


def discard_staging(staging_dir: str) -> None:
    """Removes a failed run's staging directory, unless it holds previous outputs.

    A publish whose rollback failed leaves the old files in ``<staging>/_previous``:
    those are kept (and logged), never deleted.
    """
    backup = FileSystems.join(staging_dir, BACKUP_DIR)
    try:
        kept = FileSystems.match([FileSystems.join(backup, "**")])[0].metadata_list
    except Exception:
        kept = []
    if kept:
        _LOG.error("previous outputs are kept in %s; move them back by hand", backup)
        return
    delete_tree(staging_dir)


def delete_tree(path: str) -> None:
    """Removes ``path`` if it exists; a failure is only logged (leftovers are harmless)."""
    try:
        if is_local(path):
            if FileSystems.exists(path):
                FileSystems.delete([path])
        elif _is_dir(path):  # an object store deletes a "directory" by its prefix
            FileSystems.delete([path.rstrip("/") + "/"])
    except Exception as e:
        _LOG.warning("could not remove staging directory %s: %s", path, reason(e))
