"""Scoring flags and config keys of the drift check (``--reference-profile`` and friends).

Kept apart from :mod:`keras_batch_score.pipelines.config` so the drift settings live next to
their documentation; ``config`` calls :func:`add_drift_arguments`,
:func:`coerce` and :func:`validate`.
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import short_repr
from keras_batch_score.transforms.drift import metrics as dm

FIELDS = ("reference_profile", "fail_on_drift", "drift_thresholds", "drift_share")


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the drift flags; unset flags stay absent from the namespace."""
    s = argparse.SUPPRESS
    parser.add_argument(
        "--reference-profile",
        dest="reference_profile",
        default=s,
        help="Profile JSON from `batch-score profile`: write drift.json and drift.html "
        "comparing the scored data (and predictions) with it.",
    )
    parser.add_argument(
        "--fail-on-drift",
        dest="fail_on_drift",
        action="store_true",
        default=s,
        help="Exit with status 3 (after writing every output) when dataset drift is detected.",
    )
    parser.add_argument(
        "--drift-threshold",
        dest="drift_thresholds",
        action="append",
        default=s,
        help="metric=value or feature:metric=value ('off' to not gate on a metric); metrics: "
        + ", ".join(
            f"{k} (default {'off' if v is None else v})" for k, v in dm.DEFAULT_THRESHOLDS.items()
        )
        + ". Repeatable.",
    )
    parser.add_argument(
        "--drift-share",
        dest="drift_share",
        type=float,
        default=s,
        help=f"Dataset drift when more than this share of features drift (default {dm.DEFAULT_DRIFT_SHARE}).",
    )


def coerce(key: str, value: Any, where: str) -> Any:
    """Checks a YAML value of a drift key; ``drift_thresholds`` may be a mapping."""
    if key == "reference_profile":
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path, got {short_repr(value)}")
        return value
    if key == "fail_on_drift":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {short_repr(value)}")
        return value
    if key == "drift_share":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
        return float(value)
    if isinstance(value, dict):  # {psi: 0.25, "age:js": 0.3, ks: off}; YAML reads off as false
        return [f"{k}={'off' if v is None or v is False else v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(
        f"{where}: expected a mapping of metric (or feature:metric) to threshold, got {short_repr(value)}"
    )


def validate(config: Any) -> None:
    """Parses the thresholds (ConfigError on a bad one) and checks the drift share."""
    dm.parse_thresholds(config.drift_thresholds, config.drift_share)
    if config.fail_on_drift and not config.reference_profile:
        raise ConfigError("'fail_on_drift' needs 'reference_profile' (pass --reference-profile)")
