"""Loading Keras models (.keras, .h5, SavedModel) behind one compiled predict call.

Pure functions and a small wrapper class, usable without Beam. The Beam
``ModelHandler`` in :mod:`keras_batch_score.transforms.model.handler` calls :func:`load` in the
worker's ``setup()``; the launcher calls it once too, to fail fast on a bad
model before any data is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.utils import shared

from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.core.tf_quiet import import_tensorflow
from keras_batch_score.transforms.io.model_cache import (
    content_hash,
    is_local,
    localize,
    verify_sha256,
)
from keras_batch_score.transforms.io.model_cache import model_id as model_id_for

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
            faster on CPUs with AVX512-BF16 and on GPUs, ~1e-3 absolute difference) or
            ``float16`` (Keras ``mixed_float16``; GPUs only).
        backend: ``keras`` (the compiled graph), ``xla`` (the same graph with
            ``jit_compile=True``), ``onnxruntime`` or ``litert`` (the graph converted
            once per process, cached by content hash: :mod:`keras_batch_score.transforms.model.backends`).
    """

    path: str
    custom_objects: tuple[str, ...] = ()
    safe_mode: bool = True
    signature: str | None = None
    precision: str = "float32"
    sha256: str | None = None  # pinned hash of the model's bytes (--model-sha256, bundles)
    model_id: str | None = None  # the `model` column's value (a bundle's version label)
    backend: str = "keras"


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

    @property
    def size(self) -> int | None:
        """Number of values per row (the product of the shape); None if a dimension is unknown."""
        if any(d is None for d in self.shape):
            return None
        return int(np.prod(self.shape, dtype=np.int64))


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


# --------------------------------------------------------------------------- files


def detect_format(local_path: str) -> str:
    """``keras``, ``h5``, ``saved_model`` or ``json+weights`` (architecture JSON + ``.weights.h5``)."""
    if os.path.isdir(local_path):
        if os.path.exists(os.path.join(local_path, "saved_model.pb")):
            return "saved_model"
        json_and_weights_files(local_path)  # raises ModelError saying what is missing
        return "json+weights"
    if not os.path.exists(local_path):
        raise ModelError(f"model file {local_path} does not exist")
    lower = local_path.lower()
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith(WEIGHTS_SUFFIX):
        raise ModelError(
            f"model file {local_path} holds only weights: pass the architecture .json saved "
            f"beside it (model.to_json()), or a directory holding both"
        )
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    if lower.endswith(".json"):
        return "json+weights"
    raise ModelError(
        f"model file {local_path}: unknown format; expected a .keras or .h5 file, a SavedModel "
        "directory, or an architecture .json with its .weights.h5 file"
    )


WEIGHTS_SUFFIX = ".weights.h5"


def weights_path_for(json_path: str) -> str:
    """The weights file saved beside an architecture JSON: ``<stem>.weights.h5``."""
    return json_path[: -len(".json")] + WEIGHTS_SUFFIX


def json_and_weights_files(local_path: str) -> tuple[str, str]:
    """The architecture JSON and weights files of a ``json+weights`` model.

    Args:
        local_path: A ``.json`` file (its weights ``<stem>.weights.h5`` beside it) or a
            directory holding exactly one ``.json`` and one ``.weights.h5`` file.

    Raises:
        ModelError: if a file is missing or the directory is ambiguous.
    """
    if not os.path.isdir(local_path):
        weights = weights_path_for(local_path)
        if not os.path.exists(weights):
            raise ModelError(
                f"model {local_path}: weights file {weights} does not exist; save it beside the "
                "architecture with model.save_weights('<same name>.weights.h5')"
            )
        return local_path, weights
    names = sorted(os.listdir(local_path))
    jsons = [n for n in names if n.lower().endswith(".json")]
    weights = [n for n in names if n.lower().endswith(WEIGHTS_SUFFIX)]
    if len(jsons) != 1 or len(weights) != 1:
        raise ModelError(
            f"model directory {local_path} has no saved_model.pb, and not exactly one .json "
            f"architecture and one .weights.h5 file (found {len(jsons)} .json, {len(weights)} "
            ".weights.h5): pass a .keras or .h5 file, a SavedModel directory, or a directory "
            "with model.to_json() and model.save_weights() output"
        )
    return os.path.join(local_path, jsons[0]), os.path.join(local_path, weights[0])


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
    if spec.precision == "float16":
        check_gpu_for_float16(spec.path)
    local = localize(spec.path)
    if spec.sha256:
        verify_sha256(local, spec.sha256, spec.path)
    fmt = detect_format(local)
    files = _model_files(spec, local, fmt)
    stats = [os.stat(f) for f in files]
    tag = repr(
        (
            spec,
            os.path.abspath(local),
            [(f, st.st_size, st.st_mtime_ns) for f, st in zip(files, stats, strict=True)],
        )
    )

    def construct() -> LoadedModel:
        if spec.model_id:  # a bundle's version label, or a pinned id
            model_id = spec.model_id
        elif fmt == "json+weights" and not os.path.isdir(local):
            digest = "".join(content_hash(f) for f in files)
            model_id = (
                f"{os.path.basename(spec.path)}@{hashlib.sha256(digest.encode()).hexdigest()[:12]}"
            )
        else:
            model_id = model_id_for(spec.path, local)
        if fmt == "saved_model":
            loaded = _load_saved_model(local, spec, model_id)
            source_hash = content_hash(local)
        else:
            loaded = _load_keras(files, fmt, spec, model_id)
            source_hash = "".join(content_hash(f) for f in files)
        if spec.backend in ("onnxruntime", "litert"):
            from keras_batch_score.transforms.model.backends.convert import converted_model

            key = [source_hash, fmt, spec.signature or "", *spec.custom_objects]
            return converted_model(loaded, spec.backend, key, spec.path)
        return loaded

    return _MODELS.acquire(construct, tag=tag)


def _model_files(spec: ModelSpec, local: str, fmt: str) -> list[str]:
    """The local files a model is loaded from (their size and mtime identify a loaded model)."""
    if fmt == "saved_model":
        return [os.path.join(local, "saved_model.pb")]
    if fmt != "json+weights":
        return [local]
    if os.path.isdir(local) or is_local(spec.path):
        return list(json_and_weights_files(local))
    # A remote .json: its weights file is copied on its own.
    return [local, localize(weights_path_for(spec.path))]


# Loaded models are shared within a process, as Beam's RunInference shares them
# between DoFn instances: the launcher's health-checked model is reused by an
# in-process worker instead of being loaded and traced a second time. Beam's
# Shared holds weak references, so nothing outlives its last user.
_MODELS = shared.Shared()


def _load_keras(files: Sequence[str], fmt: str, spec: ModelSpec, model_id: str) -> LoadedModel:
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
            f"{_first_line(e)}"
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


def refuse_xla_strings(inputs: Sequence[TensorInfo], path: str) -> None:
    """Refuses ``--backend xla`` for string inputs: XLA has no string type (TensorFlow aborts).

    Raises:
        ModelError: naming the string inputs.
    """
    strings = [info.name for info in inputs if is_string_dtype(info.dtype)]
    if strings:
        raise ModelError(
            f"model {path}: --backend xla cannot compile string inputs {strings} (XLA has no "
            "string type); use --backend keras"
        )


def check_gpu_for_float16(path: str) -> None:
    """Refuses ``--precision float16`` where TensorFlow sees no GPU.

    Raises:
        ModelError: float16 compute on a CPU is slower than float32 and less exact.
    """
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise ModelError(
            f"model {path}: --precision float16 needs a GPU, and TensorFlow sees none on this "
            "machine; use --precision float32 (or bfloat16 on CPUs with AVX512-BF16)"
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
    if "Layer count mismatch" in text and "expected 0 layers" in text:
        return (
            f"model {path} cannot be loaded: a subclassed model cannot be restored from .h5; "
            "save it as .keras (model.save('m.keras')) or as JSON + weights"
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
        if info.size is not None and info.size != feature_widths[info.name]:
            raise ModelError(
                f"model {model.model_id} input {info.name!r} expects {info.size} values per row, "
                f"the pipeline feeds {feature_widths[info.name]}"
            )
    for i, w in enumerate(model.weights()):
        arr = np.asarray(w)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelError(f"model {model.model_id}: weight tensor #{i} contains NaN or Inf")
    smoke = {info.name: dummy_input(info, 2, feature_widths[info.name]) for info in model.inputs}
    try:
        out = model.predict(smoke)
    except Exception as e:
        raise ModelError(
            f"model {model.model_id}: smoke prediction on 2 zero (or empty-string) rows failed: {_first_line(e)}"
        ) from None
    for name, values in out.items():
        if len(values) != 2:
            raise ModelError(
                f"model {model.model_id}: output {name!r} gave {len(values)} rows for 2 input rows"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ModelError(f"model {model.model_id}: output {name!r} is NaN/Inf on zero input")


def resolve_shape(shape: Sequence[int | None], width: int) -> tuple[int, ...] | None:
    """``shape`` with its one unknown dimension set so that it holds ``width`` values per row.

    Returns None if that is impossible (several unknown dimensions, or ``width``
    not a positive multiple of the known dimensions' product).
    """
    unknown = [i for i, d in enumerate(shape) if d is None]
    if not unknown:
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]
    known = int(np.prod([d for d in shape if d is not None], dtype=np.int64))
    if len(unknown) > 1 or width <= 0 or known <= 0 or width % known:
        return None
    return tuple(width // known if d is None else int(d) for d in shape)


def dummy_input(info: TensorInfo, rows: int, width: int | None = None) -> np.ndarray:
    """``rows`` rows of zeros for a model input (empty strings for a string input).

    Args:
        info: The model input.
        rows: Number of rows.
        width: Values per row the pipeline feeds; sets an unknown dimension.
    """
    resolved = resolve_shape(info.shape, width or 0)
    if resolved is None:
        raise ModelError(
            f"input {info.name!r} has an unknown dimension in shape {info.shape} that "
            f"{width} values per row cannot fill"
        )
    shape = (rows, *resolved)
    if is_string_dtype(info.dtype):
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=info.dtype)


def is_string_dtype(dtype: str) -> bool:
    """Whether a model input/output dtype name is TensorFlow's ``string``."""
    return dtype in ("string", "str", "object", "bytes")
