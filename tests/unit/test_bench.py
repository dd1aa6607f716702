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


def test_gpu_rows_compare_each_run_with_its_limit():
    from benchmarks.gpu import gpu_rows

    results = {
        "gpus": ["/physical_device:GPU:0"],
        "sizes": {"w1_rows": 5_000_000, "w2_images": 100_000},
        "runs": {
            "w1_limit": {"rows_per_second": 10_000_000.0, "best_batch": 262_144},
            "w1_ours": {
                "16384": {"rows_per_second": 5_000_000.0},
                "262144": {"rows_per_second": 9_000_000.0},
            },
            "w2": {"ours_rows_per_s": 8_000.0, "tfdata_script_rows_per_s": 4_000.0, "ratio": 2.0},
            "w2_limit": {"rows_per_second": 10_000.0},
        },
    }
    rows = {r["key"]: r for r in gpu_rows(results)}
    assert list(rows) == [
        "w1_batch_16384_vs_limit",
        "w1_batch_262144_vs_limit",
        "w2_vs_limit",
        "w2_vs_tfdata",
    ]
    assert (rows["w1_batch_16384_vs_limit"]["ratio"], rows["w1_batch_16384_vs_limit"]["met"]) == (
        0.5,
        False,
    )
    assert (rows["w1_batch_262144_vs_limit"]["ratio"], rows["w1_batch_262144_vs_limit"]["met"]) == (
        0.9,
        True,
    )
    assert (rows["w2_vs_limit"]["ratio"], rows["w2_vs_limit"]["met"]) == (0.8, True)  # >= 0.8x
    assert rows["w2_vs_limit"]["reference"] == 10_000.0
    assert (rows["w2_vs_tfdata"]["ratio"], rows["w2_vs_tfdata"]["met"]) == (2.0, None)
    assert "GPU compute limit (best batch 262,144)" in rows["w1_batch_16384_vs_limit"]["workload"]
    results["gpus"] = []
    assert "CPU (--allow-cpu) compute limit" in gpu_rows(results)[0]["workload"]
