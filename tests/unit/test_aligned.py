"""Cache-line aligned model inputs, and handing them to TensorFlow without a copy."""

from __future__ import annotations

import numpy as np
import pytest

from keras_batch_score.transforms.core.aligned import (
    ALIGNMENT,
    aligned_empty,
    as_aligned,
    is_aligned,
)
from keras_batch_score.transforms.model.loaded_model import as_tensor
from tests import util

tf = util.import_tensorflow()


@pytest.mark.parametrize("shape", [(0, 32), (1,), (7, 3), (16384, 32), (5, 4, 4, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint16, np.float16])
def test_aligned_empty_starts_on_a_cache_line(shape, dtype):
    for _ in range(5):  # several allocations: numpy's own start moves between them
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous
        assert a.ctypes.data % ALIGNMENT == 0 and is_aligned(a)
        a[...] = 1  # writable, and exactly its own size
        assert a.nbytes == int(np.prod(shape)) * np.dtype(dtype).itemsize


def test_is_aligned_rejects_offset_and_strided_views():
    a = aligned_empty((64, 8), np.float32)
    assert is_aligned(a[16:])  # 16 rows of 32 bytes: still on a boundary
    assert not is_aligned(a[1:])  # 32 bytes in
    assert not is_aligned(a[:, :4])  # not C-contiguous


def _shares(tensor, array: np.ndarray) -> bool:
    """Whether writing to ``array`` shows in ``tensor`` (one buffer)."""
    before = float(np.asarray(tensor).reshape(-1)[0])
    array.reshape(-1)[0] = before + 1
    return float(np.asarray(tensor).reshape(-1)[0]) == before + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_as_tensor_uses_an_aligned_array_in_place(dtype):
    a = aligned_empty((128, 4), dtype)
    a[...] = np.arange(512).reshape(128, 4)
    t = as_tensor(tf, a)
    assert t.dtype.as_numpy_dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t.numpy(), a)
    assert _shares(t, a)


def test_as_tensor_copies_what_tensorflow_cannot_share():
    base = aligned_empty((129, 4), np.float32)
    base[...] = np.arange(516).reshape(129, 4)
    misaligned = base[1:]  # 16 bytes in: DLPack would abort the process
    read_only = aligned_empty((8, 4), np.float32)
    read_only[...] = 2.0
    read_only.flags.writeable = False
    strings = np.array([b"a", b"bc"], dtype=object)
    t = as_tensor(tf, misaligned)
    np.testing.assert_array_equal(t.numpy(), misaligned)
    assert not _shares(t, misaligned)
    np.testing.assert_array_equal(as_tensor(tf, read_only).numpy(), read_only)
    assert as_tensor(tf, strings).dtype == tf.string


def test_tensor_keeps_its_buffer_alive_after_the_array_is_gone():
    a = aligned_empty((1000, 8), np.float32)
    a[...] = 3.5
    t = as_tensor(tf, a)
    del a
    import gc

    gc.collect()
    _ = [np.ones((1000, 8), np.float32) for _ in range(50)]  # reuse freed memory, if any
    assert float(tf.reduce_sum(t)) == 3.5 * 8000


def test_as_aligned_keeps_an_aligned_array_and_copies_anything_else():
    a = aligned_empty((64, 8), np.float32)
    a[...] = np.arange(512).reshape(64, 8)
    assert as_aligned(a, np.float32) is a
    for other, dtype in ((a[1:], np.float32), (a, np.float64), (np.arange(10.0)[1:], np.float32)):
        got = as_aligned(other, dtype)
        assert got is not other and is_aligned(got) and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, other.astype(dtype))


def test_a_shared_input_is_left_as_it_was_by_elementwise_ops():
    """TensorFlow may reuse an input buffer for an op's output; never one it does not own."""
    a = aligned_empty((4096, 8), np.float32)
    a[...] = np.linspace(-1.0, 1.0, a.size, dtype=np.float32).reshape(a.shape)
    before = a.copy()

    @tf.function
    def call(x):
        return tf.nn.relu(x) * 2.0 + 1.0

    assert _shares(as_tensor(tf, a), a)
    a[...] = before  # _shares wrote one value
    out = call(as_tensor(tf, a)).numpy()  # no other reference to the tensor: the most TF may reuse
    np.testing.assert_array_equal(a, before)
    np.testing.assert_array_equal(out, np.maximum(before, 0) * 2 + 1)


def test_loaded_model_predict_hands_an_aligned_input_to_the_model_in_place():
    from keras_batch_score.transforms.model.loaded_model import LoadedModel
    from keras_batch_score.transforms.model.tensors import TensorInfo

    seen = {}

    def call(tensors):
        seen["x"] = tensors["x"]
        return {"y": tf.reduce_sum(tensors["x"], axis=1, keepdims=True)}

    model = LoadedModel(
        inputs=[TensorInfo("x", (4,), "float32")],
        outputs=[TensorInfo("y", (1,), "float32")],
        call=call,
        model_id="m",
        format="test",
        weights=lambda: [],
    )
    aligned = aligned_empty((256, 4), np.float32)
    aligned[...] = 1.0
    np.testing.assert_array_equal(model.predict({"x": aligned})["y"], np.full(256, 4.0))
    assert _shares(seen["x"], aligned)  # no copy on the way in
    plain = aligned_empty((257, 4), np.float32)[1:]  # 16 bytes in: copied, and still right
    plain[...] = 1.0
    np.testing.assert_array_equal(model.predict({"x": plain})["y"], np.full(256, 4.0))
    assert not _shares(seen["x"], plain)
