"""What a user sees: progress and a summary, no framework log spam."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import util

NOISE = (
    "I0000",
    "E0000",
    "WARNING: All log messages",
    "oneDNN",
    "cuInit",
    "Prism",
    "prism",
    "Traceback",
)


def _score(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    util.mlp(4, seed=2).save(tmp_path / "m.keras")
    util.write_parquet(tmp_path / "in.parquet", util.feature_table(3000, 4), row_group_size=500)
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "batch-score"),
        "score",
        "--model", str(tmp_path / "m.keras"),
        "--input", str(tmp_path / "in.parquet"),
        "--output", str(tmp_path / "out"),
        "--id-column", "id",
        "--batch-size", "250",
        *extra,
    ]  # fmt: skip
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BATCH_SCORE_VERBOSITY")
    }
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_default_console_shows_progress_and_summary_only(tmp_path):
    proc = _score(tmp_path, "--progress-seconds", "0.0001")
    assert proc.returncode == 0, proc.stderr
    assert "done: 3,000 rows read, 3,000 scored, 0 failed" in proc.stdout
    assert "progress: " in proc.stderr and "rows/s" in proc.stderr
    for noise in NOISE:
        assert noise not in proc.stdout + proc.stderr, f"{noise!r} leaked to the console"


def test_quiet_prints_nothing_on_success(tmp_path):
    proc = _score(tmp_path, "--quiet", "--progress-seconds", "0.0001")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_job_failure_is_one_line_without_traceback(tmp_path):
    util.write_parquet(tmp_path / "other.parquet", util.feature_table(10, 3))
    proc = _score(tmp_path, "--feature-columns", "f0,f1,f2")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model input 'x' (shape (4,)) expects 4 values per row")
    assert "Traceback" not in proc.stderr
