"""The output checks at planning time, before any data is read.

The scoring job's output must not be read back as input, must be writable,
and must not hold files this tool did not write (unless ``--overwrite``);
``profile`` and ``calibrate`` resolve their single output file here too.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Sequence

import pyarrow as pa
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.run.files import (
    cut,
    input_base,
    is_dir,
    is_file,
    is_inside,
    is_local,
    normalized_path,
    reason,
    write_bytes,
)
from keras_batch_score.transforms.run.manifest import (
    MANIFEST_FILE,
    OUTPUT_NAME,
    PROBE_PREFIX,
    foreign_entries,
    read_manifest,
)

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
    if normalized_path(output) == normalized_path(base):
        return True
    if not is_inside(output, base):
        return False
    # Compare below the base, both sides normalized the same way.
    rest = normalized_path(output)[len(normalized_path(base).rstrip("/")) + 1 :]
    pattern = input_pattern[len(base.rstrip("/")) + 1 :] if base != "." else input_pattern
    regex = re.compile(FileSystem.translate_pattern(pattern))
    return any(regex.fullmatch(f"{rest}/{name}") for name in _SAMPLE_OUTPUTS)


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
        write_bytes(probe, b"")
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
    if is_file(output):
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
        if is_dir(output):
            raise ConfigError(
                f"{flag} {output} is a directory; pass a .json file path or a directory "
                f"(then {default_name} is written inside)"
            )
        path = output
    else:
        if is_file(output):
            raise ConfigError(
                f"{flag} {output} is an existing file; pass a directory (then {default_name} is "
                "written inside) or a .json file path"
            )
        path = FileSystems.join(output.rstrip("/") or "/", default_name)
    check_writable(posixpath.dirname(path) or ".", flag)
    return path
