"""The quality gate after a scoring run: reads the files the job wrote, fails on bad runs.

No Airflow, Beam or TensorFlow import here, so the rule is testable anywhere.
The DAGs (``score_flex_dag.py``, ``score_dag.py``) call :func:`check_run` with
a reader built on Airflow's ``GCSHook`` (:func:`gcs_reader`) and turn
:class:`GateFailure` into a task failure without retries (re-running does not
fix data). Local paths are read directly (:func:`read_local`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Protocol

SUMMARY_FILE = "run_summary.json"
DRIFT_FILE = "drift.json"

Reader = Callable[[str], "bytes | None"]
"""Reads a file's bytes by path or ``gs://`` URI; ``None`` when it does not exist."""


class GateFailure(Exception):
    """The run finished but its results must not be used; the message says why."""


class GcsDownloader(Protocol):
    """The part of ``airflow.providers.google.cloud.hooks.gcs.GCSHook`` the gate uses."""

    def exists(self, bucket_name: str, object_name: str) -> bool: ...

    def download(self, bucket_name: str, object_name: str) -> bytes: ...


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri[:200]!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri[:200]!r}")
    return bucket, name


def join(directory: str, name: str) -> str:
    """``directory/name`` for local paths and ``gs://`` URIs alike."""
    return f"{directory.rstrip('/')}/{name}"


def read_local(path: str) -> bytes | None:
    """A local file's bytes, or ``None`` when it does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def gcs_reader(make_hook: Callable[[], GcsDownloader]) -> Reader:
    """A :data:`Reader` for ``gs://`` URIs through a ``GCSHook``; local paths read directly.

    Args:
        make_hook: Builds the hook (e.g. ``lambda: GCSHook(gcp_conn_id=...)``),
            called on the first ``gs://`` read only.
    """
    hooks: list[GcsDownloader] = []

    def read(uri: str) -> bytes | None:
        if not uri.startswith("gs://"):
            return read_local(uri)
        if not hooks:
            hooks.append(make_hook())
        bucket, name = split_gcs_uri(uri)
        if not hooks[0].exists(bucket_name=bucket, object_name=name):
            return None
        return hooks[0].download(bucket_name=bucket, object_name=name)

    return read


def _read_json(read: Reader, path: str) -> dict[str, Any] | None:
    data = read(path)
    if data is None:
        return None
    return json.loads(data.decode("utf-8"))


def evaluate(
    summary: dict[str, Any] | None,
    drift: dict[str, Any] | None,
    output_dir: str,
    max_rows_failed: int = 0,
) -> dict[str, Any]:
    """The gate rule on already-read ``run_summary.json`` and ``drift.json`` contents.

    Args:
        summary: ``run_summary.json``, or ``None`` when the job wrote none.
        drift: ``drift.json``, or ``None`` when the run had no reference profile.
        output_dir: The job's output directory (for the messages).
        max_rows_failed: Most rejected rows (validation or inference errors) accepted.

    Returns:
        What was checked: ``rows_read``, ``rows_scored``, ``rows_failed`` and,
        when ``drift`` is given, ``drift_detected``.

    Raises:
        GateFailure: no summary (the job did not finish), too many failed rows,
            or dataset drift detected.
    """
    if max_rows_failed < 0:
        raise ValueError(f"max_rows_failed must be >= 0, got {max_rows_failed}")
    if summary is None:
        raise GateFailure(
            f"{join(output_dir, SUMMARY_FILE)} does not exist: "
            "the scoring job did not finish (check its logs)"
        )
    result = {k: summary[k] for k in ("rows_read", "rows_scored", "rows_failed")}
    if summary["rows_failed"] > max_rows_failed:
        raise GateFailure(
            f"{summary['rows_failed']:,} of {summary['rows_read']:,} rows failed "
            f"(limit {max_rows_failed:,}); see the errors-*.jsonl files in {output_dir}"
        )
    if drift is not None:
        result["drift_detected"] = bool(drift.get("drift_detected"))
        if result["drift_detected"]:
            raise GateFailure(
                f"dataset drift detected: {drift.get('message', '')}; "
                f"see {join(output_dir, 'drift.html')}"
            )
    return result


def check_run(
    output_dir: str, max_rows_failed: int = 0, read: Reader = read_local
) -> dict[str, Any]:
    """Applies :func:`evaluate` to ``run_summary.json`` and ``drift.json`` in ``output_dir``.

    Args:
        output_dir: The scoring job's ``--output`` directory.
        max_rows_failed: Most rejected rows accepted.
        read: How to read a file (default: local files; :func:`gcs_reader` for ``gs://``).
    """
    summary = _read_json(read, join(output_dir, SUMMARY_FILE))
    drift = _read_json(read, join(output_dir, DRIFT_FILE)) if summary is not None else None
    return evaluate(summary, drift, output_dir, max_rows_failed)
