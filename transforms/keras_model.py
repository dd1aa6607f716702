"""Loading Keras models (.keras, .h5, SavedModel) behind one compiled predict call.

Pure functions and a small wrapper class, usable without Beam. The Beam
``ModelHandler`` in :mod:`transforms.inference` calls :func:`load` in the
worker's ``setup()``; the launcher calls it once too, to fail fast on a bad
model before any data is read.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.utils import shared

from transforms.errors import ModelError
from transforms.model_cache import localize, verify_sha256
from transforms.model_cache import model_id as model_id_for
from transforms.tf_quiet import import_tensorflow

_LOG = logging.getLogger("keras_batch_score")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to load and how. Plain data: it pickles to the workers.

    Attributes:
        path: A ``.keras`` or ``.h5`` file or a SavedModel directory, local or remote
            (anything Beam ``FileSystems`` can read).
        custom_objects: ``module:attr`` references imported on each worker.
        safe_mode: Refuse arbitrary code (lambda layers) in ``.keras`` files.
        signature: SavedModel signature name; ``None`` picks ``serving_default``.
        precision: ``float32`` (exactly ``model(x, training=False)``) or
            ``bfloat16`` (opt-in: Keras ``mixed_bfloat16`` compute, float32 outputs;
            faster on CPUs with AVX512-BF16 and on GPUs, ~1e-3 absolute difference).
    """

    path: str
    custom_objects: tuple[str, ...] = ()
    safe_mode: bool = True
    signature: str | None = None
    precision: str = "float32"
    sha256: str | None = None  # pinned hash of the model's bytes (--model-sha256, bundles)
    model_id: str | None = None  # the `model` column's value (a bundle's version label)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, per-row shape (batch axis removed) and dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def width(self) -> int | None:
        """Number of values per row for inputs of shape (), (1,) or (k,); None otherwise."""
        if len(self.shape) == 0:
            return 1
        if len(self.shape) == 1:
            return self.shape[0]
        return None


class LoadedModel:
    """A model ready to score: input/output metadata and a compiled graph call.

    Attributes:
        inputs: Model inputs in model order.
        outputs: Model outputs in model order.
        model_id: ``<file name>@<sha256 prefix>`` of the model's bytes.
        format: ``keras``, ``h5`` or ``saved_model``.
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
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.model_id = model_id
        self.format = format
        self._call = call
        self._weights = weights
        self._keepalive = keepalive  # a SavedModel's trackable root must outlive its functions

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the compiled model on one batch.

        Args:
            features: One array per model input name, all with the same number of rows.

        Returns:
            One array per model output name, ``(n,)`` for a width-1 output, else ``(n, ...)``.
        """
        import tensorflow as tf

        tensors = {
            name: tf.convert_to_tensor(features[info.name]) for name, info in self._by_name.items()
        }
        raw = self._call(tensors)
        out: dict[str, np.ndarray] = {}
        for info in self.outputs:
            values = np.asarray(raw[info.name])
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            out[info.name] = values
        return out

    @property
    def _by_name(self) -> dict[str, TensorInfo]:
        return {info.name: info for info in self.inputs}

    def weights(self) -> Sequence[Any]:
        return self._weights()


# --------------------------------------------------------------------------- files


def detect_format(local_path: str) -> str:
    if os.path.isdir(local_path):
        if os.path.exists(os.path.join(local_path, "saved_model.pb")):
            return "saved_model"
        raise ModelError(
            f"model directory {local_path} has no saved_model.pb: pass a .keras or .h5 file "
            "or a SavedModel directory"
        )
    if not os.path.exists(local_path):
        raise ModelError(f"model file {local_path} does not exist")
    lower = local_path.lower()
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    raise ModelError(
        f"model file {local_path}: unknown format; expected a .keras or .h5 file or a SavedModel directory"
    )


# --------------------------------------------------------------------------- loading


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


def load(spec: ModelSpec) -> LoadedModel:
    """Loads the model named by ``spec`` and compiles its call.

    Raises:
        ModelError: with a message that says what to fix (missing file, unknown
            format, custom class not provided, unsafe lambda layers, ...).
    """
    import_tensorflow()
    local = localize(spec.path)
    if spec.sha256:
        verify_sha256(local, spec.sha256, spec.path)
    fmt = detect_format(local)
    stat = (
        os.stat(local) if fmt != "saved_model" else os.stat(os.path.join(local, "saved_model.pb"))
    )
    tag = repr((spec, os.path.abspath(local), stat.st_size, stat.st_mtime_ns))

    def construct() -> LoadedModel:
        model_id = spec.model_id or model_id_for(spec.path, local)
        if fmt == "saved_model":
            return _load_saved_model(local, spec, model_id)
        return _load_keras(local, fmt, spec, model_id)

    return _MODELS.acquire(construct, tag=tag)


# Loaded models are shared within a process, as Beam's RunInference shares them
# between DoFn instances: the launcher's health-checked model is reused by an
# in-process worker instead of being loaded and traced a second time. Beam's
# Shared holds weak references, so nothing outlives its last user.
_MODELS = shared.Shared()


def _load_keras(local: str, fmt: str, spec: ModelSpec, model_id: str) -> LoadedModel:
    import keras
    import tensorflow as tf

    custom = resolve_custom_objects(spec.custom_objects)
    try:
        kwargs: dict[str, Any] = {"custom_objects": custom, "compile": False}
        if fmt == "keras":
            kwargs["safe_mode"] = spec.safe_mode
        model = keras.saving.load_model(local, **kwargs)
    except Exception as e:
        raise ModelError(_explain_load_error(spec.path, e)) from None
    if not getattr(model, "inputs", None):
        raise ModelError(
            f"model {spec.path} has no defined inputs (a subclassed model that was never built?); "
            "save a functional or Sequential model with an Input layer"
        )
    inputs = [
        TensorInfo(_input_name(t, i), tuple(t.shape[1:]), str(t.dtype))
        for i, t in enumerate(model.inputs)
    ]
    output_names = list(
        getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))]
    )
    outputs = [
        TensorInfo(n, tuple(t.shape[1:]), str(t.dtype))
        for n, t in zip(output_names, model.outputs, strict=True)
    ]

    if spec.precision != "float32":
        model = with_dtype_policy(model, f"mixed_{spec.precision}", spec.path)
        outputs = [dataclasses.replace(info, dtype="float32") for info in outputs]
        fmt = f"{fmt}+{spec.precision}"

    structure_is_dict = isinstance(model.input, dict)
    single = len(inputs) == 1 and not structure_is_dict
    if single:
        sig = [tf.TensorSpec((None, *inputs[0].shape), inputs[0].dtype)]
        graph = tf.function(
            lambda x: model(x, training=False), input_signature=sig, autograph=False
        )

        def call(tensors: dict[str, Any]) -> dict[str, Any]:
            return _name_outputs(graph(tensors[inputs[0].name]), output_names)

    else:
        order = [info.name for info in inputs]
        sig_dict = {info.name: tf.TensorSpec((None, *info.shape), info.dtype) for info in inputs}
        if structure_is_dict:
            graph = tf.function(
                lambda d: model(d, training=False), input_signature=[sig_dict], autograph=False
            )

            def call(tensors: dict[str, Any]) -> dict[str, Any]:
                return _name_outputs(graph(tensors), output_names)

        else:
            sig_list = [sig_dict[n] for n in order]
            graph = tf.function(
                lambda *xs: model(list(xs), training=False),
                input_signature=sig_list,
                autograph=False,
            )

            def call(tensors: dict[str, Any]) -> dict[str, Any]:
                return _name_outputs(graph(*[tensors[n] for n in order]), output_names)

    return LoadedModel(
        inputs=inputs,
        outputs=outputs,
        call=call,
        model_id=model_id,
        format=fmt,
        weights=lambda: [w.numpy() for w in model.weights],
        keepalive=model,
    )


def _input_name(tensor: Any, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]


def _name_outputs(result: Any, names: Sequence[str]) -> dict[str, Any]:
    if isinstance(result, dict):
        named = dict(result)
    elif isinstance(result, (list, tuple)):
        named = dict(zip(names, result, strict=True))
    else:
        named = {names[0]: result}
    # bfloat16 outputs (``--precision bfloat16``) leave the model as float32.
    return {
        k: (v.numpy().astype(np.float32) if v.dtype.name == "bfloat16" else v)
        for k, v in named.items()
    }


def with_dtype_policy(model: Any, policy: str, path: str) -> Any:
    """A clone of a functional or Sequential Keras model whose layers compute under ``policy``.

    Variables stay float32 (the weights are copied); inputs and matmuls are cast,
    as in Keras mixed precision.
    """
    import keras

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = policy
        return layer.__class__.from_config(config)

    try:
        cloned = keras.models.clone_model(model, clone_function=clone)
        cloned.set_weights(model.get_weights())
    except Exception as e:
        raise ModelError(
            f"model {path}: cannot run under the {policy!r} dtype policy ({_first_line(e)}); "
            "use --precision float32"
        ) from None
    return cloned


def _load_saved_model(local: str, spec: ModelSpec, model_id: str) -> LoadedModel:
    import tensorflow as tf

    if spec.precision != "float32":
        raise ModelError(
            f"model {spec.path}: --precision {spec.precision} needs a .keras or .h5 model; "
            "a SavedModel's graph has fixed dtypes"
        )

    try:
        root = tf.saved_model.load(local)
    except Exception as e:
        raise ModelError(f"model {spec.path}: cannot load SavedModel: {_first_line(e)}") from None
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

    def call(tensors: dict[str, Any]) -> dict[str, Any]:
        return fn(**tensors)

    variables = list(getattr(root, "variables", []) or [])
    return LoadedModel(
        inputs=inputs,
        outputs=outputs,
        call=call,
        model_id=model_id,
        format=f"saved_model[{name}]",
        weights=lambda: [v.numpy() for v in variables],
        keepalive=root,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


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
    return f"model {path} cannot be loaded: {_first_line(e)}"


# --------------------------------------------------------------------------- health check


def health_check(model: LoadedModel, feature_widths: Mapping[str, int]) -> None:
    """Checks the model before it scores anything.

    Args:
        model: The loaded model.
        feature_widths: Per model input name, the number of values per row the
            pipeline will feed.

    Raises:
        ModelError: if the inputs do not match the features, weights hold NaN/Inf,
            or a smoke prediction fails or is not finite.
    """
    names = {info.name for info in model.inputs}
    if set(feature_widths) != names:
        raise ModelError(
            f"model {model.model_id} expects inputs {sorted(names)}, the pipeline feeds {sorted(feature_widths)}"
        )
    for info in model.inputs:
        if info.width is not None and info.width != feature_widths[info.name]:
            raise ModelError(
                f"model {model.model_id} input {info.name!r} expects {info.width} values per row, "
                f"the pipeline feeds {feature_widths[info.name]}"
            )
    for i, w in enumerate(model.weights()):
        arr = np.asarray(w)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelError(f"model {model.model_id}: weight tensor #{i} contains NaN or Inf")
    smoke = {
        info.name: np.zeros((2, *_concrete(info, feature_widths)), dtype=info.dtype)
        for info in model.inputs
    }
    try:
        out = model.predict(smoke)
    except Exception as e:
        raise ModelError(
            f"model {model.model_id}: smoke prediction on 2 zero rows failed: {_first_line(e)}"
        ) from None
    for name, values in out.items():
        if len(values) != 2:
            raise ModelError(
                f"model {model.model_id}: output {name!r} gave {len(values)} rows for 2 input rows"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ModelError(f"model {model.model_id}: output {name!r} is NaN/Inf on zero input")


def _concrete(info: TensorInfo, feature_widths: Mapping[str, int]) -> tuple[int, ...]:
    if any(d is None for d in info.shape):
        raise ModelError(
            f"input {info.name!r} has an unknown dimension in shape {info.shape}: only fixed-size inputs are supported"
        )
    return tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
