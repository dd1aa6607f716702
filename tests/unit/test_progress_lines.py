"""The launcher's plain progress lines (piped output), driven through the progress channel."""

from __future__ import annotations

import io
import time

from keras_batch_score.pipelines.progress import ProgressMonitor, Total
from keras_batch_score.transforms.run.progress import ProgressChannel


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.startswith("progress: ")]


def _wait_for_line(stream: io.StringIO, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _lines(stream):
        time.sleep(0.05)
    return _lines(stream)


def test_first_rows_are_shown_at_once_not_after_the_interval():
    stream = io.StringIO()
    monitor = ProgressMonitor(Total(1000), interval=60.0, live=False, stream=stream).start()
    try:
        time.sleep(0.5)
        assert _lines(stream) == [], "a line before any row was done"
        channel = ProgressChannel(monitor.directory)
        channel.add(scored=245, failed=5)
        channel.flush()
        lines = _wait_for_line(stream, 5.0)
        assert lines == ["progress: 25% 250/1,000 rows, 5 failed (- rows/s)"]
        channel.add(scored=100)
        channel.flush()
        time.sleep(1.0)
        assert len(_lines(stream)) == 1, "the next line waits for --progress-seconds"
    finally:
        monitor.stop()
