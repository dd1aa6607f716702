"""A model's compiled call as one flat TensorFlow function, the input of the converters.

Inputs are positional tensors named ``input_000``, ``input_001``, ... in model
input order; the result is a dict ``output_000``, ``output_001``, ... in model
output order (zero-padded, so the sorted order that converters flatten dicts in
is the model's order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from keras_batch_score.transforms.model.tensors import TensorInfo


def input_key(index: int) -> str:
    return f"input_{index:03d}"


def output_key(index: int) -> str:
    return f"output_{index:03d}"


def flat_function(
    inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], call: Callable[[Any], Any]
) -> tuple[Any, list[Any]]:
    """``(tf.function, input signature)`` calling ``call`` with the model's named inputs."""
    import tensorflow as tf

    names = [info.name for info in inputs]
    out_names = [info.name for info in outputs]
    signature = [
        tf.TensorSpec((None, *info.shape), info.dtype, name=input_key(i))
        for i, info in enumerate(inputs)
    ]

    def flat(*tensors: Any) -> dict[str, Any]:
        result = call(dict(zip(names, tensors, strict=True)))
        return {output_key(i): tf.identity(result[n]) for i, n in enumerate(out_names)}

    return tf.function(flat, input_signature=signature, autograph=False), signature


def keras_call(
    model: Any, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], structure: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Calls a Keras model directly (not through a nested ``tf.function``) with named inputs.

    Converters freeze the variables of one traced function; a nested compiled
    function's captures can escape them (tf2onnx then asks for them as inputs).
    """
    names = [info.name for info in inputs]
    out_names = [info.name for info in outputs]

    def call(tensors: dict[str, Any]) -> dict[str, Any]:
        if structure == "single":
            result = model(tensors[names[0]], training=False)
        elif structure == "dict":
            result = model({n: tensors[n] for n in names}, training=False)
        else:
            result = model([tensors[n] for n in names], training=False)
        if isinstance(result, dict):
            return dict(result)
        if isinstance(result, (list, tuple)):
            return dict(zip(out_names, result, strict=True))
        return {out_names[0]: result}

    return call


_SCOPE = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)+")


def offending_layer(error_text: str, layer_names: Iterable[str]) -> str | None:
    """The first Keras layer named in a converter's error (by its op's name scope).

    Ops are named ``<model>/<layer>/<op>``; TensorFlow may add ``_1`` to a
    scope, so a scope matches a layer by its exact name first, then without a
    trailing ``_<n>``.
    """
    layers = list(layer_names)
    exact = set(layers)
    for scope in _SCOPE.findall(error_text):
        parts = scope.split("/")
        for part in parts[1:-1] or parts[:1]:
            if part in exact:
                return part
            base = re.sub(r"_\d+$", "", part)
            if base in exact:
                return base
    return None
