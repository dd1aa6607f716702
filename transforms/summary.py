"""Row accounting, reconciliation and the run's final step, inside the pipeline.

The counts come from a global combine over the batches, not from the
launcher (which does not wait for the job on Dataflow or Flink). The final
step runs once, after every output file is written: it checks
``rows_read == rows_scored + rows_failed``, promotes the staged files into the
output directory (removing the previous run's files), and writes
``run_summary.json``. If the counts do not reconcile the step raises, the job
fails, and the previous results stay untouched.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.errors import ReconciliationError
from transforms.io import ERRORS_PREFIX, PREDICTIONS_PREFIX

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
    """(rows read, rows scored, rows failed) PCollections -> one counts dict."""

    def __init__(
        self, read: str = "rows_read", scored: str = "rows_scored", failed: str = "rows_failed"
    ) -> None:
        super().__init__()
        self._keys = (read, scored, failed)

    def expand(self, pcolls: Mapping[str, beam.PCollection]) -> beam.PCollection:
        tagged = [
            pcoll | f"Count[{key}]" >> beam.Map(count_rows(key)) for key, pcoll in pcolls.items()
        ]
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


def promote(staged: Iterable[str], output_dir: str, prefixes: Iterable[str]) -> list[str]:
    """Moves staged files into ``output_dir``, first deleting earlier files with the same prefixes.

    Returns:
        The final paths.
    """
    old: list[str] = []
    for prefix in prefixes:
        pattern = FileSystems.join(output_dir, f"{prefix}-*")
        old += [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if old:
        FileSystems.delete(old)
    sources = sorted(staged)
    targets = [FileSystems.join(output_dir, posixpath.basename(p)) for p in sources]
    if sources:
        FileSystems.rename(sources, targets)
    return targets


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

    def process(self, _, counts: Mapping[str, int], predictions: list[str], errors: list[str]):
        counts = dict(counts)
        try:
            reconcile(counts)
        except ReconciliationError:
            _delete_tree(self._staging_dir)
            raise
        files = promote(
            [*predictions, *errors], self._output_dir, (PREDICTIONS_PREFIX, ERRORS_PREFIX)
        )
        _delete_tree(self._staging_dir)
        elapsed = time.time() - self._started_at
        summary = {
            **counts,
            "reconciled": True,
            "elapsed_seconds": round(elapsed, 3),
            "rows_per_second": round(counts["rows_read"] / elapsed, 1) if elapsed > 0 else None,
            **self._summary,
            "output_files": files,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(FileSystems.join(self._output_dir, SUMMARY_FILE), summary)
        yield summary


def _delete_tree(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # leftover staging files are harmless; never mask the real outcome
        _LOG.warning("could not remove staging directory %s: %s", path, e)


class FinalizeRun(beam.PTransform):
    """Reconciles the counts, publishes the files and writes ``run_summary.json``.

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
    ) -> None:
        super().__init__()
        self._fn = FinalizeRunDoFn(output_dir, staging_dir, started_at, summary)
        self._counts = counts
        self._predictions = predictions
        self._errors = errors

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Publish"
            >> beam.ParDo(
                self._fn,
                counts=beam.pvalue.AsSingleton(self._counts),
                predictions=beam.pvalue.AsList(self._predictions),
                errors=beam.pvalue.AsList(self._errors),
            )
        )
