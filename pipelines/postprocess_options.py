"""Post-processing settings for the planning code: their defaults and a parameter check.

The settings themselves (flags, YAML keys, types, defaults, cross-field
checks) are defined in :mod:`keras_batch_score.pipelines.options`; the plan is
built in :mod:`keras_batch_score.pipelines.planning.postprocess`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_batch_score.pipelines.options import SETTINGS

# The post-processing settings (ScoreConfig field name -> default), from the option schema.
FIELDS: dict[str, Any] = {
    key: setting.default() for key, setting in SETTINGS.items() if setting.section == "postprocess"
}


def nonfinite_parameter(params: Any, path: str = "") -> str | None:
    """The path (e.g. ``classes[0][1]``) of the first NaN/Inf number in nested params, or None."""
    if isinstance(params, Mapping):
        for key, value in params.items():
            found = nonfinite_parameter(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(params, (list, tuple)):
        try:
            values = np.asarray(params, dtype=np.float64)
        except (TypeError, ValueError):
            values = None
        if values is not None:
            return None if np.isfinite(values).all() else path
        for i, value in enumerate(params):
            found = nonfinite_parameter(value, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(params, (int, float)) and not isinstance(params, bool):
        return None if math.isfinite(params) else path
    return None
