"""Flags, YAML keys and checks for output noise, output formats, per-class columns and shadow scoring.

Like :mod:`keras_batch_score.pipelines.postprocess_options`, every option is both a ``--flag``
and a YAML key of the same name in the flat
:class:`~keras_batch_score.pipelines.config.ScoreConfig`. The noise seed is the existing
``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io.output_formats import FORMATS
from keras_batch_score.transforms.postprocess.privacy import MECHANISMS

# ScoreConfig field name -> default. Keep in sync with ScoreConfig.
FIELDS: dict[str, Any] = {
    "output_format": "parquet",
    "output_noise": None,
    "epsilon": None,
    "delta": None,
    "sensitivity": None,
    "probability_columns": False,
    "multi_label_threshold": None,
    "multi_label_thresholds": None,
    "shadow_model": None,
}

# Settings that need the post-processing step (keras_batch_score.transforms.postprocess.apply).
POSTPROCESS_KEYS = (
    "output_noise",
    "probability_columns",
    "multi_label_threshold",
    "multi_label_thresholds",
    "shadow_model",
)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags to ``parser`` (unset flags stay absent)."""
    s = argparse.SUPPRESS
    add = parser.add_argument
    add(
        "--output-format",
        dest="output_format",
        choices=FORMATS,
        default=s,
        help="Predictions file format: parquet (default), jsonl (Vertex AI batch prediction "
        "layout: instance + prediction per line) or tfrecord (tf.train.Example per row).",
    )
    add(
        "--output-noise",
        dest="output_noise",
        choices=MECHANISMS,
        default=s,
        help="Add differential-privacy noise to the released predictions: laplace (scale "
        "sensitivity/epsilon) or gaussian (analytic Gaussian mechanism for epsilon, delta). "
        "--seed makes the noise reproducible (keep it secret).",
    )
    add(
        "--epsilon",
        type=float,
        default=s,
        help="Privacy parameter epsilon (> 0) of --output-noise.",
    )
    add(
        "--delta",
        type=float,
        default=s,
        help="Privacy parameter delta (0 < delta < 1), gaussian only.",
    )
    add(
        "--sensitivity",
        type=float,
        default=s,
        help="How much one individual can change a prediction (L1 for laplace, L2 for gaussian).",
    )
    add(
        "--probability-columns",
        dest="probability_columns",
        action="store_true",
        default=s,
        help="With --class-names: also write one prob_<class> column per class.",
    )
    add(
        "--multi-label-threshold",
        dest="multi_label_threshold",
        type=float,
        default=s,
        help="Multi-label models (one sigmoid per class): write a labels list of the classes "
        "scoring >= T (needs --class-names; replaces --top-k).",
    )
    add(
        "--multi-label-thresholds",
        dest="multi_label_thresholds",
        default=s,
        help='JSON file mapping class name -> threshold, e.g. {"cat": 0.3, "dog": 0.6}; classes it '
        "omits use --multi-label-threshold.",
    )
    add(
        "--shadow-model",
        dest="shadow_model",
        default=s,
        help="Challenger model scored beside the released one: writes prediction_shadow and "
        "agreement statistics in run_summary.json; the released prediction is unchanged.",
    )


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')} ({key})"


def coerce(key: str, value: Any, where: str) -> Any:
    """Checks a YAML value for one of :data:`FIELDS`."""
    if key == "probability_columns":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if key in ("epsilon", "delta", "sensitivity", "multi_label_threshold"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if key == "output_format" and value not in FORMATS:
        raise ConfigError(f"{where}: expected one of {', '.join(FORMATS)}, got {value!r}")
    if key == "output_noise" and value not in MECHANISMS:
        raise ConfigError(f"{where}: expected one of {', '.join(MECHANISMS)}, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def needs_postprocess(config: Any) -> bool:
    """Whether an option here needs the post-processing step."""
    return any(getattr(config, k, None) for k in POSTPROCESS_KEYS) or (
        getattr(config, "multi_label_threshold", None) is not None
    )


def _positive_finite(config: Any, key: str) -> None:
    value = getattr(config, key)
    if value is None:
        raise ConfigError(f"--output-noise {config.output_noise} needs {_flag(key)}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{_flag(key)} must be a finite number > 0, got {value}")


def validate(config: Any) -> None:
    """Cross-checks the settings (no file is read).

    Raises:
        ConfigError: naming the flag to fix.
    """
    if config.output_format not in FORMATS:
        raise ConfigError(f"'output_format' must be one of {FORMATS}, got {config.output_format!r}")
    noise = config.output_noise
    if noise is None:
        given = [k for k in ("epsilon", "delta", "sensitivity") if getattr(config, k) is not None]
        if given:
            raise ConfigError(
                f"{_flag(given[0])} is only used with --output-noise laplace|gaussian"
            )
    else:
        if noise not in MECHANISMS:
            raise ConfigError(f"'output_noise' must be one of {MECHANISMS}, got {noise!r}")
        _positive_finite(config, "epsilon")
        _positive_finite(config, "sensitivity")
        if noise == "gaussian":
            if config.delta is None:
                raise ConfigError(f"--output-noise gaussian needs {_flag('delta')}")
            if not 0 < config.delta < 1:
                raise ConfigError(f"{_flag('delta')} must be in (0, 1), got {config.delta}")
        elif config.delta is not None:
            raise ConfigError(f"{_flag('delta')} is only used with --output-noise gaussian")
        _refuse_raw_outputs(config)
    if config.probability_columns and not config.class_names:
        raise ConfigError("--probability-columns (probability_columns) needs --class-names")
    multi = config.multi_label_threshold is not None or config.multi_label_thresholds
    if multi:
        if not config.class_names:
            raise ConfigError("multi-label thresholds need --class-names (one name per class)")
        if config.top_k is not None:
            raise ConfigError(
                "--multi-label-threshold(s) writes a labels column instead of top-k: drop --top-k"
            )
        t = config.multi_label_threshold
        if t is not None and not math.isfinite(t):
            raise ConfigError(f"{_flag('multi_label_threshold')} must be a finite number, got {t}")
    if config.shadow_model:
        from keras_batch_score.pipelines.planning.models import parse_members

        names = [m.name for m in parse_members(config.model, config.ensemble_weights)]
        if "shadow" in names:
            raise ConfigError(
                "a --model is named 'shadow', which --shadow-model uses; name it otherwise "
                "(--model name=path)"
            )


def _refuse_raw_outputs(config: Any) -> None:
    """Output noise cannot cover columns that release un-noised model outputs."""
    from keras_batch_score.pipelines.planning.models import parse_members

    several = len(parse_members(config.model, config.ensemble_weights)) > 1 and not config.ab_split
    reasons = [
        (
            config.keep_member_predictions,
            "--keep-member-predictions writes each member's raw output",
        ),
        (several, "an ensemble writes prediction_std, computed from the members' raw outputs"),
        (config.mc_dropout_samples, "--mc-dropout-samples writes prediction_std from raw passes"),
        (config.shadow_model, "--shadow-model writes a second model's raw predictions"),
    ]
    for bad, why in reasons:
        if bad:
            raise ConfigError(
                f"--output-noise cannot be combined with this run's options: {why}, which the "
                "noise would not cover; drop that option"
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
