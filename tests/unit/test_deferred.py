"""Deferred values and in-order emission (transforms/core/deferred.py)."""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.coders import PredictionResultCoder, estimate_nbytes
from keras_batch_score.transforms.core.deferred import Deferred, InOrderDoFn


def _finished(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def test_deferred_gives_its_item_of_the_result_and_waits_for_it():
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: (gate.wait(10), ["a", "b"])[1])
        first, second = Deferred(future, 0), Deferred(future, 1)
        assert not first.done()
        gate.set()
        assert (first.result(), second.result()) == ("a", "b")
        assert first.done()
    assert Deferred(_finished({"k": 1})).result() == {"k": 1}


def test_deferred_raises_what_computing_it_raised():
    future: Future = Future()
    future.set_exception(ValueError("broken"))
    with pytest.raises(ValueError, match="broken"):
        Deferred(future, 0).result()


def test_deferred_pickles_as_its_finished_value():
    """A runner that encodes the element must get the value, never the future."""
    restored = pickle.loads(pickle.dumps(Deferred(_finished([1.5, np.arange(3)]), 1)))
    np.testing.assert_array_equal(restored, np.arange(3))


def test_prediction_result_coder_encodes_a_deferred_inference_as_its_value():
    from apache_beam.ml.inference.base import PredictionResult

    batch = ScoringBatch(table=pa.table({"id": [1, 2]}), features={"x": np.ones((2, 1))})
    result = PredictionResult(batch, Deferred(_finished(["outcome"]), 0), "m@1")
    coder = PredictionResultCoder()
    decoded = coder.decode(coder.encode(result))
    assert decoded.inference == "outcome" and decoded.model_id == "m@1"


def test_size_estimate_does_not_wait_for_a_deferred_value():
    future: Future = Future()  # never finished: waiting for it would hang the test
    assert estimate_nbytes(Deferred(future, 0)) == 0
    values = np.zeros(1000, np.float64)
    assert estimate_nbytes(Deferred(_finished([values]), 0)) == values.nbytes


class _Echo(InOrderDoFn):
    """Emits each element's outputs (a value and a tagged value) once it is popped."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.called: list[int] = []

    def process(self, element: int, window, timestamp):
        def outputs():
            self.called.append(element)
            yield element * 10
            yield TaggedOutput("side", -element)

        yield from self.emit_in_order(outputs, window, timestamp)


def _window(i: int) -> IntervalWindow:
    return IntervalWindow(i * 10, i * 10 + 10)


def test_in_order_dofn_holds_depth_elements_and_emits_each_in_its_window():
    dofn = _Echo(depth=2)
    dofn.start_bundle()
    emitted = [list(dofn.process(i, _window(i), Timestamp(i * 10 + 1))) for i in range(5)]
    assert [len(e) for e in emitted] == [0, 0, 2, 2, 2]
    assert dofn.waiting == 2 and dofn.called == [0, 1, 2]
    rest = list(dofn.finish_bundle())
    assert dofn.waiting == 0 and dofn.called == [0, 1, 2, 3, 4]
    outputs = [o for e in emitted for o in e] + rest
    main = [o for o in outputs if not isinstance(o, TaggedOutput)]
    side = [o for o in outputs if isinstance(o, TaggedOutput)]
    assert all(isinstance(o, WindowedValue) for o in main)
    assert [(o.value, tuple(o.windows), o.timestamp) for o in main] == [
        (i * 10, (_window(i),), Timestamp(i * 10 + 1)) for i in range(5)
    ]
    assert [(o.tag, o.value.value, tuple(o.value.windows)) for o in side] == [
        ("side", -i, (_window(i),)) for i in range(5)
    ]


def test_in_order_dofn_with_depth_zero_emits_each_element_at_once():
    dofn = _Echo(depth=0)
    dofn.start_bundle()
    assert [len(list(dofn.process(i, _window(i), Timestamp(i)))) for i in range(3)] == [2, 2, 2]
    assert list(dofn.finish_bundle()) == []


def test_in_order_dofn_starts_each_bundle_empty():
    dofn = _Echo(depth=3)
    dofn.start_bundle()
    list(dofn.process(1, _window(1), Timestamp(1)))
    dofn.start_bundle()  # after a failed bundle, nothing of it is emitted again
    assert dofn.waiting == 0 and list(dofn.finish_bundle()) == []


def test_in_order_dofn_refuses_a_negative_depth():
    with pytest.raises(ValueError, match="depth"):
        _Echo(depth=-1)
