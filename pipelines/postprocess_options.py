"""Flags, YAML keys and checks for ensembles, calibration, post-transforms, uncertainty and A/B.

:mod:`keras_batch_score.pipelines.config` calls into this module (a few hook lines) so the
scoring configuration stays one flat :class:`~keras_batch_score.pipelines.config.ScoreConfig`:
every option here is both a ``--flag`` and a YAML key of the same name.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.postprocess.ensemble import METHODS as ENSEMBLE_METHODS

# ScoreConfig field name -> default. Keep in sync with ScoreConfig.
FIELDS: dict[str, Any] = {
    "ensemble": "mean",
    "ensemble_weights": None,
    "keep_member_predictions": False,
    "calibration": None,
    "clip_min": None,
    "clip_max": None,
    "target_mean": None,
    "target_std": None,
    "class_names": None,
    "top_k": None,
    "mc_dropout_samples": 0,
    "seed": None,
    "ab_split": None,
    "fallback_model": None,
}


def _name_value_pairs(text: str, flag: str) -> dict[str, float]:
    """``a=0.9,b=0.1`` -> ``{"a": 0.9, "b": 0.1}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or number != number:
            raise ConfigError(
                f"{flag} {text!r}: expected name=number pairs separated by commas, e.g. a=0.9,b=0.1"
            )
        if name.strip() in out:
            raise ConfigError(f"{flag} {text!r}: {name.strip()!r} appears twice")
        out[name.strip()] = number
    return out


def add_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the post-processing flags to ``parser`` (unset flags stay absent)."""
    s = argparse.SUPPRESS
    add = parser.add_argument
    add(
        "--ensemble",
        choices=ENSEMBLE_METHODS,
        default=s,
        help="How to combine several --model members (default: mean).",
    )
    add(
        "--ensemble-weights",
        dest="ensemble_weights",
        type=lambda v: _name_value_pairs(v, "--ensemble-weights"),
        default=s,
        help="Member weights, e.g. a=2,b=1 (default: equal).",
    )
    add(
        "--keep-member-predictions",
        dest="keep_member_predictions",
        action="store_true",
        default=s,
        help="Also write each member's output as prediction__<name>.",
    )
    add(
        "--calibration",
        default=s,
        help="Calibration JSON written by `batch-score calibrate`, applied after the ensemble.",
    )
    add("--clip-min", dest="clip_min", type=float, default=s, help="Clip predictions below.")
    add("--clip-max", dest="clip_max", type=float, default=s, help="Clip predictions above.")
    add(
        "--target-mean",
        dest="target_mean",
        type=float,
        default=s,
        help="Undo target standardization: prediction * target_std + target_mean.",
    )
    add("--target-std", dest="target_std", type=float, default=s, help="See --target-mean.")
    add(
        "--class-names",
        dest="class_names",
        default=s,
        help="Text file with one class name per line, in model output order.",
    )
    add(
        "--top-k",
        dest="top_k",
        type=int,
        default=s,
        help="Write top_k_labels / top_k_scores with the K most likely classes.",
    )
    add(
        "--mc-dropout-samples",
        dest="mc_dropout_samples",
        type=int,
        default=s,
        help="MC dropout: T stochastic passes per batch; prediction = mean, plus prediction_std.",
    )
    add(
        "--seed",
        type=int,
        default=s,
        help="Seed for MC dropout and --output-noise (reproducible results).",
    )
    add(
        "--ab-split",
        dest="ab_split",
        type=lambda v: _name_value_pairs(v, "--ab-split"),
        default=s,
        help="Route rows between named models by a hash of the id columns, e.g. a=0.9,b=0.1.",
    )
    add(
        "--fallback-model",
        dest="fallback_model",
        default=s,
        help="Model that scores the rows on which the primary model raises or gives NaN/Inf.",
    )


def coerce(key: str, value: Any, where: str) -> Any:
    """Checks a YAML value for one of :data:`FIELDS`."""
    if key in ("ensemble_weights", "ab_split"):
        if isinstance(value, str):
            return _name_value_pairs(value, where)
        if isinstance(value, Mapping) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
        ):
            return {str(k): float(v) for k, v in value.items()}
        raise ConfigError(f"{where}: expected a mapping of name: number, got {value!r}")
    if key == "keep_member_predictions":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if key in ("clip_min", "clip_max", "target_mean", "target_std"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if key in ("top_k", "mc_dropout_samples", "seed"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def coerce_models(value: Sequence[Any], where: str) -> list[Any]:
    """YAML ``model:``/``models:`` entries: paths, ``name=path`` strings or ``{name, path, weight}``."""
    out: list[Any] = []
    for entry in value:
        if isinstance(entry, str):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise ConfigError(
                f"{where}: each model is a path or a mapping with 'path' (and 'name', 'weight'), got {entry!r}"
            )
        unknown = sorted(set(entry) - {"name", "path", "weight"})
        if unknown:
            raise ConfigError(f"{where}: unknown model key(s) {unknown}; use name, path, weight")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where}: model weight must be a number, got {weight!r}")
        out.append(
            {
                "name": str(entry.get("name") or ""),
                "path": str(entry["path"]),
                "weight": float(weight),
            }
        )
    return out


def _flag(key: str) -> str:
    """``clip_min`` -> ``--clip-min (clip_min)``: the flag and the YAML key of a setting."""
    return f"--{key.replace('_', '-')} ({key})"


def _check_float32(config: Any) -> None:
    """Clip bounds and target standardization must be finite float32 numbers (predictions are float32)."""
    for key in ("clip_min", "clip_max", "target_mean", "target_std"):
        value = getattr(config, key)
        if value is None:
            continue
        with np.errstate(over="ignore"):
            as32 = np.float32(value)
        if not np.isfinite(as32):
            raise ConfigError(
                f"{_flag(key)} must be a finite number within float32 range "
                f"(|x| <= 3.4e38), got {value}"
            )
    std = config.target_std
    if std is not None and not np.float32(std) > 0:
        raise ConfigError(
            f"{_flag('target_std')} must be > 0 and not round to 0 as a float32, got {std}"
        )


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


def validate(config: Any) -> None:
    """Cross-checks the post-processing settings of a ScoreConfig.

    Raises:
        ConfigError: naming the setting to fix.
    """
    from keras_batch_score.pipelines.planning.models import parse_members

    members = parse_members(config.model, config.ensemble_weights)
    if not members:
        raise ConfigError("no 'model' given: pass --model PATH")
    if config.ensemble not in ENSEMBLE_METHODS:
        raise ConfigError(f"'ensemble' must be one of {ENSEMBLE_METHODS}, got {config.ensemble!r}")
    _check_float32(config)
    if (
        config.clip_min is not None
        and config.clip_max is not None
        and config.clip_min > config.clip_max
    ):
        raise ConfigError(
            f"--clip-min ({config.clip_min}) is greater than --clip-max ({config.clip_max})"
        )
    if (config.target_mean is None) != (config.target_std is None):
        raise ConfigError(
            "--target-mean and --target-std ('target_mean' and 'target_std') go together: "
            "set both or neither"
        )
    if config.top_k is not None:
        if config.top_k < 1:
            raise ConfigError(f"'top_k' must be >= 1, got {config.top_k}")
        if not config.class_names:
            raise ConfigError("'top_k' needs 'class_names' (a file with one class name per line)")
    if config.mc_dropout_samples < 0 or config.mc_dropout_samples == 1:
        raise ConfigError(
            f"'mc_dropout_samples' must be 0 (off) or >= 2, got {config.mc_dropout_samples}"
        )
    if config.ab_split:
        names = {m.name for m in members}
        if set(config.ab_split) != names:
            raise ConfigError(
                f"'ab_split' names {sorted(config.ab_split)} must be exactly the model names {sorted(names)}; "
                "name the models with --model name=path"
            )
        shares = list(config.ab_split.values())
        if any(not s >= 0 for s in shares) or not abs(sum(shares) - 1.0) < 1e-6:
            raise ConfigError(f"'ab_split' shares must be >= 0 and sum to 1, got {config.ab_split}")
        if not config.id_columns:
            raise ConfigError(
                "'ab_split' routes rows by a hash of the id columns: pass --id-column"
            )
        if config.ensemble_weights or config.keep_member_predictions:
            raise ConfigError(
                "'ab_split' routes each row to one model; it cannot be combined with ensemble options"
            )
