"""Cross-field rules of the scoring settings, checked before any model or data is read.

Each check is a generator of problems (one message per problem, naming what
to fix), so that a command reports every problem at once. A check that stops
early stops only itself. Types and unknown keys are checked before, by the
option models (:mod:`.schema`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from keras_batch_score.pipelines.options.schema import SETTINGS
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.drift import metrics as dm
from keras_batch_score.transforms.postprocess.explain import REFERENCE_MEAN
from keras_batch_score.transforms.postprocess.privacy import MECHANISMS

MAX_EXPLAIN_STEPS = 1024
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
Check = Callable[[Any], Iterator[str]]


def flag_and_key(key: str) -> str:
    """``clip_min`` -> ``--clip-min (clip_min)``: the flag and the YAML key of a setting."""
    return f"--{key.replace('_', '-')} ({key})"


def _members(config: Any) -> list[Any]:
    from keras_batch_score.pipelines.planning.models import parse_members

    return parse_members(config.model, config.ensemble_weights)


def check_choices(config: Any) -> Iterator[str]:
    """Settings with few allowed values (flags are checked by argparse; YAML values here)."""
    for key, setting in SETTINGS.items():
        value = getattr(config, key)
        choices = setting.flag.choices
        if choices and key != "backend" and value is not None and value not in choices:
            yield f"'{key}' must be one of {', '.join(choices)}, got {value!r}"


def check_run(config: Any) -> Iterator[str]:
    """Batch sizes, shards, progress interval, backend and precision."""
    from keras_batch_score.transforms.model.backends import check_backend

    if config.batch_size < 1:
        yield f"'batch_size' must be >= 1, got {config.batch_size}"
    elif config.min_batch_size is not None and not 1 <= config.min_batch_size <= config.batch_size:
        yield (
            f"'min_batch_size' must be between 1 and batch_size ({config.batch_size}), "
            f"got {config.min_batch_size}"
        )
    try:
        check_backend(config.backend, config.precision)  # known, installed, float32 when converted
    except ConfigError as e:
        yield str(e)
    if config.backend != "keras" and config.mc_dropout_samples:
        yield (
            f"--mc-dropout-samples runs its own stochastic Keras passes, not --backend "
            f"{config.backend}: use --backend keras with it"
        )
    if config.num_shards < 0:
        yield f"'num_shards' must be >= 0, got {config.num_shards}"
    if config.progress_seconds <= 0:
        yield f"'progress_seconds' must be > 0, got {config.progress_seconds}"


def check_columns(config: Any) -> Iterator[str]:
    """Id and feature columns: no duplicates, no overlap, no empty feature list."""
    dupes = sorted({c for c in config.id_columns if config.id_columns.count(c) > 1})
    if dupes:
        yield f"'id_columns' lists {dupes} more than once"
    if config.feature_columns is not None:
        if not config.feature_columns:
            yield "'feature_columns' is empty: list at least one column or leave it unset"
        overlap = sorted(set(config.feature_columns) & set(config.id_columns))
        if overlap:
            yield f"columns {overlap} are both id (passthrough) and feature columns"


def check_models(config: Any) -> Iterator[str]:
    """Model names and weights, ``--model-sha256``, A/B split."""
    if not config.model:
        return  # reported as a missing required setting
    try:
        members = _members(config)
    except ConfigError as e:
        yield str(e)
        return
    if config.model_sha256 is not None:
        if not isinstance(config.model_sha256, str) or not HEX64.match(config.model_sha256):
            yield "'model_sha256' must be 64 hexadecimal digits (the output of sha256sum)"
        elif len(config.model) != 1:
            yield "'model_sha256' pins a single --model; it cannot pin an ensemble"
    if config.ab_split:
        yield from _check_ab_split(config, {m.name for m in members})
    if config.shadow_model and "shadow" in {m.name for m in members}:
        yield (
            "a --model is named 'shadow', which --shadow-model uses; name it otherwise "
            "(--model name=path)"
        )


def _check_ab_split(config: Any, names: set[str]) -> Iterator[str]:
    if set(config.ab_split) != names:
        yield (
            f"'ab_split' names {sorted(config.ab_split)} must be exactly the model names "
            f"{sorted(names)}; name the models with --model name=path"
        )
    shares = list(config.ab_split.values())
    if any(not s >= 0 for s in shares) or not abs(sum(shares) - 1.0) < 1e-6:
        yield f"'ab_split' shares must be >= 0 and sum to 1, got {config.ab_split}"
    if not config.id_columns:
        yield "'ab_split' routes rows by a hash of the id columns: pass --id-column"
    if config.ensemble_weights or config.keep_member_predictions:
        yield "'ab_split' routes each row to one model; it cannot be combined with ensemble options"


def check_postprocess(config: Any) -> Iterator[str]:
    """Clip bounds, target standardization, top-k and MC dropout."""
    for key in ("clip_min", "clip_max", "target_mean", "target_std"):
        value = getattr(config, key)
        if value is None:
            continue
        with np.errstate(over="ignore"):
            as32 = np.float32(value)
        if not np.isfinite(as32):
            yield (
                f"{flag_and_key(key)} must be a finite number within float32 range "
                f"(|x| <= 3.4e38), got {value}"
            )
        elif key == "target_std" and not as32 > 0:
            yield (f"{flag_and_key(key)} must be > 0 and not round to 0 as a float32, got {value}")
    lo, hi = config.clip_min, config.clip_max
    if lo is not None and hi is not None and lo > hi:
        yield f"--clip-min ({lo}) is greater than --clip-max ({hi})"
    if (config.target_mean is None) != (config.target_std is None):
        yield (
            "--target-mean and --target-std ('target_mean' and 'target_std') go together: "
            "set both or neither"
        )
    if config.top_k is not None:
        if config.top_k < 1:
            yield f"'top_k' must be >= 1, got {config.top_k}"
        if not config.class_names:
            yield "'top_k' needs 'class_names' (a file with one class name per line)"
    if config.mc_dropout_samples < 0 or config.mc_dropout_samples == 1:
        yield f"'mc_dropout_samples' must be 0 (off) or >= 2, got {config.mc_dropout_samples}"


def check_drift(config: Any) -> Iterator[str]:
    """Drift thresholds and share; ``--fail-on-drift`` needs a profile."""
    try:
        dm.parse_thresholds(config.drift_thresholds, config.drift_share)
    except ConfigError as e:
        yield str(e)
    if config.fail_on_drift and not config.reference_profile:
        yield "'fail_on_drift' needs 'reference_profile' (pass --reference-profile)"


def check_explain(config: Any) -> Iterator[str]:
    """Explanations, OOD scores and the adversarial check."""
    if not 1 <= config.explain_steps <= MAX_EXPLAIN_STEPS:
        yield (
            f"'explain_steps' must be between 1 and {MAX_EXPLAIN_STEPS}, got {config.explain_steps}"
        )
    if config.explain_baseline == REFERENCE_MEAN and not config.reference_profile:
        yield "--explain-baseline reference-mean needs --reference-profile (the means come from it)"
    if config.ood_threshold is not None and not 0.0 <= config.ood_threshold < 1.0:
        yield f"'ood_threshold' must be in [0, 1), got {config.ood_threshold}"
    ood = config.ood_score or config.ood_threshold is not None
    if ood and not config.reference_profile:
        yield "--ood-score / --ood-threshold need --reference-profile (the reference distribution)"
    if not config.adversarial_epsilon > 0:
        yield f"'adversarial_epsilon' must be > 0, got {config.adversarial_epsilon}"
    if not config.adversarial_threshold >= 0:
        yield f"'adversarial_threshold' must be >= 0, got {config.adversarial_threshold}"
    if (config.explain or config.adversarial_check) and config.precision != "float32":
        yield (
            "--explain and --adversarial-check compute gradients in float32; "
            f"drop --precision {config.precision}"
        )


def check_noise(config: Any) -> Iterator[str]:
    """Privacy noise parameters, and no option that releases un-noised outputs."""
    noise = config.output_noise
    if noise is None:
        given = [k for k in ("epsilon", "delta", "sensitivity") if getattr(config, k) is not None]
        if given:
            yield f"{flag_and_key(given[0])} is only used with --output-noise laplace|gaussian"
        return
    if noise not in MECHANISMS:
        return  # reported by check_choices
    for key in ("epsilon", "sensitivity"):
        value = getattr(config, key)
        if value is None:
            yield f"--output-noise {noise} needs {flag_and_key(key)}"
        elif not (math.isfinite(value) and value > 0):
            yield f"{flag_and_key(key)} must be a finite number > 0, got {value}"
    if noise == "gaussian":
        if config.delta is None:
            yield f"--output-noise gaussian needs {flag_and_key('delta')}"
        elif not 0 < config.delta < 1:
            yield f"{flag_and_key('delta')} must be in (0, 1), got {config.delta}"
    elif config.delta is not None:
        yield f"{flag_and_key('delta')} is only used with --output-noise gaussian"
    yield from _raw_outputs(config)


def _raw_outputs(config: Any) -> Iterator[str]:
    """Output noise cannot cover columns that release un-noised model outputs."""
    try:
        several = len(_members(config)) > 1 and not config.ab_split
    except ConfigError:
        several = False  # reported by check_models
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
            yield (
                f"--output-noise cannot be combined with this run's options: {why}, which the "
                "noise would not cover; drop that option"
            )
            return


def check_class_outputs(config: Any) -> Iterator[str]:
    """Per-class probability columns and multi-label thresholds."""
    if config.probability_columns and not config.class_names:
        yield "--probability-columns (probability_columns) needs --class-names"
    if config.multi_label_threshold is not None or config.multi_label_thresholds:
        if not config.class_names:
            yield "multi-label thresholds need --class-names (one name per class)"
        if config.top_k is not None:
            yield "--multi-label-threshold(s) writes a labels column instead of top-k: drop --top-k"
        t = config.multi_label_threshold
        if t is not None and not math.isfinite(t):
            yield f"{flag_and_key('multi_label_threshold')} must be a finite number, got {t}"


CHECKS: tuple[Check, ...] = (
    check_choices,
    check_run,
    check_models,
    check_postprocess,
    check_drift,
    check_explain,
    check_noise,
    check_class_outputs,
    check_columns,
)


def problems(config: Any, checks: tuple[Check, ...] = CHECKS) -> list[str]:
    """Every problem the checks find in ``config``, in check order."""
    found: list[str] = []
    for check in checks:
        found.extend(check(config))
    return found
