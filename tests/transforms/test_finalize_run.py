"""``FinalizeRun`` under TestPipeline: it publishes only when rows_read == rows_scored + rows_failed.

Each test stages real files, runs the transform on the counts it is given and
then looks at the output folder itself: what a reader of the published output
would see.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from keras_batch_score.transforms.run.finalize import FinalizeRun

PREDICTIONS = "predictions-00000-of-00001.parquet"
ERRORS = "errors-00000-of-00001.jsonl"


def _stage(output: Path, run_id: str, contents: dict[str, str]) -> tuple[str, list[str]]:
    staging = output / f"_staging-{run_id}"
    staging.mkdir(parents=True)
    for name, text in contents.items():
        (staging / name).write_text(text)
    return str(staging), [str(staging / name) for name in contents]


def _finalize(output: Path, run_id: str, counts: dict[str, int], files: dict[str, str]):
    """Stages ``files`` and runs FinalizeRun with ``counts``; returns the summaries it emitted."""
    staging, staged = _stage(output, run_id, files)
    summaries = []

    def keep(got):
        summaries.extend(got)

    with TestPipeline() as p:
        summary = p | FinalizeRun(
            str(output),
            staging,
            time.time(),
            {"run_id": run_id},
            counts=p | "Counts" >> beam.Create([counts]),
            predictions=p | "Predictions" >> beam.Create([f for f in staged if "predictions" in f]),
            errors=p | "Errors" >> beam.Create([f for f in staged if "errors" in f]),
        )
        assert_that(summary, keep)
    return summaries


def _published(output: Path) -> dict[str, str]:
    return {
        name: (output / name).read_text()
        for name in sorted(os.listdir(output))
        if (output / name).is_file()
    }


def test_reconciled_counts_publish_the_staged_files_and_the_summary(tmp_path):
    counts = {"rows_read": 10, "rows_scored": 8, "rows_failed": 2}
    _finalize(tmp_path, "r1", counts, {PREDICTIONS: "eight rows", ERRORS: "two rows"})
    files = _published(tmp_path)
    assert files[PREDICTIONS] == "eight rows" and files[ERRORS] == "two rows"
    summary = json.loads(files["run_summary.json"])
    assert {k: summary[k] for k in counts} == counts and summary["reconciled"] is True
    assert sorted(os.path.basename(f) for f in summary["output_files"]) == [ERRORS, PREDICTIONS]
    assert json.loads(files["_manifest.json"])["state"] == "complete"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("_staging")]


@pytest.mark.parametrize(
    "counts",
    [
        {"rows_read": 10, "rows_scored": 7, "rows_failed": 2},  # a row went missing
        {"rows_read": 10, "rows_scored": 9, "rows_failed": 2},  # a row counted twice
        {"rows_read": 0, "rows_scored": 0, "rows_failed": 1},
    ],
)
def test_counts_that_do_not_add_up_fail_and_publish_nothing(tmp_path, counts):
    before = {PREDICTIONS: "first run", ERRORS: "first errors"}
    _finalize(tmp_path, "r1", {"rows_read": 3, "rows_scored": 3, "rows_failed": 0}, before)
    published = _published(tmp_path)

    with pytest.raises(Exception) as info:
        _finalize(tmp_path, "r2", counts, {PREDICTIONS: "second run", ERRORS: "second errors"})
    read, scored, failed = counts["rows_read"], counts["rows_scored"], counts["rows_failed"]
    message = str(info.value)
    assert "row accounting failed" in message and f"rows_read={read:,}" in message
    assert f"= {scored + failed:,}" in message and "not published" in message
    # the first run's files, summary and manifest are untouched; the staging is gone
    assert _published(tmp_path) == published
    assert json.loads(published["run_summary.json"])["run_id"] == "r1"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("_staging")]


def test_failed_reconciliation_into_an_empty_folder_leaves_it_empty(tmp_path):
    with pytest.raises(Exception, match="row accounting failed"):
        _finalize(
            tmp_path,
            "r1",
            {"rows_read": 5, "rows_scored": 4, "rows_failed": 0},
            {PREDICTIONS: "x", ERRORS: "y"},
        )
    assert os.listdir(tmp_path) == []
