"""Turns a loaded model into one that runs on a converted backend (ONNX Runtime, LiteRT)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.model.backends import converted_cache
from keras_batch_score.transforms.model.backends.graph import keras_call, offending_layer
from keras_batch_score.transforms.model.loaded_model import LoadedModel

_LOG = logging.getLogger("keras_batch_score")


def converted_model(
    model: LoadedModel, backend: str, key_parts: Sequence[str], path: str
) -> LoadedModel:
    """``model`` with its call replaced by the ``backend`` runtime's.

    The converted file is cached by ``key_parts`` (the model's content hash and
    its loading options) plus the converter's version.

    Args:
        model: The model as loaded for the ``keras`` backend.
        backend: ``onnxruntime`` or ``litert``.
        key_parts: What identifies the model's bytes and loading options.
        path: The model's path, for messages.

    Raises:
        ModelError: when the converter refuses the model; names the layer (or op).
    """
    runtime = _runtime(backend)
    key = converted_cache.cache_key([*key_parts, backend, *runtime.versions()])
    target = converted_cache.converted_path(key, runtime.EXTENSION)
    keepalive = model.keepalive
    call = model.call
    if model.input_structure and not model.format.startswith("saved_model"):
        call = keras_call(keepalive, model.inputs, model.outputs, model.input_structure)

    def convert(dest: str) -> None:
        if backend == "litert":
            runtime.convert(model.inputs, model.outputs, call, keepalive, dest)
        else:
            runtime.convert(model.inputs, model.outputs, call, dest)

    try:
        file, fresh = converted_cache.get_or_convert(target, convert)
    except Exception as e:
        raise ModelError(_explain(path, backend, e, keepalive)) from None
    _LOG.info("--backend %s: %s %s", backend, "converted to" if fresh else "reusing", file)
    try:
        run = runtime.load_call(file, model.inputs, model.outputs)
    except Exception as e:  # converted, but the runtime refuses the result
        os.remove(file)
        raise ModelError(_explain(path, backend, e, keepalive)) from None
    return model.with_call(run, f"{model.format}+{backend}", converted_file=file)


def _runtime(backend: str) -> Any:
    if backend == "onnxruntime":
        from keras_batch_score.transforms.model.backends import onnx

        return onnx
    if backend == "litert":
        from keras_batch_score.transforms.model.backends import litert

        return litert
    raise ValueError(f"backend {backend!r} does not convert the model")


def layer_names(keepalive: Any) -> dict[str, str]:
    """``{layer name: class name}`` of a Keras model and its nested models; ``{}`` otherwise."""
    found: dict[str, str] = {}

    def walk(layers: Any) -> Iterator[Any]:
        for layer in layers or ():
            yield layer
            yield from walk(getattr(layer, "layers", None))

    for layer in walk(getattr(keepalive, "layers", None)):
        found.setdefault(layer.name, type(layer).__name__)
    return found


_UNSUPPORTED_OP = re.compile(
    r"(?:op \[[^\]:]+: ([A-Za-z0-9_.]+)\] is not supported|"
    r"Failed to convert node '[^']*/([A-Za-z0-9_.]+)'|"
    r"failed to legalize operation '([A-Za-z0-9_.]+)'|"
    r"'([A-Za-z0-9_.]+)' op (?:requires|is neither))"
)


def _explain(path: str, backend: str, e: Exception, keepalive: Any) -> str:
    text = str(e)
    layers = layer_names(keepalive)
    layer = offending_layer(text, layers)
    op = _UNSUPPORTED_OP.search(text)
    op_name = next((g for g in op.groups() if g), None) if op else None
    where = f"layer {layer!r} ({layers[layer]})" if layer else "the model"
    what = f" (op {op_name})" if op_name else ""
    return (
        f"model {path}: --backend {backend} cannot convert {where}{what}: "
        f"{_first_line(_reason(text))}; score it with --backend keras or xla"
    )


def _reason(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            reason = line.split("error:", 1)[1].strip()
            if reason.startswith("loc("):  # MLIR: loc(<call stack>): <message>
                reason = reason.rsplit("): ", 1)[-1]
            return reason
    text = re.sub(r" \(fct=[^\n]*", "", text)  # tf2onnx: the converter method's repr
    return text.strip() or "conversion failed"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "conversion failed"
    return line if len(line) <= 300 else line[:300] + "…"
