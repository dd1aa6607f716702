"""The one-step publish of a scoring run's staged files, and its rollback.

A scoring run writes every file (predictions, errors, drift report, summary)
under ``<output>/_staging-<run id>/``. Its final step publishes them with
:func:`publish` and records their names in ``<output>/_manifest.json``
(:mod:`keras_batch_score.transforms.run.manifest`)::

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

import json
import logging
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.run.files import (
    PublishError,
    cut,
    is_dir,
    is_local,
    read_bytes,
    reason,
    write_bytes,
)
from keras_batch_score.transforms.run.manifest import (
    MANIFEST_FILE,
    list_entries,
    manifest_payload,
    parse_manifest,
)

_LOG = logging.getLogger("keras_batch_score")


BACKUP_DIR = "_previous"


def move_file(source: str, target: str) -> None:
    """Renames one file (a local target's directory is created first)."""
    if is_local(target):
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    FileSystems.rename([source], [target])


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
    old_bytes = read_bytes(manifest_path)
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
    write_bytes(staged, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
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
            write_bytes(manifest_path, old_manifest)
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
        elif is_dir(path):  # an object store deletes a "directory" by its prefix
            FileSystems.delete([path.rstrip("/") + "/"])
    except Exception as e:
        _LOG.warning("could not remove staging directory %s: %s", path, reason(e))
