"""The ``litert`` backend: the model's graph converted by ``tf.lite.TFLiteConverter``, run by
the LiteRT interpreter (``ai-edge-litert``).

Keras' ``model.export(format="litert")`` writes the model through a
``keras.export.ExportArchive`` and converts that SavedModel with
``TFLiteConverter.from_saved_model``; this module does the same with the
compiled function the ``keras`` backend runs, so the outputs keep model order.
A SavedModel input is converted from its own directory and signature. Only TFLite builtin ops are allowed (the
``ai-edge-litert`` interpreter has no TensorFlow ops): a model that needs others
is refused at load.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.model.backends.graph import flat_function, input_key, output_key
from keras_batch_score.transforms.model.tensors import TensorInfo

EXTENSION = "tflite"
SIGNATURE = "serving_default"


def versions() -> list[str]:
    """Converter and runtime versions (part of the cache key)."""
    import ai_edge_litert
    import tensorflow as tf

    return [f"tensorflow={tf.__version__}", f"ai-edge-litert={ai_edge_litert.__version__}"]


def convert(
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    call: Callable[[Any], Any],
    keepalive: Any,
    path: str,
) -> None:
    """Writes the LiteRT (``.tflite``) model of ``call`` to ``path``.

    Args:
        keepalive: The object that owns the model's variables (saved with the function).

    Raises:
        Exception: the converter's error (unsupported ops are named in it).
    """
    import keras
    import tensorflow as tf

    fn, signature = flat_function(inputs, outputs, call)
    with tempfile.TemporaryDirectory(prefix="litert-export-") as saved:
        # Keras' own LiteRT path: an ExportArchive tracks the model's variables.
        archive = keras.export.ExportArchive()
        archive.track(keepalive)
        archive.add_endpoint(SIGNATURE, fn, input_signature=signature)
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)


def load_call(
    path: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """A LiteRT interpreter of ``path`` behind the models' ``call`` contract.

    One interpreter is not thread-safe: calls are serialized.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    lock = threading.Lock()

    def call(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        feed = {input_key(i): _as_numpy(tensors[info.name]) for i, info in enumerate(inputs)}
        with lock:
            result = runner(**feed)
            return {info.name: np.copy(result[output_key(i)]) for i, info in enumerate(outputs)}

    return call


def _as_numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
