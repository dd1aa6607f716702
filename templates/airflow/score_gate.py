"""The quality gate after a scoring run: reads the files the job wrote, fails on bad runs.

No Airflow import here, so the rule is testable anywhere; the DAG
(``score_dag.py``) calls :func:`check_run` and turns :class:`GateFailure`
into a task failure without retries (re-running does not fix data).
Paths go through Beam ``FileSystems``: local and ``gs://`` outputs both work.
"""

from __future__ import annotations

import json
from typing import Any

SUMMARY_FILE = "run_summary.json"
DRIFT_FILE = "drift.json"


class GateFailure(Exception):
    """The run finished but its results must not be used; the message says why."""


def _read_json(path: str) -> dict[str, Any] | None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def check_run(output_dir: str, max_rows_failed: int = 0) -> dict[str, Any]:
    """Checks ``run_summary.json`` (and ``drift.json`` when present) in ``output_dir``.

    Args:
        output_dir: The scoring job's ``--output`` directory.
        max_rows_failed: Most rejected rows (validation or inference errors) accepted.

    Returns:
        What was checked: ``rows_read``, ``rows_scored``, ``rows_failed`` and,
        when ``drift.json`` exists, ``drift_detected``.

    Raises:
        GateFailure: no summary (the job did not finish), too many failed rows,
            or dataset drift detected.
    """
    from apache_beam.io.filesystems import FileSystems

    if max_rows_failed < 0:
        raise ValueError(f"max_rows_failed must be >= 0, got {max_rows_failed}")
    summary_path = FileSystems.join(output_dir, SUMMARY_FILE)
    summary = _read_json(summary_path)
    if summary is None:
        raise GateFailure(
            f"{summary_path} does not exist: the scoring job did not finish (check its logs)"
        )
    result = {k: summary[k] for k in ("rows_read", "rows_scored", "rows_failed")}
    if summary["rows_failed"] > max_rows_failed:
        raise GateFailure(
            f"{summary['rows_failed']:,} of {summary['rows_read']:,} rows failed "
            f"(limit {max_rows_failed:,}); see the errors-*.jsonl files in {output_dir}"
        )
    drift = _read_json(FileSystems.join(output_dir, DRIFT_FILE))
    if drift is not None:
        result["drift_detected"] = bool(drift.get("drift_detected"))
        if result["drift_detected"]:
            raise GateFailure(
                f"dataset drift detected: {drift.get('message', '')}; "
                f"see {FileSystems.join(output_dir, 'drift.html')}"
            )
    return result
