"""The bench's comparison of another engine's output with ours (benchmarks/bench.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.bench import _prediction_diff


def _write(directory, name, ids, predictions):
    directory.mkdir(exist_ok=True)
    table = pa.table({"id": np.asarray(ids, np.int64), "prediction": np.float32(predictions)})
    pq.write_table(table, directory / name)


def test_prediction_diff_matches_rows_by_id_across_files(tmp_path):
    _write(tmp_path / "theirs", "part-0.parquet", [3, 1], [0.3, 0.1])
    _write(tmp_path / "theirs", "part-1.parquet", [0, 2], [0.0, 0.25])
    _write(tmp_path / "ours", "predictions-00000-of-00002.parquet", [0, 1], [0.0, 0.1])
    _write(tmp_path / "ours", "predictions-00001-of-00002.parquet", [2, 3], [0.2, 0.3])
    assert _prediction_diff(tmp_path / "theirs", tmp_path / "ours", 4) == pytest.approx(0.05)


def test_prediction_diff_refuses_missing_or_different_rows(tmp_path):
    _write(tmp_path / "ours", "predictions-00000-of-00001.parquet", [0, 1, 2], [0.0, 0.1, 0.2])
    _write(tmp_path / "short", "part-0.parquet", [0, 1], [0.0, 0.1])
    with pytest.raises(RuntimeError, match="2 rows, ours 3, expected 3"):
        _prediction_diff(tmp_path / "short", tmp_path / "ours", 3)
    _write(tmp_path / "other", "part-0.parquet", [0, 1, 5], [0.0, 0.1, 0.2])
    with pytest.raises(RuntimeError, match="ids differ"):
        _prediction_diff(tmp_path / "other", tmp_path / "ours", 3)
