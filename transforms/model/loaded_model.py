"""A loaded model ready to score: its inputs, outputs, id and one compiled call.

:func:`keras_batch_score.transforms.model.load.load` builds :class:`LoadedModel` objects;
the converted backends (:mod:`keras_batch_score.transforms.model.backends`) swap in
another call with :meth:`LoadedModel.with_call`. TensorFlow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.core.aligned import is_aligned
from keras_batch_score.transforms.model.tensors import TensorInfo

_SHARED_KINDS = frozenset("fiu")  # numpy dtype kinds DLPack hands to TensorFlow as they are


def as_tensor(tf: Any, array: np.ndarray) -> Any:
    """A TensorFlow tensor of ``array``: its own memory when aligned, else a copy.

    ``tf.convert_to_tensor`` always copies; an aligned, C-ordered numeric array
    (as :func:`keras_batch_score.transforms.features.validate.interleave` builds)
    goes through DLPack instead and the tensor uses the array's buffer, which
    it keeps alive. TensorFlow aborts the process on a misaligned DLPack
    buffer, so anything else is copied.
    """
    if isinstance(array, np.ndarray) and array.dtype.kind in _SHARED_KINDS and is_aligned(array):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError):  # read-only, or a dtype DLPack lacks
            pass
    return tf.convert_to_tensor(array)


class LoadedModel:
    """A model ready to score: input/output metadata and a compiled graph call.

    Attributes:
        inputs: Model inputs in model order.
        outputs: Model outputs in model order.
        model_id: ``<file name>@<sha256 prefix>`` of the model's bytes.
        format: ``keras``, ``h5``, ``json+weights`` or ``saved_model[<signature>]``.
        input_structure: How the underlying model takes its inputs: ``single`` (one
            tensor), ``list`` (in ``inputs`` order) or ``dict`` (by input name). Use it
            instead of Keras' ``model.input``, which raises on Sequential models.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        call: Callable[[Any], Any],
        model_id: str,
        format: str,
        weights: Callable[[], Sequence[Any]],
        keepalive: Any = None,
        input_structure: str | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.input_structure = input_structure
        self.outputs = list(outputs)
        self.model_id = model_id
        self.format = format
        self._call = call
        self._weights = weights
        self._keepalive = keepalive  # a SavedModel's trackable root must outlive its functions
        self.converted_file: str | None = None  # the ONNX / LiteRT file a converted backend runs

    @property
    def call(self) -> Callable[[Any], Any]:
        """The compiled call: a dict of named input tensors to a dict of named outputs."""
        return self._call

    @property
    def keepalive(self) -> Any:
        """The Keras model or SavedModel root behind the call (owns the variables)."""
        return self._keepalive

    def with_call(
        self, call: Callable[[Any], Any], format: str, converted_file: str | None = None
    ) -> LoadedModel:
        """The same model (inputs, outputs, weights) run by another ``call``."""
        other = LoadedModel(
            inputs=self.inputs,
            outputs=self.outputs,
            call=call,
            model_id=self.model_id,
            format=format,
            weights=self._weights,
            keepalive=self._keepalive,
            input_structure=self.input_structure,
        )
        other.converted_file = converted_file
        return other

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the compiled model on one batch.

        Args:
            features: One array per model input name, all with the same number of rows.

        Returns:
            One array per model output name, ``(n,)`` for a width-1 output, else ``(n, ...)``.
        """
        import tensorflow as tf

        tensors = {name: as_tensor(tf, features[info.name]) for name, info in self._by_name.items()}
        raw = self._call(tensors)
        out: dict[str, np.ndarray] = {}
        for info in self.outputs:
            values = np.asarray(raw[info.name])
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            out[info.name] = values
        return out

    def call_tensors(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """The compiled model call on a dict of tensors, outputs as tensors keyed by name.

        Unlike :meth:`predict` it converts nothing to numpy, so it can run inside a
        ``tf.function`` and under a ``tf.GradientTape`` (``keras_batch_score.transforms.postprocess.explain``).
        """
        return dict(self._call(dict(tensors)))

    @property
    def _by_name(self) -> dict[str, TensorInfo]:
        return {info.name: info for info in self.inputs}

    def weights(self) -> Sequence[Any]:
        return self._weights()
