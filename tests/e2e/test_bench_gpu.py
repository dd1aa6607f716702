"""``make bench-gpu`` (benchmarks/gpu.py) on a machine without a GPU: a clear refusal, and the
harness end to end under ``--allow-cpu`` (the real GPU run needs a GPU machine)."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.slow


def test_bench_gpu_refuses_without_a_gpu_and_runs_end_to_end_with_allow_cpu(
    tmp_path, capsys, monkeypatch
):
    from benchmarks import gpu

    # setenv records the variable's prior state, so the test session gets it back afterwards
    # (delenv records nothing when the variable is absent, and gpu.run's "true" leaked).
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "set by the test")

    if gpu.visible_gpus():
        pytest.skip("this machine has a GPU: `make bench-gpu` runs for real")
    small = ["--workdir", str(tmp_path), "--quick", "--rows", "20000", "--images", "60"]
    assert gpu.run(small) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no GPU is visible to TensorFlow")
    assert "--allow-cpu" in err and "Traceback" not in err
    assert not (tmp_path / "bench-gpu.json").exists()  # refused before doing anything

    assert gpu.run([*small, "--allow-cpu"]) == 0
    # The children that score on a GPU must not find its memory taken by this process.
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    results = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert results["gpus"] == [] and results["command"] == "make bench-gpu"
    raw = results["runs"]
    batches = sorted({16384, raw["w1_limit"]["best_batch"]})
    assert sorted(int(b) for b in raw["w1_ours"]) == batches
    rows = {r["key"]: r for r in results["rows"]}
    assert set(rows) == {f"w1_batch_{b}_vs_limit" for b in batches} | {
        "w2_vs_limit",
        "w2_vs_tfdata",
    }
    for b in batches:
        row = rows[f"w1_batch_{b}_vs_limit"]
        best = min(raw["w1_ours"][str(b)]["seconds"])
        assert row["ours"] == pytest.approx(20000 / best, rel=1e-3)
        assert row["reference"] == raw["w1_limit"]["rows_per_second"]
        assert row["ratio"] == pytest.approx(row["ours"] / row["reference"], abs=1e-3)
        assert row["met"] == (row["ours"] / row["reference"] >= 0.8)
        assert "CPU (--allow-cpu) compute limit" in row["workload"]
    w2 = raw["w2"]
    assert w2["rows_compared"] == 60 and w2["max_abs_prediction_diff"] < 1e-6
    assert rows["w2_vs_limit"]["reference"] == raw["w2_limit"]["rows_per_second"] > 0
    assert rows["w2_vs_limit"]["ours"] == w2["ours_rows_per_s"]
    table = (tmp_path / "bench-gpu.md").read_text()
    assert table.startswith("`make bench-gpu` --quick, ") and "GPUs: none (--allow-cpu)" in table
    assert table.count("| W1 20,000 rows, batch ") == len(batches)
