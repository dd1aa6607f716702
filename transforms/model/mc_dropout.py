"""Monte Carlo dropout: the mean and std of T stochastic passes of a Keras model.

No Beam; Keras and TensorFlow are imported lazily.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.output_keys import std_key
from keras_batch_score.transforms.model.signature import name_outputs

_MC_MAX_ROWS_PER_CALL = 65536


def keras_model_of(model: LoadedModel) -> Any:
    """The Keras model behind a loaded ``.keras``/``.h5`` model, or None for a SavedModel."""
    import keras

    inner = model.keepalive
    return inner if isinstance(inner, keras.Model) else None


class MCDropout:
    """T stochastic passes (``training=True``) of a Keras model in compiled calls.

    The batch is tiled ``T`` times along the row axis (in chunks of at most
    65,536 rows per call), so one graph call scores many passes. Batch
    normalization layers are frozen (``trainable=False``), which in Keras 3
    keeps them in inference mode, so only dropout-like layers are stochastic.
    With a seed, every seed generator's state is reset before each batch from
    ``(seed, a checksum of the batch)``: results are reproducible and do not
    depend on the order in which batches reach a worker.
    """

    def __init__(self, model: LoadedModel, samples: int, seed: int | None) -> None:
        import keras
        import tensorflow as tf

        inner = keras_model_of(model)
        if inner is None:
            raise ModelError(
                f"model {model.model_id}: --mc-dropout-samples needs a .keras or .h5 model "
                "(a SavedModel signature cannot run in training mode)"
            )
        for layer in inner._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        self._samples = samples
        self._seed = seed
        self._inputs = list(model.inputs)
        self._output_names = [info.name for info in model.outputs]
        self._seed_vars = [v for v in inner.variables if v.path.endswith("seed_generator_state")]
        sig = {i.name: tf.TensorSpec((None, *i.shape), i.dtype) for i in self._inputs}
        order = [i.name for i in self._inputs]
        if model.input_structure == "single":
            fn = lambda d: inner(d[order[0]], training=True)  # noqa: E731
        elif model.input_structure == "dict":
            fn = lambda d: inner(d, training=True)  # noqa: E731
        else:
            fn = lambda d: inner([d[n] for n in order], training=True)  # noqa: E731
        self._graph = tf.function(fn, input_signature=[sig], autograph=False)
        # One call at a time: a call sets the seed variables that its passes read.
        self._lock = threading.Lock()

    def _reset_seeds(self, features: Mapping[str, np.ndarray], n: int) -> None:
        if self._seed is None:
            return
        checksum = n
        for name in sorted(features):
            checksum = zlib.crc32(np.ascontiguousarray(features[name][:4]).tobytes(), checksum)
        for i, var in enumerate(self._seed_vars):
            var.assign(np.array([self._seed + 7919 * i, checksum], dtype=var.dtype))

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per output: the mean over T passes and its std (``<output>__std``)."""
        with self._lock:
            return self._predict(features)

    def _predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(features.values())))
        self._reset_seeds(features, n)
        per_call = max(1, min(self._samples, _MC_MAX_ROWS_PER_CALL // max(n, 1)))
        samples: dict[str, list[np.ndarray]] = {name: [] for name in self._output_names}
        done = 0
        while done < self._samples:
            t = min(per_call, self._samples - done)
            tiled = {k: np.concatenate([np.asarray(v)] * t) for k, v in features.items()}
            raw = name_outputs(self._graph(tiled), self._output_names)
            for name in self._output_names:
                values = np.asarray(raw[name])
                samples[name].append(values.reshape((t, n, *values.shape[1:])))
            done += t
        out: dict[str, np.ndarray] = {}
        for name in self._output_names:
            stack = np.concatenate(samples[name]).astype(np.float64)
            if stack.ndim == 3 and stack.shape[2] == 1:
                stack = stack[:, :, 0]
            out[name] = stack.mean(axis=0).astype(np.float32)
            out[std_key(name)] = stack.std(axis=0).astype(np.float32)
        return out
