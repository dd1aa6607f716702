"""The columnar element type, its coders, and slicing helpers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.transforms.core.batch import (
    ScoringBatch,
    concat_features,
    slice_table,
    split_rows,
)
from keras_batch_score.transforms.core.coders import (
    ArrowTableCoder,
    PredictionResultCoder,
    ScoringBatchCoder,
    batch_nbytes,
    table_nbytes,
)


def _batch(n: int = 10) -> ScoringBatch:
    table = pa.table({"id": np.arange(n)})
    return ScoringBatch(
        table=table, features={"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3)}
    )


def test_slice_table_is_balanced_and_covers_every_row():
    table = pa.table({"id": np.arange(70_000)})
    pieces = slice_table(table, 32_768)
    assert [p.num_rows for p in pieces] == [23_333, 23_333, 23_334]
    assert pa.concat_tables(pieces)["id"].to_pylist() == list(range(70_000))
    assert slice_table(table, 100_000) == [table]


def test_concat_and_split_round_trip():
    a, b = _batch(4), _batch(6)
    joined = concat_features([a, b])
    assert joined["x"].shape == (10, 3)
    back = split_rows(joined, [4, 6])
    np.testing.assert_array_equal(back[0]["x"], a.features["x"])
    np.testing.assert_array_equal(back[1]["x"], b.features["x"])
    assert concat_features([a])["x"] is a.features["x"]


def test_with_predictions_checks_row_count():
    batch = _batch(5)
    scored = batch.with_predictions({"score": np.zeros(5)}, "m@1")
    assert scored.model_id == "m@1" and "score" in scored.predictions and not batch.predictions
    with pytest.raises(ValueError, match="prediction 'score' has 4 rows, the batch has 5"):
        batch.with_predictions({"score": np.zeros(4)}, "m@1")


def test_coders_round_trip_and_estimate_sizes_without_encoding():
    table = pa.table({"id": np.arange(1000), "v": np.random.default_rng(0).normal(size=1000)})
    coder = ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)
    assert coder.estimate_size(table) == table.nbytes
    batch = _batch(8).with_predictions({"p": np.ones(8, np.float32)}, "m@1")
    bcoder = ScoringBatchCoder()
    decoded = bcoder.decode(bcoder.encode(batch))
    assert decoded.table.equals(batch.table) and decoded.model_id == "m@1"
    np.testing.assert_array_equal(decoded.features["x"], batch.features["x"])
    assert (
        bcoder.estimate_size(batch) == batch_nbytes(batch) == batch.table.nbytes + 8 * 3 * 4 + 8 * 4
    )


def test_table_size_estimate_counts_the_rows_of_a_slice_not_its_buffers():
    n = 64
    table = pa.table(
        {
            "f": np.arange(n, dtype=np.float32),
            "i": np.arange(n, dtype=np.int64),
            "s": [str(i) for i in range(n)],
            "v": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float64(), 2)),
            "d": pa.array(["a", "b"] * (n // 2)).dictionary_encode(),
        }
    )
    part = table.slice(16, 16)
    others = sum(part.column(c).nbytes for c in ("s", "v", "d"))
    assert table_nbytes(part) == 16 * 4 + 16 * 8 + others
    assert table_nbytes(part) == part.nbytes  # no validity bitmaps here
    assert table_nbytes(table) == table.nbytes
    assert part.get_total_buffer_size() > table_nbytes(part)  # whole buffers would overcount
    with_nulls = pa.table({"f": pa.array([1.0, None, 3.0], pa.float32())})
    assert table_nbytes(with_nulls) == 3 * 4  # bitmaps left out
    assert table_nbytes(pa.table({"b": [True] * 20})) == 3  # 20 bits


def test_prediction_results_estimate_their_size_from_buffers_not_by_pickling(monkeypatch):
    from apache_beam.ml.inference.base import PredictionResult

    from keras_batch_score.transforms.core import coders
    from keras_batch_score.transforms.model.handler import FailedRows, InferenceOutcome

    batch = _batch(1000)
    scored = batch.with_predictions({"p": np.ones(1000, np.float32)}, "m@1")
    failed = FailedRows(batch=_batch(2), reasons=["x", "y"])
    result = PredictionResult(batch, InferenceOutcome(scored=scored, failed=failed), "m@1")
    coder = PredictionResultCoder()
    back = coder.decode(coder.encode(result))
    assert back.model_id == "m@1" and back.inference.scored.table.equals(scored.table)
    small = len(coders.pickle.dumps(["x", "y"], protocol=5)) + len(
        coders.pickle.dumps("m@1", protocol=5)
    )
    real_dumps = coders.pickle.dumps

    def no_big_pickles(value, *args, **kwargs):
        encoded = real_dumps(value, *args, **kwargs)
        assert len(encoded) < 1000, f"pickled a {type(value).__name__} to estimate its size"
        return encoded

    monkeypatch.setattr(coders.pickle, "dumps", no_big_pickles)
    assert coder.estimate_size(result) == (
        batch_nbytes(batch) + batch_nbytes(scored) + batch_nbytes(failed.batch) + small
    )
