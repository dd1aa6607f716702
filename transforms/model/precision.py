"""``--precision`` and ``--backend xla`` checks: mixed-precision clones, GPU and string-input checks.

No Beam; Keras and TensorFlow are imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_batch_score.transforms.core.errors import ModelError, first_line
from keras_batch_score.transforms.model.tensors import TensorInfo, is_string_dtype


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
            f"model {path}: cannot run under the {policy!r} dtype policy ({first_line(e)}); "
            "use --precision float32"
        ) from None
    return cloned


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
