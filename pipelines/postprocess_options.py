"""Planning of ensembles, calibration, post-transforms, uncertainty and A/B routing.

The settings themselves (flags, YAML keys, types, defaults, cross-field
checks) are defined in :mod:`keras_batch_score.pipelines.options`; this module
parses the ``--model`` members and builds the post-processing plan.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_batch_score.pipelines.options import SETTINGS
from keras_batch_score.transforms.core.errors import ConfigError

# The post-processing settings (ScoreConfig field name -> default), from the option schema.
FIELDS: dict[str, Any] = {
    key: setting.default() for key, setting in SETTINGS.items() if setting.section == "postprocess"
}

_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of an ensemble or A/B split.

    Attributes:
        name: Short name (used in ``Model[name]`` step labels and ``prediction__<name>`` columns).
        path: Model path.
        weight: Ensemble weight (normalized later).
    """

    name: str
    path: str
    weight: float = 1.0


def _default_name(path: str, taken: set[str]) -> str:
    base = path.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".keras", ".h5", ".hdf5"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def parse_members(
    models: Sequence[Any], weights: Mapping[str, float] | None = None
) -> list[Member]:
    """Members from ``--model`` values (``path`` or ``name=path``) or YAML mappings.

    Raises:
        ConfigError: for duplicate names, weights naming no member, or bad weights.
    """
    members: list[Member] = []
    taken: set[str] = set()
    for entry in models:
        if isinstance(entry, Mapping):
            name, path, weight = (
                entry.get("name") or "",
                entry["path"],
                float(entry.get("weight", 1.0)),
            )
        else:
            match = _NAME.match(entry) if "://" not in entry.split("=", 1)[0] else None
            name, path, weight = (
                (match.group(1), match.group(2), 1.0) if match else ("", entry, 1.0)
            )
        if name and not _VALID_NAME.match(name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-' or '.'")
        name = name or _default_name(path, taken)
        if name in taken:
            raise ConfigError(
                f"model name {name!r} is used twice; give each --model a distinct name=path"
            )
        taken.add(name)
        members.append(Member(name, path, weight))
    if weights:
        unknown = sorted(set(weights) - taken)
        if unknown:
            raise ConfigError(
                f"ensemble_weights name(s) {unknown} match no model; models are {sorted(taken)}"
            )
        members = [dataclasses.replace(m, weight=weights.get(m.name, m.weight)) for m in members]
    for m in members:
        if not (math.isfinite(m.weight) and m.weight >= 0):
            raise ConfigError(
                f"--ensemble-weights: the weight of model {m.name!r} must be a finite number >= 0, "
                f"got {m.weight}"
            )
    if members and not sum(m.weight for m in members) > 0:
        raise ConfigError(
            "--ensemble-weights: the weights are all 0; give at least one model a positive weight"
        )
    return members


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


# --------------------------------------------------------------------------- plan time


def model_spec(config: Any, path: str) -> Any:
    """The ModelSpec of ``path`` with the job's loading options."""
    from keras_batch_score.transforms.model.load import ModelSpec

    return ModelSpec(
        path=path,
        custom_objects=tuple(config.custom_objects),
        safe_mode=not config.unsafe_deserialization,
        signature=config.signature,
        precision=config.precision,
        backend=getattr(config, "backend", "keras"),
    )


def primary_path(config: Any) -> str:
    """Path of the first model (the only one of a plain run)."""
    return parse_members(config.model, config.ensemble_weights)[0].path


def _read_text(path: str, what: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            return f.read().decode("utf-8")
    except Exception as e:
        raise ConfigError(f"{what} {path} cannot be read: {e}") from None


def _describe(outputs: Sequence[Any]) -> str:
    return ", ".join(f"{o.name}{tuple(o.shape)}" for o in outputs)


def plan_postprocess(
    config: Any, primary_spec: Any, primary: Any, feature_widths: Mapping[str, int]
) -> Any:
    """Loads and checks every other model and post-processing input; None when nothing is configured.

    Args:
        config: The ScoreConfig.
        primary_spec: ModelSpec of the first model (already loaded and health-checked).
        primary: Its LoadedModel.
        feature_widths: Values per row per model input.

    Raises:
        ConfigError: for a member whose outputs differ from the first model's, a
            calibration or class-names file that does not fit the model, MC
            dropout on a SavedModel, and so on.
    """
    from keras_batch_score.transforms.model.load import health_check, load
    from keras_batch_score.transforms.postprocess import apply as pp
    from keras_batch_score.transforms.postprocess.calibration import Calibration

    members = parse_members(config.model, config.ensemble_weights)
    from keras_batch_score.pipelines import output_options

    trivial = len(members) == 1 and not any(
        config.__dict__.get(k) for k in FIELDS if k not in ("ensemble", "keep_member_predictions")
    )
    trivial = trivial and not output_options.needs_postprocess(config)
    if trivial:
        return None

    def signature(model: Any) -> list[Any]:
        # a single output may be named anything; several outputs are matched by name
        if len(model.outputs) == 1:
            return [tuple(model.outputs[0].shape)]
        return sorted((o.name, tuple(o.shape)) for o in model.outputs)

    shape = signature(primary)
    runs = [pp.MemberRun(members[0].name, primary_spec, members[0].weight, primary.model_id)]
    loaded = [primary]

    def load_checked(name: str, path: str, role: str) -> Any:
        model = load(model_spec(config, path))
        health_check(model, feature_widths)
        if signature(model) != shape:
            raise ConfigError(
                f"{role} {name!r} ({path}) has outputs {_describe(model.outputs)}, but "
                f"{members[0].name!r} ({members[0].path}) has {_describe(primary.outputs)}: "
                "all models of a run must have the same output names and shapes"
            )
        return model

    for m in members[1:]:
        model = load_checked(m.name, m.path, "model")
        runs.append(pp.MemberRun(m.name, model_spec(config, m.path), m.weight, model.model_id))
        loaded.append(model)
    fallback = None
    if config.fallback_model:
        fb_model = load_checked("fallback", config.fallback_model, "fallback model")
        fallback = pp.MemberRun(
            "fallback", model_spec(config, config.fallback_model), 1.0, fb_model.model_id
        )
    if config.mc_dropout_samples:
        for run, model in zip(runs, loaded, strict=True):
            if pp.keras_model_of(model) is None:
                raise ConfigError(
                    f"model {run.name!r} ({run.spec.path}) is a SavedModel: --mc-dropout-samples needs "
                    "a .keras or .h5 model (training mode)"
                )
    outputs = pp.output_columns(primary.outputs)
    single = len(outputs) == 1
    width = (
        1
        if single and not primary.outputs[0].shape
        else (int(np.prod(primary.outputs[0].shape)) if single else 0)
    )
    calibration = None
    if config.calibration:
        if not single:
            raise ConfigError("--calibration needs a model with one output; this model has several")
        try:
            calibration = Calibration.from_json(_read_text(config.calibration, "calibration file"))
        except ValueError as e:
            raise ConfigError(f"calibration file {config.calibration}: {e}") from None
        bad = nonfinite_parameter(calibration.params)
        if bad is not None:
            raise ConfigError(
                f"--calibration {config.calibration}: parameter {bad!r} is not a finite number; "
                "re-fit it with `batch-score calibrate`"
            )
        if calibration.num_classes != width:
            raise ConfigError(
                f"calibration file {config.calibration} was fitted on {calibration.num_classes}-wide scores, "
                f"but the model outputs {width} value(s) per row"
            )
    class_names = None
    if config.class_names:
        if not single:
            raise ConfigError("--class-names needs a model with one output; this model has several")
        class_names = tuple(
            line.strip()
            for line in _read_text(config.class_names, "class names file").splitlines()
            if line.strip()
        )
        expected = 2 if width == 1 else width
        if len(class_names) != expected:
            raise ConfigError(
                f"class names file {config.class_names} lists {len(class_names)} names, the model outputs "
                f"{expected} classes"
                + (
                    " (a one-output binary model has 2 classes: negative, positive)"
                    if width == 1
                    else ""
                )
            )
    if config.top_k and config.top_k > (2 if width == 1 else width):
        raise ConfigError(
            f"'top_k' is {config.top_k}, but the model has only {2 if width == 1 else width} classes"
        )
    from keras_batch_score.transforms.io.schema import LOCATOR_COLUMNS

    extras = output_options.plan_fields(
        config,
        class_names,
        width,
        tuple(config.id_columns) or LOCATOR_COLUMNS,
        load_checked,
    )
    label = (
        f"ensemble[{config.ensemble}](" + ",".join(f"{r.name}={r.model_id}" for r in runs) + ")"
        if len(runs) > 1
        else runs[0].model_id
    )
    return pp.PostprocessPlan(
        members=tuple(runs),
        outputs=outputs,
        method=config.ensemble,
        keep_member_predictions=config.keep_member_predictions,
        calibration=calibration,
        clip_min=config.clip_min,
        clip_max=config.clip_max,
        target_mean=config.target_mean,
        target_std=config.target_std,
        class_names=class_names,
        top_k=config.top_k,
        mc_samples=config.mc_dropout_samples,
        seed=config.seed,
        ab_split=tuple(config.ab_split.items()) if config.ab_split else None,
        id_columns=tuple(config.id_columns),
        fallback=fallback,
        ensemble_label=label,
        **extras,
    )
