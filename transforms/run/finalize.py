"""Row accounting, reconciliation and the run's final step, inside the pipeline.

The counts come from a global combine over the batches, not from the
launcher (which does not wait for the job on Dataflow or Flink). The final
step runs once, after every output file is written: it checks
``rows_read == rows_scored + rows_failed``, writes ``run_summary.json`` into
the staging directory too, and publishes every staged file in one step
(:func:`keras_batch_score.transforms.run.publish.publish`: only the files the previous run's
``_manifest.json`` lists are replaced). If the counts do not reconcile, or a
write fails, the step raises, the job fails, and the published files stay as
they were.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ReconciliationError
from keras_batch_score.transforms.run.files import PublishError, reason
from keras_batch_score.transforms.run.publish import delete_tree, publish

_LOG = logging.getLogger("keras_batch_score")

SUMMARY_FILE = "run_summary.json"
COUNT_KEYS = ("rows_read", "rows_scored", "rows_failed")


def count_rows(key: str):
    """A function mapping a table or batch to ``(key, number of rows)``."""

    def fn(element: Any) -> tuple[str, int]:
        return key, int(element.num_rows)

    return fn


class SumByKeyFn(beam.CombineFn):
    """Sums ``(key, count)`` pairs into one dict; empty input gives zeros for ``keys``."""

    def __init__(self, keys: Iterable[str] = COUNT_KEYS) -> None:
        self._keys = tuple(keys)

    def create_accumulator(self) -> dict[str, int]:
        return dict.fromkeys(self._keys, 0)

    def add_input(self, acc: dict[str, int], element: tuple[str, int]) -> dict[str, int]:
        key, value = element
        acc[key] = acc.get(key, 0) + value
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        merged = self.create_accumulator()
        for acc in accumulators:
            for key, value in acc.items():
                merged[key] = merged.get(key, 0) + value
        return merged

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return dict(acc)


class CountRows(beam.PTransform):
    """(rows read, rows scored, rows failed) PCollections -> one counts dict.

    Each key maps to a PCollection of tables or batches, or to a sequence of
    them (counted separately, then summed).
    """

    def __init__(
        self, read: str = "rows_read", scored: str = "rows_scored", failed: str = "rows_failed"
    ) -> None:
        super().__init__()
        self._keys = (read, scored, failed)

    def expand(
        self, pcolls: Mapping[str, beam.PCollection | Sequence[beam.PCollection]]
    ) -> beam.PCollection:
        # Each PCollection is counted where it is produced, before any Flatten: a
        # Flatten of tables on the FnApi runner materializes (encodes and buffers)
        # every table, which cost ~1 s per million W1 rows just to count them.
        tagged = []
        for key, value in pcolls.items():
            parts = [value] if isinstance(value, beam.PCollection) else list(value)
            for i, pcoll in enumerate(parts):
                label = f"Count[{key}]" if len(parts) == 1 else f"Count[{key}][{i}]"
                tagged.append(pcoll | label >> beam.Map(count_rows(key)))
        return (
            tagged
            | "Flatten" >> beam.Flatten()
            | "Sum" >> beam.CombineGlobally(SumByKeyFn(self._keys))
        )


def reconcile(counts: Mapping[str, int]) -> None:
    """Raises ReconciliationError unless rows_read == rows_scored + rows_failed."""
    read, scored, failed = (counts[k] for k in COUNT_KEYS)
    if read != scored + failed:
        raise ReconciliationError(
            f"row accounting failed: rows_read={read:,} but rows_scored={scored:,} + rows_failed={failed:,} "
            f"= {scored + failed:,}; outputs were not published"
        )


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    with FileSystems.create(path) as f:
        f.write(
            (json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")
        )


class FinalizeRunDoFn(beam.DoFn):
    """Runs once (on an Impulse) with every written file as a side input."""

    def __init__(
        self, output_dir: str, staging_dir: str, started_at: float, summary: Mapping[str, Any]
    ) -> None:
        self._output_dir = output_dir
        self._staging_dir = staging_dir
        self._started_at = started_at
        self._summary = dict(summary)

    def process(
        self,
        _,
        counts: Mapping[str, int],
        predictions: list[str],
        errors: list[str],
        reports: list[str],
    ):
        counts = dict(counts)
        try:
            reconcile(counts)
        except ReconciliationError:
            delete_tree(self._staging_dir)
            raise
        staged = sorted([*predictions, *errors, *reports])
        final = [FileSystems.join(self._output_dir, posixpath.basename(p)) for p in staged]
        elapsed = time.time() - self._started_at
        summary = {
            **counts,
            "reconciled": True,
            "elapsed_seconds": round(elapsed, 3),
            "rows_per_second": round(counts["rows_read"] / elapsed, 1) if elapsed > 0 else None,
            **self._summary,
            "output_files": final,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        staged_summary = FileSystems.join(self._staging_dir, SUMMARY_FILE)
        try:
            write_json(staged_summary, summary)
        except Exception as e:
            raise PublishError(
                f"writing {staged_summary} failed: {reason(e)}; nothing was published"
            ) from e
        publish(
            [*staged, staged_summary],
            self._output_dir,
            self._staging_dir,
            str(self._summary.get("run_id", "")),
            commit_file=SUMMARY_FILE,
        )
        delete_tree(self._staging_dir)
        yield summary


class FinalizeRun(beam.PTransform):
    """Reconciles the counts, writes ``run_summary.json`` and publishes every staged file.

    ``reports`` holds the paths of extra staged files (the drift report), if any.

    Returns:
        A PCollection holding the summary dict.
    """

    def __init__(
        self,
        output_dir: str,
        staging_dir: str,
        started_at: float,
        summary: Mapping[str, Any],
        *,
        counts: beam.PCollection,
        predictions: beam.PCollection,
        errors: beam.PCollection,
        reports: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self._fn = FinalizeRunDoFn(output_dir, staging_dir, started_at, summary)
        self._counts = counts
        self._predictions = predictions
        self._errors = errors
        self._reports = reports

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        reports = self._reports
        if reports is None:
            reports = pbegin | "NoReports" >> beam.Create([]).with_output_types(str)
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Publish"
            >> beam.ParDo(
                self._fn,
                counts=beam.pvalue.AsSingleton(self._counts),
                predictions=beam.pvalue.AsList(self._predictions),
                errors=beam.pvalue.AsList(self._errors),
                reports=beam.pvalue.AsList(reports),
            )
        )
