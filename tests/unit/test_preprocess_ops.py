"""Each preprocessing op against the reference it must reproduce (numpy, Keras, tf.image)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from keras_batch_score.transforms.core.aligned import is_aligned
from keras_batch_score.transforms.preprocess import ops

RNG = np.random.default_rng(7)


def test_numeric_ops_match_numpy():
    x = RNG.normal(3.0, 2.0, size=(500, 1))
    np.testing.assert_allclose(ops.standardize(x, 3.1, 2.2), (x - 3.1) / 2.2)
    np.testing.assert_allclose(ops.min_max(x, -1.0, 9.0), (x - -1.0) / 10.0)
    pos = np.abs(x)
    np.testing.assert_allclose(ops.log1p(pos), np.log(1.0 + pos))
    np.testing.assert_allclose(ops.clip(x, 0.0, 4.0), np.minimum(np.maximum(x, 0.0), 4.0))
    y = x.copy()
    y[::7] = np.nan
    filled = ops.fill_missing(y, -5.0)
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[::7], -5.0)


def test_numeric_values_lengths_and_nulls():
    arr = pa.array([[1.0, 2.0], None, [3.0], [4.0, None]], pa.list_(pa.float64()))
    values, lengths = ops.numeric_values(arr, 2)
    np.testing.assert_array_equal(lengths, [2, -1, 1, 2])
    np.testing.assert_array_equal(values[0], [1.0, 2.0])
    assert np.isnan(values[1]).all() and np.isnan(values[2]).all()
    assert values[3, 0] == 4.0 and np.isnan(values[3, 1])


@pytest.mark.parametrize("num_oov", [0, 1, 3])
@pytest.mark.parametrize("output", ["int", "one_hot"])
def test_string_lookup_matches_keras(num_oov, output):
    import keras

    vocab = ["red", "green", "blue", "cyan"]
    values = ["red", "blue", "pink", "cyan", "green", "white", "black", "red"]
    if num_oov == 0:
        values = [v for v in values if v in vocab]
    layer = keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=num_oov, output_mode=output)
    expected = np.asarray(layer(np.array(values)))
    idx = ops.lookup_indices(pa.array(values), vocab, num_oov)
    got = idx if output == "int" else ops.one_hot(idx, len(vocab) + num_oov)
    np.testing.assert_array_equal(got, expected)


def test_string_lookup_on_binary_column():
    import keras

    vocab = ["a", "b"]
    layer = keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=2)
    values = ["a", "zz", "b", "q"]
    expected = np.asarray(layer(np.array(values)))
    got = ops.lookup_indices(pa.array([v.encode() for v in values], pa.binary()), vocab, 2)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("num_oov", [1, 4])
def test_integer_lookup_matches_keras(num_oov):
    import keras

    vocab = [10, 20, 30, 7]
    values = np.array([10, 7, 99, 30, 5, 20, 1234, 8], dtype=np.int64)
    layer = keras.layers.IntegerLookup(vocabulary=vocab, num_oov_indices=num_oov)
    expected = np.asarray(layer(values))
    np.testing.assert_array_equal(ops.lookup_indices(pa.array(values), vocab, num_oov), expected)


def test_text_matches_text_vectorization():
    import keras

    vocab = ["the", "cat", "sat", "on", "mat", "dog's", "a"]
    texts = [
        "The cat sat on the mat.",
        "A DOG barked!!  at   the cat",
        "",
        "mat, mat; mat: (mat) [mat] mat mat mat mat mat mat mat",
        "dog's dinner -- unknown_word",
        "  leading and trailing  ",
    ]
    layer = keras.layers.TextVectorization(vocabulary=vocab, output_sequence_length=8)
    expected = np.asarray(layer(np.array(texts)))
    got = ops.text_to_ids(pa.array(texts), vocab, 8)
    np.testing.assert_array_equal(got, expected)
    # A vocabulary exported with get_vocabulary() ('', '[UNK]', ...) is accepted as is.
    exported = layer.get_vocabulary()
    np.testing.assert_array_equal(
        ops.text_to_ids(pa.array(texts), ops.text_vocabulary(exported), 8), expected
    )


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("method", ["bilinear", "nearest", "bicubic", "area"])
def test_image_decode_resize_matches_tf(method):
    import tensorflow as tf

    images = [RNG.integers(0, 256, size=(20, 24, 3), dtype=np.uint8) for _ in range(5)]
    data = np.array([_png(im) for im in images], dtype=object)
    decoder = ops.ImageDecoder((8, 10), method)
    got, failures = decoder(data)
    assert failures == {}
    for i, raw in enumerate(data):
        ref = tf.image.resize(tf.io.decode_png(raw, channels=3), (8, 10), method=method)
        np.testing.assert_allclose(got[i], tf.cast(ref, tf.float32).numpy(), rtol=1e-6, atol=1e-4)


def test_image_mixed_sizes_jpeg_and_corrupt_bytes():
    import tensorflow as tf

    a = RNG.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    b = RNG.integers(0, 256, size=(30, 12, 3), dtype=np.uint8)
    data = np.array([_png(a), b"not an image at all", _jpeg(b), _png(a)[:40]], dtype=object)
    got, failures = ops.ImageDecoder((8, 8), "bilinear")(data)
    assert sorted(failures) == [1, 3]
    assert all(msg for msg in failures.values())
    ref_a = tf.image.resize(tf.io.decode_png(_png(a), channels=3), (8, 8)).numpy()
    ref_b = tf.image.resize(tf.io.decode_jpeg(_jpeg(b), channels=3), (8, 8)).numpy()
    np.testing.assert_allclose(got[0], ref_a, atol=1e-4)
    np.testing.assert_allclose(got[2], ref_b, atol=1e-4)


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_imagenet_scaling_matches_keras(mode):
    from keras.applications import imagenet_utils

    x = RNG.uniform(0, 255, size=(4, 5, 5, 3)).astype(np.float32)
    expected = imagenet_utils.preprocess_input(x.copy(), mode=mode, data_format="channels_last")
    np.testing.assert_allclose(
        ops.scale_images(x, "imagenet", mode), expected, rtol=1e-5, atol=1e-4
    )


def test_simple_scales():
    x = RNG.uniform(0, 255, size=(3, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(ops.scale_images(x, "0-1"), x / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ops.scale_images(x, "-1-1"), x / 127.5 - 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ops.scale_images(x, "0-255"), x)
    np.testing.assert_array_equal(ops.flip_channels(x)[..., 0], x[..., 2])


@pytest.mark.parametrize(
    ("scale", "formula"),
    [
        ("0-1", lambda x: x / np.float32(255.0)),
        ("-1-1", lambda x: x / np.float32(127.5) - np.float32(1.0)),
    ],
)
def test_scaled_images_are_aligned_and_bit_identical_to_the_float32_formula(scale, formula):
    x = RNG.uniform(0, 255, size=(5, 8, 8, 3)).astype(np.float32)
    got = ops.scale_images(x, scale)
    assert got.dtype == np.float32 and is_aligned(got)  # the model takes it without a copy
    np.testing.assert_array_equal(got, formula(x))
