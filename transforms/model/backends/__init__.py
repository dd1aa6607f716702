"""Inference backends: the same model, run by Keras, XLA, ONNX Runtime or LiteRT.

``keras`` and ``xla`` run the model's compiled TensorFlow graph (``xla`` with
``jit_compile=True``). ``onnxruntime`` and ``litert`` convert that graph once
(:mod:`keras_batch_score.transforms.model.backends.onnx`, :mod:`keras_batch_score.transforms.model.backends.litert`) and cache
the converted file by the model's content hash
(:mod:`keras_batch_score.transforms.model.backends.converted_cache`).
"""

from __future__ import annotations

import importlib.util

from keras_batch_score.transforms.core.errors import ConfigError

BACKENDS = ("keras", "xla", "onnxruntime", "litert")
CONVERTED = ("onnxruntime", "litert")  # backends that convert the model to another runtime

# backend -> (importable modules it needs, the pyproject extra that installs them)
_REQUIREMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnxruntime": (("onnxruntime", "tf2onnx", "onnx"), "onnx"),
    "litert": (("ai_edge_litert",), "litert"),
}


def missing_modules(backend: str) -> list[str]:
    """The Python modules ``backend`` needs that are not installed."""
    modules, _ = _REQUIREMENTS.get(backend, ((), ""))
    return [m for m in modules if importlib.util.find_spec(m) is None]


def check_backend(backend: str, precision: str) -> None:
    """Checks that ``backend`` is known, installed and runs at ``precision``.

    Raises:
        ConfigError: saying what to pass or to ``pip install``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"'backend' must be one of {', '.join(BACKENDS)}, got {backend!r}")
    missing = missing_modules(backend)
    if missing:
        extra = _REQUIREMENTS[backend][1]
        raise ConfigError(
            f"--backend {backend} needs the Python package(s) {', '.join(missing)}: "
            f"pip install 'keras-batch-score[{extra}]' (or use --backend keras)"
        )
    if backend in CONVERTED and precision != "float32":
        raise ConfigError(
            f"--backend {backend} runs a float32 model: --precision {precision} applies to the "
            "keras and xla backends only"
        )
