"""Scoring flags and config keys of explanations, OOD scores and the adversarial check.

Kept apart from :mod:`keras_batch_score.pipelines.config` (as :mod:`keras_batch_score.pipelines.drift_options`
is); ``config`` calls :func:`add_explain_arguments`, :func:`coerce` and
:func:`validate`. What the settings do: :mod:`keras_batch_score.transforms.postprocess.explain`,
:mod:`keras_batch_score.transforms.postprocess.ood` and :mod:`keras_batch_score.transforms.postprocess.insights`, and docs/postprocessing.md, Explanations.
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import short_repr
from keras_batch_score.transforms.postprocess.explain import (
    BASELINES,
    DEFAULT_STEPS,
    METHODS,
    REFERENCE_MEAN,
)

DEFAULTS: dict[str, Any] = {
    "explain": None,
    "explain_steps": DEFAULT_STEPS,
    "explain_baseline": "zeros",
    "explain_output": None,
    "ood_score": False,
    "ood_threshold": None,
    "adversarial_check": False,
    "adversarial_epsilon": 0.01,
    "adversarial_threshold": 0.1,
}
FIELDS = tuple(DEFAULTS)
MAX_STEPS = 1024
_BOOLS = ("ood_score", "adversarial_check")
_NUMBERS = ("ood_threshold", "adversarial_epsilon", "adversarial_threshold")


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the explanation / OOD / adversarial flags; unset flags stay absent from the namespace."""
    s = argparse.SUPPRESS
    parser.add_argument(
        "--explain",
        choices=METHODS,
        default=s,
        help="Write input attributions of the model output: attr_<feature> columns (a list column "
        "for a list feature), in the model's input space (after preprocessing).",
    )
    parser.add_argument(
        "--explain-steps",
        dest="explain_steps",
        type=int,
        default=s,
        help=f"Integrated gradients' trapezoid intervals (default {DEFAULT_STEPS}).",
    )
    parser.add_argument(
        "--explain-baseline",
        dest="explain_baseline",
        choices=BASELINES,
        default=s,
        help="Attribution baseline: zeros (default) or the feature means of --reference-profile.",
    )
    parser.add_argument(
        "--explain-output",
        dest="explain_output",
        default=s,
        help="Model output explained (and checked by --adversarial-check): NAME or NAME:INDEX "
        "(default the first output; a vector output is explained at each row's predicted class).",
    )
    parser.add_argument(
        "--ood-score",
        dest="ood_score",
        action="store_true",
        default=s,
        help="Add ood_score (share of the row's profiled features outside the reference's "
        "0.1 and 99.9 percentiles or unseen categories) and ood_max_abs_z; needs --reference-profile.",
    )
    parser.add_argument(
        "--ood-threshold",
        dest="ood_threshold",
        type=float,
        default=s,
        help="Add a boolean ood column (ood_score > T) and count rows_ood in run_summary.json "
        "(implies --ood-score).",
    )
    parser.add_argument(
        "--adversarial-check",
        dest="adversarial_check",
        action="store_true",
        default=s,
        help="Flag rows whose prediction moves by more than --adversarial-threshold under one "
        "FGSM step (boolean fragile column, rows_fragile in run_summary.json).",
    )
    parser.add_argument(
        "--adversarial-epsilon",
        dest="adversarial_epsilon",
        type=float,
        default=s,
        help="FGSM step in reference standard deviations (model-input units where the profile "
        f"has none); default {DEFAULTS['adversarial_epsilon']}.",
    )
    parser.add_argument(
        "--adversarial-threshold",
        dest="adversarial_threshold",
        type=float,
        default=s,
        help=f"Prediction change that flags a row as fragile (default {DEFAULTS['adversarial_threshold']}).",
    )


def coerce(key: str, value: Any, where: str) -> Any:
    """Checks a YAML value of one of :data:`FIELDS`."""
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {short_repr(value)}")
        return value
    if key == "explain_steps":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
        return value
    if key in _NUMBERS:
        if value is None and key == "ood_threshold":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
        return float(value)
    if value is None and key in ("explain", "explain_output"):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {short_repr(value)}")
    return value


def validate(config: Any) -> None:
    """Checks the settings against each other (before any model or data is read)."""
    if config.explain is not None and config.explain not in METHODS:
        raise ConfigError(f"'explain' must be one of {list(METHODS)}, got {config.explain!r}")
    if config.explain_baseline not in BASELINES:
        raise ConfigError(
            f"'explain_baseline' must be one of {list(BASELINES)}, got {config.explain_baseline!r}"
        )
    if not 1 <= config.explain_steps <= MAX_STEPS:
        raise ConfigError(
            f"'explain_steps' must be between 1 and {MAX_STEPS}, got {config.explain_steps}"
        )
    if config.explain_baseline == REFERENCE_MEAN and not config.reference_profile:
        raise ConfigError(
            "--explain-baseline reference-mean needs --reference-profile (the means come from it)"
        )
    if config.ood_threshold is not None:
        if not 0.0 <= config.ood_threshold < 1.0:
            raise ConfigError(f"'ood_threshold' must be in [0, 1), got {config.ood_threshold}")
        config.ood_score = True
    if config.ood_score and not config.reference_profile:
        raise ConfigError(
            "--ood-score / --ood-threshold need --reference-profile (the reference distribution)"
        )
    if not config.adversarial_epsilon > 0:
        raise ConfigError(f"'adversarial_epsilon' must be > 0, got {config.adversarial_epsilon}")
    if not config.adversarial_threshold >= 0:
        raise ConfigError(
            f"'adversarial_threshold' must be >= 0, got {config.adversarial_threshold}"
        )
    if (config.explain or config.adversarial_check) and config.precision != "float32":
        raise ConfigError(
            "--explain and --adversarial-check compute gradients in float32; "
            f"drop --precision {config.precision}"
        )
