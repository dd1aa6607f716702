"""Pure, vectorized preprocessing ops on whole batches (numpy, pyarrow.compute, TensorFlow).

Each function takes and returns many rows at once and is testable without
Beam. The conventions follow the Keras layers a model was trained with:

* categorical lookup = ``keras.layers.StringLookup`` / ``IntegerLookup``
  (no mask token): OOV indices first (``0 .. num_oov-1``, hashed like Keras
  when ``num_oov > 1``), then the vocabulary;
* text = ``keras.layers.TextVectorization`` defaults: lowercase, strip
  punctuation, split on whitespace, ``0`` = padding, ``1`` = ``[UNK]``,
  vocabulary from ``2``, padded / truncated to ``max_len``;
* images = ``tf.io.decode_image`` + ``tf.image.resize`` +
  ``keras.applications.imagenet_utils.preprocess_input`` for ImageNet scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.aligned import aligned_empty
from keras_batch_score.transforms.core.arrow import one_array

# The punctuation TextVectorization's default standardization removes.
TEXT_STRIP_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area")
SCALES = ("0-1", "-1-1", "0-255", "imagenet")
IMAGENET_MODES = ("caffe", "torch")
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# --------------------------------------------------------------------------- numeric


def standardize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x - mean) / std``."""
    return (x - mean) / std


def min_max(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(x - lo) / (hi - lo)``: ``lo`` maps to 0 and ``hi`` to 1."""
    return (x - lo) / (hi - lo)


def log1p(x: np.ndarray) -> np.ndarray:
    """``log(1 + x)``."""
    return np.log1p(x)


def clip(x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """Values limited to ``[lo, hi]`` (either bound may be ``None``)."""
    return np.clip(x, lo, hi)


def fill_missing(x: np.ndarray, value: float) -> np.ndarray:
    """NaN (the null marker of numeric columns here) replaced with ``value``."""
    return np.where(np.isnan(x), value, x)


def numeric_values(arr: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A numeric or list column as ``float64`` of shape ``(n, width)``, plus per-row lengths.

    Nulls become NaN. ``lengths`` is ``-1`` for a null row, else the number of
    values (always 1 for a scalar column); rows whose length is not ``width``
    are filled with NaN.
    """
    arr = one_array(arr)
    n = len(arr)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        lengths = np.where(np.asarray(arr.is_null()), -1, 1) if arr.null_count else np.ones(n, int)
        return values.reshape(n, 1) if width == 1 else np.full((n, width), np.nan), lengths
    lengths = (
        pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    )
    out = np.full((n, width), np.nan)
    ok = lengths == width
    if ok.any():
        good = arr if ok.all() else arr.filter(pa.array(ok))
        flat = pc.list_flatten(good).cast(pa.float64()).fill_null(np.nan)
        out[ok] = flat.to_numpy(zero_copy_only=False).reshape(-1, width)
    return out, lengths


# --------------------------------------------------------------------------- categorical


def _as_value_set(vocab: Sequence[Any], like: pa.DataType) -> pa.Array:
    if pa.types.is_integer(like):
        return pa.array(list(vocab), type=pa.int64())
    return pa.array([v if isinstance(v, bytes) else str(v).encode() for v in vocab], pa.binary())


def _normalize_keys(arr: pa.Array) -> pa.Array:
    if pa.types.is_integer(arr.type):
        return arr.cast(pa.int64())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.binary())
    if pa.types.is_large_binary(arr.type):
        return arr.cast(pa.binary())
    return arr


def lookup_indices(values: pa.Array, vocab: Sequence[Any], num_oov: int = 1) -> np.ndarray:
    """Vocabulary indices of ``values``, as Keras ``StringLookup`` / ``IntegerLookup`` compute them.

    OOV values get ``-1`` when ``num_oov == 0`` (the caller rejects them);
    with one OOV index they get 0; with more they are hashed into
    ``0 .. num_oov-1`` (FarmHash64 for strings, ``value % num_oov`` for
    integers, as Keras does). Null values get ``-1``.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    keys = _normalize_keys(values)
    found = pc.index_in(keys, value_set=_as_value_set(vocab, keys.type))
    idx = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    oov = idx < 0
    idx[~oov] += num_oov
    if num_oov == 0 or not oov.any():
        return _null_to_minus_one(idx, values)
    if num_oov == 1:
        idx[oov] = 0
    elif pa.types.is_integer(keys.type):
        idx[oov] = np.mod(keys.to_numpy(zero_copy_only=False)[oov].astype(np.int64), num_oov)
    else:
        import tensorflow as tf

        missing = keys.filter(pa.array(oov)).fill_null(b"").to_numpy(zero_copy_only=False)
        idx[oov] = tf.strings.to_hash_bucket_fast(tf.constant(missing, tf.string), num_oov).numpy()
    return _null_to_minus_one(idx, values)


def _null_to_minus_one(idx: np.ndarray, values: pa.Array) -> np.ndarray:
    if values.null_count:
        idx[np.asarray(values.is_null())] = -1
    return idx


def one_hot(indices: np.ndarray, depth: int) -> np.ndarray:
    """``float32`` one-hot rows; an index of ``-1`` gives an all-zero row."""
    out = np.zeros((len(indices), depth), dtype=np.float32)
    ok = (indices >= 0) & (indices < depth)
    out[np.flatnonzero(ok), indices[ok]] = 1.0
    return out


# --------------------------------------------------------------------------- text


def text_vocabulary(vocab: Sequence[str]) -> list[str]:
    """A vocabulary without the ``''`` / ``[UNK]`` entries ``TextVectorization.get_vocabulary()`` starts with."""
    vocab = list(vocab)
    if vocab[:2] == ["", "[UNK]"]:
        return vocab[2:]
    return vocab


def tokenize(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """TextVectorization's default standardization and whitespace split, on the whole column.

    Returns:
        ``(tokens, row_splits)``: flat token bytes and the ``n + 1`` row offsets.
        Null texts have no tokens.
    """
    import tensorflow as tf

    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    raw = _normalize_keys(texts).fill_null(b"").to_numpy(zero_copy_only=False)
    t = tf.constant(raw, dtype=tf.string) if len(raw) else tf.zeros([0], tf.string)
    t = tf.strings.regex_replace(tf.strings.lower(t), TEXT_STRIP_REGEX, "")
    tokens = tf.strings.split(t)
    return tokens.flat_values.numpy(), tokens.row_splits.numpy()


def text_to_ids(texts: pa.Array, vocab: Sequence[str], max_len: int) -> np.ndarray:
    """Token ids ``(n, max_len)`` as ``TextVectorization(vocabulary=vocab, output_sequence_length=max_len)``."""
    tokens, splits = tokenize(texts)
    n = len(splits) - 1
    out = np.zeros((n, max_len), dtype=np.int64)
    if tokens.size == 0:
        return out
    found = pc.index_in(pa.array(tokens, pa.binary()), value_set=_as_value_set(vocab, pa.binary()))
    # vocabulary from 2; not found (-1) becomes 1 = [UNK]
    ids = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 2
    lengths = np.diff(splits)
    row = np.repeat(np.arange(n), lengths)
    pos = np.arange(tokens.size) - splits[:-1][row]
    keep = pos < max_len
    out[row[keep], pos[keep]] = ids[keep]
    return out


def token_counts(texts: pa.Array) -> pa.StructArray:
    """Distinct tokens of a text column and their counts (``pc.value_counts``)."""
    tokens, _ = tokenize(texts)
    return pc.value_counts(pa.array(tokens, pa.binary()))


# --------------------------------------------------------------------------- images


def _channels(mode: str) -> int:
    return 1 if mode == "grayscale" else 3


def decode_one(data: bytes, channels: str = "RGB") -> np.ndarray:
    """One PNG/JPEG/GIF/BMP image as ``uint8 (h, w, c)``; raises with the decoder's message."""
    import tensorflow as tf

    return tf.io.decode_image(data, channels=_channels(channels), expand_animations=False).numpy()


class ImageDecoder:
    """Decodes and resizes a batch of encoded images to ``float32 (n, h, w, c)``.

    The fast path is one compiled graph: ``tf.map_fn`` decodes every image
    (images of the same size) and ONE ``tf.image.resize`` resizes the stacked
    batch. When that fails (a corrupt image, or images of different sizes),
    the images are decoded one by one to find the failing rows and each is
    resized on its own.
    """

    def __init__(
        self, size: tuple[int, int], method: str = "bilinear", channels: str = "RGB"
    ) -> None:
        import tensorflow as tf

        if method not in RESIZE_METHODS:
            raise ValueError(f"resize method {method!r} is not one of {RESIZE_METHODS}")
        self.size = (int(size[0]), int(size[1]))
        self.method = method
        self.channels = channels
        c = _channels(channels)

        def decode(data: Any) -> Any:
            return tf.io.decode_image(data, channels=c, expand_animations=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def fast(batch: Any) -> Any:
            images = tf.map_fn(
                decode,
                batch,
                fn_output_signature=tf.TensorSpec([None, None, c], tf.uint8),
                parallel_iterations=32,
            )
            return tf.cast(tf.image.resize(images, self.size, method=method), tf.float32)

        self._fast = fast

    def __call__(self, data: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Decoded, resized images and the failures ``{row: decoder message}`` (their rows are zero)."""
        import tensorflow as tf

        n = len(data)
        h, w = self.size
        c = _channels(self.channels)
        if n == 0:
            return np.zeros((0, h, w, c), np.float32), {}
        try:
            return self._fast(tf.constant(data, dtype=tf.string)).numpy(), {}
        except (tf.errors.InvalidArgumentError, tf.errors.OpError, ValueError):
            pass
        out = np.zeros((n, h, w, c), np.float32)
        failures: dict[int, str] = {}
        for i, raw in enumerate(data):
            try:
                image = decode_one(raw, self.channels)
            except Exception as e:
                failures[i] = _decoder_message(e)
                continue
            out[i] = tf.cast(tf.image.resize(image, self.size, method=self.method), tf.float32)
        return out, failures


def _decoder_message(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text.split(" [Op:")[0]


def scale_images(x: np.ndarray, scale: str, mode: str = "caffe") -> np.ndarray:
    """Pixel values (0-255) rescaled: ``0-1``, ``-1-1``, ``0-255`` or ``imagenet`` (``caffe``/``torch``).

    ``imagenet`` matches ``keras.applications.imagenet_utils.preprocess_input``
    with the same mode; ``caffe`` flips RGB to BGR, as Keras does.
    """
    x = np.asarray(x, dtype=np.float32)
    if scale == "0-1":  # into an aligned array: the model takes it without a copy
        return np.divide(x, np.float32(255.0), out=aligned_empty(x.shape, np.float32))
    if scale == "-1-1":
        out = np.divide(x, np.float32(127.5), out=aligned_empty(x.shape, np.float32))
        return np.subtract(out, np.float32(1.0), out=out)
    if scale == "0-255":
        return x
    if scale == "imagenet":
        if mode == "caffe":
            return x[..., ::-1] - _CAFFE_MEAN_BGR
        if mode == "torch":
            return (x / np.float32(255.0) - _TORCH_MEAN) / _TORCH_STD
        raise ValueError(f"imagenet mode {mode!r} is not one of {IMAGENET_MODES}")
    raise ValueError(f"scale {scale!r} is not one of {SCALES}")


def flip_channels(x: np.ndarray) -> np.ndarray:
    """RGB <-> BGR on the last axis."""
    return x[..., ::-1]
