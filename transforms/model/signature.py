"""A Keras model's inputs and outputs: names, per-row shapes, dtypes and how it takes them.

Also :func:`name_outputs`, which turns what a model call returns (a dict, a
list or one tensor) into ``{output name: tensor}``. No Beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.core.errors import ModelError, first_line
from keras_batch_score.transforms.model.tensors import TensorInfo


def keras_inputs(model: Any, path: str) -> tuple[list[TensorInfo], str]:
    """A Keras model's inputs and how it takes them: ``single``, ``list`` or ``dict``.

    Functional and Sequential models have symbolic ``model.inputs`` (``model.input``
    raises on a Sequential model). A subclassed model has none; its build config
    records the input shape(s) it was built with, and its inputs take its compute dtype.

    Raises:
        ModelError: for a model that was never built (called) before it was saved.
    """
    tensors = list(getattr(model, "inputs", None) or [])
    if tensors:
        infos = [
            TensorInfo(_input_name(t, i), tuple(t.shape[1:]), str(t.dtype))
            for i, t in enumerate(tensors)
        ]
        if _input_is_dict(model):
            return infos, "dict"
        return infos, "single" if len(infos) == 1 else "list"
    config = model.get_build_config() if hasattr(model, "get_build_config") else None
    shape = (config or {}).get("input_shape")
    if shape is None:
        raise ModelError(
            f"model {path} has no defined inputs: a subclassed model must be built (called on a "
            "batch, or model.build(shape)) before it is saved; or save a functional or Sequential model"
        )
    dtype = str(getattr(model, "input_dtype", None) or "float32")
    if isinstance(shape, dict):
        infos = [TensorInfo(k, tuple(v[1:]), dtype) for k, v in shape.items()]
        return infos, "dict"
    if _is_shape(shape):
        return [TensorInfo("input_0", tuple(shape[1:]), dtype)], "single"
    infos = [TensorInfo(f"input_{i}", tuple(v[1:]), dtype) for i, v in enumerate(shape)]
    return infos, "list"


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def _input_is_dict(model: Any) -> bool:
    try:
        return isinstance(model.input, dict)
    except (AttributeError, ValueError):  # Sequential: "has never been called"
        return False


def _output_structure(model: Any) -> Any:
    try:
        return model.output
    except (AttributeError, ValueError):  # Sequential / subclassed
        return None


def keras_outputs(
    model: Any, inputs: Sequence[TensorInfo], structure: str, path: str
) -> tuple[list[str], list[TensorInfo]]:
    """Output names (in the order the model returns them) and their TensorInfos.

    Symbolic ``model.outputs`` when the model has them, else the model's
    ``compute_output_spec`` on its inputs.
    """
    import keras

    symbolic = _output_structure(model)
    if isinstance(symbolic, dict):  # a dict of outputs: its keys name them, not the layers
        return list(symbolic), [
            TensorInfo(str(k), tuple(t.shape[1:]), str(t.dtype)) for k, t in symbolic.items()
        ]
    tensors = list(getattr(model, "outputs", None) or [])
    if tensors:
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(tensors):
            names = [f"output_{i}" for i in range(len(tensors))]
        infos = [
            TensorInfo(n, tuple(t.shape[1:]), str(t.dtype))
            for n, t in zip(names, tensors, strict=True)
        ]
        return names, infos
    specs = [keras.KerasTensor((None, *info.shape), dtype=info.dtype) for info in inputs]
    if structure == "single":
        args: Any = specs[0]
    elif structure == "dict":
        args = {info.name: s for info, s in zip(inputs, specs, strict=True)}
    else:
        args = specs
    try:
        spec = model.compute_output_spec(args)
    except Exception as e:
        raise ModelError(
            f"model {path}: cannot infer its outputs from its inputs {[i.shape for i in inputs]}: "
            f"{first_line(e)}"
        ) from None
    if isinstance(spec, dict):
        names, tensors = list(spec), list(spec.values())
    elif isinstance(spec, (list, tuple)):
        names, tensors = [f"output_{i}" for i in range(len(spec))], list(spec)
    else:
        names, tensors = ["output_0"], [spec]
    return names, [
        TensorInfo(n, tuple(t.shape[1:]), str(t.dtype)) for n, t in zip(names, tensors, strict=True)
    ]


def _input_name(tensor: Any, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]


def name_outputs(result: Any, names: Sequence[str]) -> dict[str, Any]:
    """The model's outputs as ``{output name: tensor}`` (a dict, list/tuple or single tensor)."""
    if isinstance(result, dict):
        named = dict(result)
    elif isinstance(result, (list, tuple)):
        named = dict(zip(names, result, strict=True))
    else:
        named = {names[0]: result}
    # bfloat16 / float16 outputs (``--precision``) leave the model as float32.
    return {
        k: (v.numpy().astype(np.float32) if v.dtype.name in ("bfloat16", "float16") else v)
        for k, v in named.items()
    }
