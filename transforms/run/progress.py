"""Worker side of live progress: row counts written to a directory the launcher polls.

On Beam's local runners ``Pipeline.run()`` returns only when the job is
done, and under ``--direct_running_mode=multi_processing`` the DoFns run in
other processes, so neither the launcher's ``result.metrics()`` nor a log
line from a worker reaches the console while the job runs. Instead each
DoFn instance keeps its cumulative counts in one small JSON file
(``<pid>-<random>.json``) in a channel directory on the local disk, replaced
atomically at most every :data:`FLUSH_SECONDS` and at the end of each bundle;
the launcher sums the files (:mod:`keras_batch_score.pipelines.progress`). Remote runners get
no channel: their workers cannot see the launcher's disk.

Writing is best effort: a failed write disables the channel for that
instance and never fails the job.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable

import apache_beam as beam

FLUSH_SECONDS = 0.2
KEYS = ("scored", "failed")


class ProgressChannel:
    """Cumulative row counts of one DoFn instance, flushed to ``<directory>/<id>.json``."""

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._path = (
            os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}.json") if directory else None
        )
        self._counts = dict.fromkeys(KEYS, 0)
        self._last_flush = 0.0
        self._dirty = False

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def add(self, **counts: int) -> None:
        """Adds ``scored=`` / ``failed=`` rows; flushes when the last flush is old enough."""
        if self._path is None:
            return
        for key, value in counts.items():
            self._counts[key] += int(value)
        self._dirty = True
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Writes the counts (atomically: a temporary file, then ``os.replace``)."""
        if self._path is None or not self._dirty:
            return
        tmp = f"{self._path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._counts, f)
            os.replace(tmp, self._path)
        except OSError:  # the launcher's disk is not ours (remote worker): stop trying
            self._path = None
            return
        self._last_flush = time.monotonic()
        self._dirty = False


def read_channel(directory: str) -> dict[str, int]:
    """Sums the counts of every instance's file in ``directory`` (missing files: zeros)."""
    totals = dict.fromkeys(KEYS, 0)
    try:
        names = os.listdir(directory)
    except OSError:
        return totals
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                counts = json.load(f)
        except (OSError, ValueError):  # replaced while we read it: counted next time
            continue
        for key in KEYS:
            totals[key] += int(counts.get(key, 0))
    return totals


class CountFailedRows(beam.DoFn):
    """Errors tables -> nothing; reports their rows as ``failed`` to the progress channel."""

    def __init__(self, directory: str | None) -> None:
        self._directory = directory

    def setup(self) -> None:
        self._channel = ProgressChannel(self._directory)

    def process(self, table: object) -> Iterable[object]:
        self._channel.add(failed=int(getattr(table, "num_rows", 0)))
        return ()

    def finish_bundle(self) -> None:
        self._channel.flush()
