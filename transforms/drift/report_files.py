"""Writing and reading the drift report files (``drift.json``, ``drift.html``).

Paths go through Beam ``FileSystems``, so ``gs://`` works the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

DRIFT_JSON = "drift.json"


DRIFT_HTML = "drift.html"


class DriftDetectedError(RuntimeError):
    """Dataset drift was detected and ``--fail-on-drift`` is set (raised after all outputs are written)."""


def write_reports(report: Mapping[str, Any], output_dir: str) -> list[str]:
    """Writes ``drift.json`` and ``drift.html`` into ``output_dir``; returns their paths."""
    from keras_batch_score.transforms.drift.html import render_html

    paths = report_paths(output_dir)
    texts = (json.dumps(report, indent=2, allow_nan=False) + "\n", render_html(report))
    for path, text in zip(paths, texts, strict=True):
        with FileSystems.create(path) as f:
            f.write(text.encode("utf-8"))
    return paths


def report_paths(output_dir: str) -> list[str]:
    """Where :func:`write_reports` puts ``drift.json`` and ``drift.html`` in ``output_dir``."""
    return [FileSystems.join(output_dir, name) for name in (DRIFT_JSON, DRIFT_HTML)]


def read_report(output_dir: str) -> dict[str, Any]:
    """Reads ``drift.json`` back (for the launcher's ``--fail-on-drift`` check)."""
    with FileSystems.open(FileSystems.join(output_dir, DRIFT_JSON)) as f:
        return json.loads(f.read().decode("utf-8"))


def drift_outcome(output_dir: str, *, fail_on_drift: bool) -> dict[str, Any]:
    """Reads the job's ``drift.json``; a short summary of it for the launcher.

    Raises:
        DriftDetectedError: when ``fail_on_drift`` and dataset drift was detected
            (the files are already written).
    """
    report = read_report(output_dir)
    outcome = {
        "drift_detected": report["drift_detected"],
        "prediction_drift_detected": report["prediction_drift_detected"],
        "drifted_features": report["dataset"]["drifted_features"],
        "message": report["message"],
        "report": FileSystems.join(output_dir, DRIFT_HTML),
    }
    if fail_on_drift and report["drift_detected"]:
        raise DriftDetectedError(
            f"dataset drift detected ({report['message']}); see {outcome['report']}"
        )
    return outcome
