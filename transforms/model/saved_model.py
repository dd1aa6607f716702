"""Loading a TensorFlow SavedModel and calling one of its signatures. No Beam."""

from __future__ import annotations

import logging
from typing import Any

from keras_batch_score.transforms.core.errors import ModelError, first_line
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.precision import refuse_xla_strings
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.model.tensors import TensorInfo

_LOG = logging.getLogger("keras_batch_score")


def load_saved_model(local: str, spec: ModelSpec, model_id: str) -> LoadedModel:
    """A SavedModel directory called through one signature (``--signature``, else ``serving_default``).

    Args:
        local: The local SavedModel directory.
        spec: What to load and how; a SavedModel runs in float32 only.
        model_id: The ``model`` column's value.

    Raises:
        ModelError: for a missing or ambiguous signature, or positional signature inputs.
    """
    import tensorflow as tf

    if spec.precision != "float32":
        raise ModelError(
            f"model {spec.path}: --precision {spec.precision} needs a .keras or .h5 model; "
            "a SavedModel's graph has fixed dtypes"
        )

    try:
        root = tf.saved_model.load(local)
    except Exception as e:
        raise ModelError(f"model {spec.path}: cannot load SavedModel: {first_line(e)}") from None
    signatures = dict(root.signatures)
    if spec.signature:
        if spec.signature not in signatures:
            raise ModelError(
                f"model {spec.path}: no signature {spec.signature!r}; it has {sorted(signatures)} (pass --signature)"
            )
        name = spec.signature
    elif "serving_default" in signatures:
        name = "serving_default"
    elif len(signatures) == 1:
        name = next(iter(signatures))
    else:
        raise ModelError(
            f"model {spec.path}: no 'serving_default' signature; choose one of {sorted(signatures)} with --signature"
        )
    fn = signatures[name]
    _LOG.debug("SavedModel %s: using signature %r", spec.path, name)
    arg_specs, kwarg_specs = fn.structured_input_signature
    if arg_specs:
        raise ModelError(
            f"model {spec.path}: signature {name!r} takes positional inputs; expected named inputs"
        )
    inputs = [
        TensorInfo(k, tuple(v.shape[1:]), v.dtype.name) for k, v in sorted(kwarg_specs.items())
    ]
    out_specs = fn.structured_outputs
    outputs = [
        TensorInfo(k, tuple(v.shape[1:]), v.dtype.name) for k, v in sorted(out_specs.items())
    ]

    if spec.backend == "xla":
        refuse_xla_strings(inputs, spec.path)
        fn = tf.function(fn, jit_compile=True, autograph=False)

    def call(tensors: dict[str, Any]) -> dict[str, Any]:
        return fn(**tensors)

    variables = list(getattr(root, "variables", []) or [])
    return LoadedModel(
        inputs=inputs,
        outputs=outputs,
        call=call,
        model_id=model_id,
        format=f"saved_model[{name}]" + ("+xla" if spec.backend == "xla" else ""),
        weights=lambda: [v.numpy() for v in variables],
        keepalive=root,
        input_structure="dict",
    )
