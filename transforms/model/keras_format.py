"""Loading ``.keras``, ``.h5`` and JSON + weights models and compiling their call.

The Keras model is wrapped in one ``tf.function`` per input structure
(``single``, ``list`` or ``dict``), optionally XLA-compiled or run under a
mixed-precision policy. Load errors are translated into messages that say
what to fix. No Beam.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Sequence
from typing import Any

from keras_batch_score.transforms.core.errors import ModelError, first_line
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.precision import refuse_xla_strings, with_dtype_policy
from keras_batch_score.transforms.model.signature import keras_inputs, keras_outputs, name_outputs
from keras_batch_score.transforms.model.spec import ModelSpec


def resolve_custom_objects(specs: Sequence[str]) -> dict[str, Any]:
    """Imports ``module:attr`` references.

    Each object is registered under its attribute name and, when it has one,
    its Keras registered name (``package>Name``).
    """
    import keras

    objects: dict[str, Any] = {}
    for spec in specs:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ModelError(
                f"--custom-object {spec!r}: expected module:attr, e.g. my_pkg.layers:MyLayer"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ModelError(
                f"--custom-object {spec!r}: cannot import module {module_name!r}: {e}"
            ) from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise ModelError(
                f"--custom-object {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
        objects[attr] = obj
        registered = keras.saving.get_registered_name(obj)
        if registered:
            objects[registered] = obj
    return objects


_MISSING_CLASS = re.compile(r"Could not (?:locate|deserialize) (?:class|function) '([^']+)'")


def load_keras(files: Sequence[str], fmt: str, spec: ModelSpec, model_id: str) -> LoadedModel:
    """A ``.keras``/``.h5``/JSON + weights model with its call compiled as a ``tf.function``.

    Args:
        files: The local model file, or the architecture JSON and its weights file.
        fmt: ``keras``, ``h5`` or ``json+weights`` (:func:`~keras_batch_score.transforms.model.files.detect_format`).
        spec: What to load and how (precision, backend, custom objects).
        model_id: The ``model`` column's value.

    Raises:
        ModelError: saying what to fix (custom class missing, unsafe layers, ...).
    """
    import tensorflow as tf

    model = _read_keras_model(files, fmt, spec)
    inputs, structure = keras_inputs(model, spec.path)
    output_names, outputs = keras_outputs(model, inputs, structure, spec.path)

    if spec.precision != "float32":
        model = with_dtype_policy(model, f"mixed_{spec.precision}", spec.path)
        outputs = [dataclasses.replace(info, dtype="float32") for info in outputs]
        fmt = f"{fmt}+{spec.precision}"

    jit = True if spec.backend == "xla" else None  # None: TensorFlow's default
    if jit:
        refuse_xla_strings(inputs, spec.path)
    order = [info.name for info in inputs]
    sig_dict = {info.name: tf.TensorSpec((None, *info.shape), info.dtype) for info in inputs}
    if structure == "single":
        graph = tf.function(
            lambda x: model(x, training=False),
            input_signature=[sig_dict[order[0]]],
            autograph=False,
            jit_compile=jit,
        )

        def call(tensors: dict[str, Any]) -> dict[str, Any]:
            return name_outputs(graph(tensors[order[0]]), output_names)

    elif structure == "dict":
        graph = tf.function(
            lambda d: model(d, training=False),
            input_signature=[sig_dict],
            autograph=False,
            jit_compile=jit,
        )

        def call(tensors: dict[str, Any]) -> dict[str, Any]:
            return name_outputs(graph(tensors), output_names)

    else:
        graph = tf.function(
            lambda *xs: model(list(xs), training=False),
            input_signature=[sig_dict[n] for n in order],
            autograph=False,
            jit_compile=jit,
        )

        def call(tensors: dict[str, Any]) -> dict[str, Any]:
            return name_outputs(graph(*[tensors[n] for n in order]), output_names)

    if jit:
        fmt = f"{fmt}+xla"
    return LoadedModel(
        inputs=inputs,
        outputs=outputs,
        call=call,
        model_id=model_id,
        format=fmt,
        weights=lambda: [w.numpy() for w in model.weights],
        keepalive=model,
        input_structure=structure,
    )


def _read_keras_model(files: Sequence[str], fmt: str, spec: ModelSpec) -> Any:
    """A ``.keras``/``.h5`` file, or an architecture JSON plus its ``.weights.h5``, as a Keras model."""
    import json

    import keras

    custom = resolve_custom_objects(spec.custom_objects)
    try:
        if fmt == "json+weights":
            json_path, weights_path = files
            with open(json_path, encoding="utf-8") as f:
                config = json.load(f)
            with keras.saving.custom_object_scope(custom):
                model = keras.saving.deserialize_keras_object(
                    config, custom_objects=custom, safe_mode=spec.safe_mode
                )
            if not isinstance(model, keras.Model):
                raise ModelError(
                    f"model {spec.path}: the .json holds a {type(model).__name__}, not a Keras model "
                    "(expected the output of model.to_json())"
                )
            model.load_weights(weights_path)
            return model
        kwargs: dict[str, Any] = {"custom_objects": custom, "compile": False}
        if fmt == "keras":
            kwargs["safe_mode"] = spec.safe_mode
        return keras.saving.load_model(files[0], **kwargs)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(_explain_load_error(spec.path, e)) from None


def _explain_load_error(path: str, e: Exception) -> str:
    text = str(e)
    missing = _MISSING_CLASS.search(text)
    if missing:
        cls = missing.group(1)
        short = cls.split(">")[-1]
        return (
            f"model {path} uses the custom class or function {cls!r}, which is not available: "
            f"pass --custom-object <module>:{short} (the module must be importable on every worker)"
        )
    if "safe_mode" in text or ("Lambda" in text and "unsafe" in text.lower()):
        return (
            f"model {path} contains arbitrary code (e.g. a Lambda layer) that safe mode refuses to load: "
            "re-save it without Lambda layers, or pass --unsafe-deserialization if you trust the file"
        )
    if "Layer count mismatch" in text and "expected 0 layers" in text:
        return (
            f"model {path} cannot be loaded: a subclassed model cannot be restored from .h5; "
            "save it as .keras (model.save('m.keras')) or as JSON + weights"
        )
    return f"model {path} cannot be loaded: {first_line(e)}"
