"""What the launcher shows while a job runs.

* :func:`start_line`: a line printed at once, before Beam, TensorFlow or the
  model load (``loading model m.keras (keras, 3 inputs) …``); it reads only
  the model's small ``config.json`` or a bundle's manifest.
* :class:`ProgressMonitor`: polls the progress channel the workers write
  (:mod:`keras_batch_score.transforms.run.progress`) from a thread while ``Pipeline.run()`` blocks,
  and draws a live ``rich`` bar on a terminal (rows done of the total, rows/s,
  ETA, rows failed) or, when the output is piped (Airflow, CI), a plain line
  as soon as the first rows are done, then one every ``--progress-seconds``,
  then a final 100% line.
* :func:`input_total`: the total: the sum of the Parquet footers' row counts,
  or for TFRecord an estimate from the file sizes and the size of the first
  records.
* :func:`console_url`: a Dataflow job's page in the Cloud console.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Flags whose value is a model path, per command.
_MODEL_FLAGS = {"score": "--model", "calibrate": "--model", "profile": "--model"}
_TICK_SECONDS = 0.2
_MIN_TICK_SECONDS = 0.05  # a tiny --progress-seconds must not turn polling into a busy loop
_HEARTBEAT_SECONDS = 30.0  # a piped line at least this often, even when nothing moved


def _flag_values(argv: Sequence[str], flag: str) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
    return values


def describe_model(path: str) -> str:
    """``"keras, 3 inputs"``, ``"bundle 1.2"``, ``"SavedModel"``... without loading the model.

    Local files only; anything unreadable gives just the format.
    """
    lower = path.lower().rstrip("/")
    if lower.endswith(".keras"):
        inputs = _keras_inputs(path)
        return "keras" if inputs is None else f"keras, {inputs} input{'s' * (inputs != 1)}"
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    manifest = os.path.join(path, "bundle.json")
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding="utf-8") as f:
                data = json.load(f)
            features = len(data.get("features") or [])
            return f"bundle {data.get('version', '?')}, {features} feature(s)"
        except (OSError, ValueError, AttributeError):
            return "bundle"
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "SavedModel"
    return "bundle or SavedModel" if "://" in path else "model"


def _keras_inputs(path: str) -> int | None:
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        return None
    layers = inner.get("input_layers")
    if isinstance(layers, list) and layers:
        return len(layers) if isinstance(layers[0], list) else 1
    if isinstance(layers, dict):
        return len(layers)
    if config.get("class_name") == "Sequential":
        return 1
    return None


def start_line(command: str, argv: Sequence[str]) -> str | None:
    """The line printed as a command starts (None: print nothing)."""
    if any(a in ("-h", "--help", "--quiet") for a in argv):
        return None
    flag = _MODEL_FLAGS.get(command)
    models = _flag_values(argv, flag) if flag else []
    if models:
        path = models[0].split("=", 1)[1] if _is_named(models[0]) else models[0]
        more = f" and {len(models) - 1} more" if len(models) > 1 else ""
        return f"loading model {os.path.basename(path.rstrip('/')) or path} ({describe_model(path)}){more} …"
    configs = _flag_values(argv, "--config")
    if configs:
        return f"{command}: reading settings from {configs[0]} …"
    inputs = _flag_values(argv, "--input")
    if command in ("profile", "fit-preprocess") and inputs:
        return f"{command}: reading {inputs[0]} …"
    return None


def _is_named(value: str) -> bool:
    name, eq, rest = value.partition("=")
    return bool(eq) and "/" not in name and "://" not in value.split("=", 1)[0] and bool(rest)


@dataclass(frozen=True)
class Total:
    """The job's total: rows (exact from Parquet footers, or estimated), or unknown."""

    rows: int | None
    estimated: bool = False


def _footer_rows(path: str) -> int:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.get_scheme(path) in (None, "file"):
        return pq.read_metadata(path).num_rows
    with FileSystems.open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def input_total(files: Sequence[str], input_format: str) -> Total:
    """Rows to score: Parquet footers' ``num_rows``; TFRecord: file bytes / mean record bytes."""
    try:
        if input_format == "parquet":
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
                return Total(sum(pool.map(_footer_rows, files)))
        return _tfrecord_estimate(files)
    except Exception:  # progress is a convenience: never fail a job over it
        return Total(None)


def _tfrecord_estimate(files: Sequence[str]) -> Total:
    from apache_beam.io.filesystems import FileSystems

    from keras_batch_score.transforms.io.tfrecord_spec import read_first_records

    if any(f.lower().endswith(".gz") for f in files):
        return Total(None)  # compressed sizes say little about the record count
    sizes = {
        m.path: m.size_in_bytes for r in FileSystems.match(list(files)) for m in r.metadata_list
    }
    sample = read_first_records(files[0], 200)
    if not sample:
        return Total(None)
    per_record = sum(len(r) + 16 for r in sample) / len(sample)  # 8 + 4 + 4 framing bytes
    return Total(round(sum(sizes.values()) / per_record), estimated=True)


def console_url(job_id: str, region: str | None, project: str | None) -> str:
    """The Cloud console page of a Dataflow job."""
    return (
        f"https://console.cloud.google.com/dataflow/jobs/{region or 'us-central1'}/{job_id}"
        f"?project={project or ''}"
    )


def plain_line(done: int, failed: int, total: Total, rate: float | None) -> str:
    """``progress: 45% 1,350/3,000 rows, 0 failed (1,234 rows/s, ETA 0:00:02)``."""
    speed = f"{rate:,.0f} rows/s" if rate else "- rows/s"
    eta = ""
    if total.rows:
        pct = min(100.0, 100.0 * done / total.rows)
        approx = "~" if total.estimated else ""
        head = f"{pct:.0f}% {done:,}/{approx}{total.rows:,} rows"
        if rate and done < total.rows:
            eta = f", ETA {_clock((total.rows - done) / rate)}"
    else:
        head = f"{done:,} rows"
    return f"progress: {head}, {failed:,} failed ({speed}{eta})"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressMonitor:
    """Shows a job's progress from a thread while the launcher waits for the job.

    Args:
        total: Rows expected (see :func:`input_total`).
        interval: Seconds between plain lines (``--progress-seconds``).
        live: Draw a live ``rich`` bar (a terminal) instead of plain lines.
        stream: Where to write (default: stderr).
    """

    def __init__(
        self, total: Total, interval: float, *, live: bool, stream: IO[str] | None = None
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix="batch-score-progress-")
        self._total = total
        self._interval = interval
        self._live = live
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = self._last_line = time.monotonic()
        self._last_done = -1
        self._first: tuple[float, int] | None = None

    def start(self) -> ProgressMonitor:
        self._started = time.monotonic()
        if self._live:
            self._progress, self._task = _rich_bar(self._stream, self._total)
            self._progress.start()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from keras_batch_score.transforms.run.progress import (
            read_channel,  # imports Beam: not at CLI start
        )

        next_line = self._started + self._interval
        tick = (
            _TICK_SECONDS
            if self._live
            else max(_MIN_TICK_SECONDS, min(_TICK_SECONDS, self._interval))
        )
        while not self._stop.wait(tick):
            counts = read_channel(self.directory)
            if self._live:
                self._update_bar(counts)
                continue
            now = time.monotonic()
            done = counts["scored"] + counts["failed"]
            first_rows = self._last_done < 0 and done > 0  # shown at once, not after an interval
            if now < next_line and not first_rows:
                continue
            next_line = now + self._interval
            finished = self._total.rows is not None and done >= self._total.rows
            stale = now - self._last_line >= max(_HEARTBEAT_SECONDS, self._interval)
            if not finished and (done != self._last_done or stale):
                self._print(counts, self._rate(done, now))

    def _rate(self, done: int, now: float) -> float | None:
        """Rows/s since the first rows were done (start-up time excluded)."""
        if self._first is None:
            if done > 0:
                self._first = (now, done)
            return None
        first_time, first_done = self._first
        return (done - first_done) / (now - first_time) if now > first_time else None

    def _update_bar(self, counts: Mapping[str, int]) -> None:
        done = counts["scored"] + counts["failed"]
        self._progress.update(self._task, completed=done, failed=f"{counts['failed']:,}")

    def _print(self, counts: Mapping[str, int], rate: float | None) -> None:
        done = counts["scored"] + counts["failed"]
        print(plain_line(done, counts["failed"], self._total, rate), file=self._stream, flush=True)
        self._last_done, self._last_line = done, time.monotonic()

    def stop(self, final: Mapping[str, Any] | None = None) -> None:
        """Stops the thread; with the job's final counts, shows the 100% state.

        Args:
            final: The finished job's summary (``rows_read``, ``rows_scored``,
                ``rows_failed``, ``rows_per_second``).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if final is not None:
                done = final["rows_scored"] + final["rows_failed"]
                if self._live:
                    self._progress.update(
                        self._task,
                        total=max(final["rows_read"], 1),
                        completed=max(done, final["rows_read"]),
                        failed=f"{final['rows_failed']:,}",
                        rate=final.get("rows_per_second"),
                    )
                else:
                    self._total = Total(final["rows_read"])
                    self._print(
                        {"scored": final["rows_scored"], "failed": final["rows_failed"]},
                        final.get("rows_per_second"),
                    )
            if self._progress is not None:
                self._progress.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class _RowsPerSecond(ProgressColumn):
    """``1,234 rows/s`` from rich's windowed speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


def _rich_bar(stream: IO[str], total: Total) -> tuple[Progress, TaskID]:
    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        _RowsPerSecond(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=Console(file=stream),
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task("scoring", total=total.rows, failed="0", rate=None)
    return progress, task
