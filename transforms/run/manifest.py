"""The run manifest (``_manifest.json``): which files of an output directory this tool wrote.

A later run removes exactly the files the manifest lists, never anything else;
entries the manifest does not list are "foreign" (:func:`foreign_entries`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.run.files import cut, is_local, read_bytes, reason

MANIFEST_FILE = "_manifest.json"


MANIFEST_FORMAT = "keras-batch-score/manifest"


MANIFEST_VERSION = 1


STAGING_PREFIX = "_staging-"


PROBE_PREFIX = "_kbs-probe-"


# Names a scoring run publishes. A file with such a name that no manifest lists is
# never replaced, even with --overwrite.
OUTPUT_NAME = re.compile(
    r"^(run_summary\.json|drift\.json|drift\.html|"
    r"(predictions|errors)-\d{5,}-of-\d{5,}\.(parquet|jsonl|tfrecord))$"
)


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
    payload = read_bytes(path)
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
