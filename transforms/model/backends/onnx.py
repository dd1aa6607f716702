"""The ``onnxruntime`` backend: the model's graph converted by tf2onnx, run by ONNX Runtime (CPU).

Keras' own ``model.export(format="onnx")`` is, on the TensorFlow backend,
``tf2onnx.convert.from_function`` over the model's call; this module calls it
on the same compiled function the ``keras`` backend runs (so ``.keras``, ``.h5``,
JSON + weights and SavedModel inputs convert alike, with the outputs in model
order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.model.backends.graph import flat_function, input_key
from keras_batch_score.transforms.model.tensors import TensorInfo

OPSET = 17
EXTENSION = "onnx"


def versions() -> list[str]:
    """Converter and runtime versions (part of the cache key)."""
    import onnxruntime
    import tf2onnx

    return [f"tf2onnx={tf2onnx.__version__}", f"onnxruntime={onnxruntime.__version__}", str(OPSET)]


def convert(
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    call: Callable[[Any], Any],
    path: str,
) -> None:
    """Writes the ONNX model of ``call`` to ``path``.

    Raises:
        Exception: the converter's error (unsupported ops are named in it).
    """
    import onnx
    import tf2onnx

    fn, signature = flat_function(inputs, outputs, call)
    # tf2onnx logs the ops it cannot convert (and may still write a model that
    # ONNX Runtime refuses): collect its errors to refuse the model here, by name.
    errors: list[str] = []
    handler = _Collect(errors)
    tf2onnx_log = logging.getLogger("tf2onnx")
    saved = tf2onnx_log.level, tf2onnx_log.propagate
    tf2onnx_log.addHandler(handler)
    tf2onnx_log.setLevel(logging.ERROR)
    tf2onnx_log.propagate = False
    try:
        proto, _ = tf2onnx.convert.from_function(fn, signature, opset=OPSET)
    except Exception as e:
        raise RuntimeError("\n".join([*errors, str(e)])) from None
    finally:
        tf2onnx_log.removeHandler(handler)
        tf2onnx_log.setLevel(saved[0])
        tf2onnx_log.propagate = saved[1]
    unsupported = [m for m in errors if "not supported" in m or "Failed to convert" in m]
    if unsupported:
        raise RuntimeError("\n".join(unsupported))
    _inline_captured_constants(proto, fn.get_concrete_function())
    onnx.save(proto, path)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.append(record.getMessage().splitlines()[0])


def _inline_captured_constants(proto: Any, concrete: Any) -> None:
    """Turns graph inputs that hold captured eager tensors into initializers.

    tf2onnx freezes variables but leaves other captured tensors (e.g. the mean
    and variance of an adapted ``Normalization`` layer) as graph inputs the
    caller would have to feed; they are constants of the model.
    """
    from onnx import numpy_helper

    values = {}
    for external, internal in concrete.graph.captures:
        if external.dtype.is_numeric and hasattr(external, "numpy"):
            values[internal.name] = external.numpy()
    graph = proto.graph
    initialized = {init.name for init in graph.initializer}
    for graph_input in list(graph.input):
        value = values.get(graph_input.name)
        if value is None or graph_input.name in initialized:
            continue
        graph.input.remove(graph_input)
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), graph_input.name))


def load_call(
    path: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """An ONNX Runtime (CPU) session of ``path`` behind the models' ``call`` contract."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed_names = {i.name.split(":")[0]: i.name for i in session.get_inputs()}
    feeds = [(info.name, feed_names[input_key(i)]) for i, info in enumerate(inputs)]
    fetched = [o.name for o in session.get_outputs()]
    if len(fetched) != len(outputs):
        raise RuntimeError(f"{path}: {len(fetched)} outputs, the model has {len(outputs)}")
    # Outputs come back in the flat function's sorted key order, i.e. model order.

    def call(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
        feed = {feed_name: _as_numpy(tensors[name]) for name, feed_name in feeds}
        values = session.run(fetched, feed)
        return {info.name: v for info, v in zip(outputs, values, strict=True)}

    return call


def _as_numpy(value: Any) -> np.ndarray:
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if array.dtype == object:  # TensorFlow strings are bytes; ONNX Runtime wants str
        return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(
            array
        )
    return array
