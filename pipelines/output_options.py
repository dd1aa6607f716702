"""Planning of output noise, per-class columns, multi-label thresholds and shadow scoring.

The settings (flags, YAML keys, types, defaults, cross-field checks) are
defined in :mod:`keras_batch_score.pipelines.options`; this module reads the
files they name and builds the plan fields. The noise seed is ``--seed``.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError

# Settings that need the post-processing step (keras_batch_score.transforms.postprocess.apply).
POSTPROCESS_KEYS = (
    "output_noise",
    "probability_columns",
    "multi_label_threshold",
    "multi_label_thresholds",
    "shadow_model",
)


def needs_postprocess(config: Any) -> bool:
    """Whether an option here needs the post-processing step."""
    return any(getattr(config, k, None) for k in POSTPROCESS_KEYS) or (
        getattr(config, "multi_label_threshold", None) is not None
    )


def read_thresholds(path: str) -> dict[str, float]:
    """A ``--multi-label-thresholds`` JSON file: ``{"class": threshold, ...}``."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except Exception as e:
        raise ConfigError(f"--multi-label-thresholds {path} cannot be read as JSON: {e}") from None
    if not isinstance(data, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in data.values()
    ):
        raise ConfigError(
            f"--multi-label-thresholds {path}: expected a JSON object of class name -> finite number"
        )
    return {str(k): float(v) for k, v in data.items()}


def plan_fields(
    config: Any,
    class_names: Sequence[str] | None,
    width: int,
    key_columns: Sequence[str],
    load_shadow: Any,
) -> dict[str, Any]:
    """The PostprocessPlan fields of these options (files read, shadow model loaded and checked).

    Args:
        config: The ScoreConfig.
        class_names: The resolved class names, if any.
        width: Values per row of the (single) output; 0 for several outputs.
        key_columns: Columns that key each row's noise.
        load_shadow: ``(name, path, role) -> LoadedModel``, checking outputs like a member.
    """
    from keras_batch_score.transforms.postprocess import plan as pp
    from keras_batch_score.transforms.postprocess.class_outputs import (
        probability_columns,
        resolve_thresholds,
    )
    from keras_batch_score.transforms.postprocess.privacy import make_spec

    fields: dict[str, Any] = {}
    if config.output_noise:
        seed = config.seed if config.seed is not None else secrets.randbits(63)
        fields["noise"] = make_spec(
            config.output_noise, config.epsilon, config.delta, config.sensitivity, seed
        )
        fields["noise_key_columns"] = tuple(key_columns)
    if config.probability_columns:
        fields["probability_columns"] = probability_columns(class_names or ())
    if config.multi_label_threshold is not None or config.multi_label_thresholds:
        if width < 2 or len(class_names or ()) != width:
            raise ConfigError(
                "multi-label thresholds need a model with one output of one sigmoid per class "
                f"(width >= 2, one class name each); this output has width {width}"
            )
        per_class = (
            read_thresholds(config.multi_label_thresholds)
            if config.multi_label_thresholds
            else None
        )
        fields["multi_label_thresholds"] = resolve_thresholds(
            class_names, config.multi_label_threshold, per_class
        )
    if config.shadow_model:
        from keras_batch_score.pipelines.planning.models import model_spec

        model = load_shadow("shadow", config.shadow_model, "shadow model")
        fields["shadow"] = pp.MemberRun(
            "shadow", model_spec(config, config.shadow_model), 1.0, model.model_id
        )
    return fields
