"""Model calls in flight (transforms/model/handler.py): the call overlaps the stage, results do not change.

Checked: ``run_inference`` returns before the model call finishes, two calls
run at once, a pipeline scores every row exactly once with the same values
as synchronous calls, and a call that raises outside the model fails its rows
with Beam's dead-letter reason instead of failing the job.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.deferred import Deferred
from keras_batch_score.transforms.model import handler as handler_module
from keras_batch_score.transforms.model.handler import KerasModelHandler, RunKerasInference
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.tensors import TensorInfo


def _model(call) -> LoadedModel:
    return LoadedModel(
        inputs=[TensorInfo("x", (1,), "float32")],
        outputs=[TensorInfo("out", (1,), "float32")],
        call=call,
        model_id="fake",
        format="test",
        weights=lambda: [],
    )


def _times_ten(tensors):
    return {"out": np.asarray(tensors["x"]) * 10}


def _batch(ids: np.ndarray, rejected: int = 0) -> ScoringBatch:
    return ScoringBatch(
        table=pa.table({"id": ids}),
        features={"x": ids[:, None].astype(np.float32)},
        rows_rejected=rejected,
    )


def _handler(calls_in_flight: int, model: LoadedModel | None = None) -> KerasModelHandler:
    class Fixed(KerasModelHandler):
        def load_model(self):
            return model

    cls = Fixed if model is not None else KerasModelHandler
    return cls(None, {"x": 1}, max_batch_rows=64, calls_in_flight=calls_in_flight)  # type: ignore[arg-type]


def test_run_inference_returns_before_the_model_call_finishes():
    started, release = threading.Event(), threading.Event()

    def blocked(tensors):
        started.set()
        if not release.wait(30):
            raise TimeoutError("never released")
        return _times_ten(tensors)

    handler = _handler(2)
    (result,) = handler.run_inference([_batch(np.arange(5))], _model(blocked))
    assert isinstance(result.inference, Deferred)
    assert started.wait(30) and not result.inference.done()  # the call runs on another thread
    release.set()
    outcome = result.inference.result()
    np.testing.assert_array_equal(outcome.scored.predictions["out"], np.arange(5) * 10.0)
    assert outcome.failed is None


def test_two_model_calls_run_at_once():
    """Both calls must be inside the model together to pass the barrier; one thread would break it."""
    barrier = threading.Barrier(2, timeout=30)

    def meet(tensors):
        barrier.wait()
        return _times_ten(tensors)

    handler, model = _handler(2), _model(meet)
    first = handler.run_inference([_batch(np.arange(3))], model)
    second = handler.run_inference([_batch(np.arange(3, 6))], model)
    outcomes = [r.inference.result() for r in (*first, *second)]
    assert [o.failed for o in outcomes] == [None, None]
    assert [o.scored.predictions["out"].tolist() for o in outcomes] == [
        [0.0, 10.0, 20.0],
        [30.0, 40.0, 50.0],
    ]


def test_a_call_that_raises_outside_the_model_fails_its_rows_with_a_one_line_reason(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("handler broke\nsecond line")

    monkeypatch.setattr(handler_module, "predict_rows", broken)
    handler = _handler(2)
    results = handler.run_inference(
        [_batch(np.arange(4), rejected=2), _batch(np.arange(4, 6))], _model(_times_ten)
    )
    outcomes = [r.inference.result() for r in results]
    assert [o.scored.num_rows for o in outcomes] == [0, 0]
    assert [o.scored.rows_rejected for o in outcomes] == [2, 0]  # progress still counts them once
    assert [o.failed.batch.table["id"].to_pylist() for o in outcomes] == [[0, 1, 2, 3], [4, 5]]
    assert {r for o in outcomes for r in o.failed.reasons} == {
        "inference failed: RuntimeError: handler broke"
    }
    assert [o.failed.batch.rows_rejected for o in outcomes] == [0, 0]


@pytest.mark.parametrize("calls_in_flight", [0, 2])
def test_handler_splits_failed_rows_back_to_their_batches(calls_in_flight):
    def call(tensors):
        x = np.asarray(tensors["x"])
        if (x[:, 0] == 13).any():
            raise ValueError("row 13 is cursed\nsecond line")
        return {"out": np.where(x[:, 0] == 40, np.nan, x[:, 0] * 10)[:, None]}

    ids = [np.arange(0, 20), np.arange(20, 30), np.arange(30, 50)]
    batches = [_batch(i, rejected=k) for k, i in enumerate(ids)]
    results = _handler(calls_in_flight).run_inference(batches, _model(call))
    deferred = [isinstance(r.inference, Deferred) for r in results]
    assert deferred == [bool(calls_in_flight)] * 3
    outcomes = [
        r.inference.result() if d else r.inference for r, d in zip(results, deferred, strict=True)
    ]
    scored = [o.scored for o in outcomes]
    assert [o.failed.batch.table["id"].to_pylist() if o.failed else [] for o in outcomes] == [
        [13],
        [],
        [40],
    ]
    assert outcomes[0].failed.reasons == ["inference failed: ValueError: row 13 is cursed"]
    assert outcomes[2].failed.reasons == ["model output is NaN"]
    for s, i, k in zip(scored, ids, range(3), strict=True):
        expected = i[(i != 13) & (i != 40)]
        np.testing.assert_array_equal(s.table["id"].to_numpy(), expected)
        np.testing.assert_allclose(s.predictions["out"], expected * 10.0)
        assert s.rows_rejected == k and s.model_id == "fake"


def test_calls_in_flight_must_not_be_negative():
    with pytest.raises(ValueError, match="calls_in_flight"):
        _handler(-1)


def test_the_handler_pickles_without_its_threads():
    import pickle

    handler = _handler(2)
    handler.run_inference([_batch(np.arange(2))], _model(_times_ten))[0].inference.result()
    copy = pickle.loads(pickle.dumps(handler))
    assert copy.calls_in_flight == 2
    (result,) = copy.run_inference([_batch(np.arange(2))], _model(_times_ten))
    assert result.inference.result().scored.predictions["out"].tolist() == [0.0, 10.0]


@pytest.mark.parametrize("calls_in_flight", [0, 1, 2, 3])
def test_a_pipeline_scores_every_row_once_with_the_same_values(calls_in_flight):
    def call(tensors):
        x = np.asarray(tensors["x"])
        return {"out": np.where(x % 17 == 5, np.nan, x * 10)}  # some rows fail as NaN

    ids = np.arange(2000)
    batches = [_batch(ids[a : a + 37]) for a in range(0, len(ids), 37)]
    handler = _handler(calls_in_flight, _model(call))
    with beam.Pipeline() as p:
        scored, errors = p | beam.Create(batches) | RunKerasInference(handler)
        rows = scored | "ScoredRows" >> beam.FlatMap(
            lambda b: zip(b.table["id"].to_pylist(), b.predictions["out"].tolist(), strict=True)
        )
        failed = errors | "FailedRows" >> beam.FlatMap(
            lambda t: zip(json_ids(t), t["reason"].to_pylist(), strict=True)
        )
        good = ids[ids % 17 != 5]
        assert_that(rows, equal_to([(int(i), float(i) * 10) for i in good]), label="scored")
        bad = ids[ids % 17 == 5]
        assert_that(
            failed, equal_to([(int(i), "model output is NaN") for i in bad]), label="failed"
        )


def json_ids(errors: pa.Table) -> list[int]:
    import json

    return [(json.loads(r) if isinstance(r, str) else r)["id"] for r in errors["row"].to_pylist()]
