"""Checking a loaded model before it scores anything: inputs, weights and a smoke prediction.

Pure numpy around the model's compiled call; no Beam.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from keras_batch_score.transforms.core.errors import ModelError, first_line
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.tensors import TensorInfo, is_string_dtype, resolve_shape


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
            f"model {model.model_id}: smoke prediction on 2 zero (or empty-string) rows failed: {first_line(e)}"
        ) from None
    for name, values in out.items():
        if len(values) != 2:
            raise ModelError(
                f"model {model.model_id}: output {name!r} gave {len(values)} rows for 2 input rows"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ModelError(f"model {model.model_id}: output {name!r} is NaN/Inf on zero input")


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
