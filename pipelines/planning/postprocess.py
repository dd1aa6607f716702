"""Planning what follows inference: the other models (members, fallback, shadow) and files.

:func:`plan_postprocess` always returns a :class:`PostprocessPlan`; for a plain
run (:func:`is_plain`) it is the trivial plan of one member and nothing else,
which scores exactly like the model on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keras_batch_score.pipelines import output_options
from keras_batch_score.pipelines.planning.models import ModelsPlan
from keras_batch_score.pipelines.postprocess_options import FIELDS, nonfinite_parameter
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io.schema import LOCATOR_COLUMNS
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.mc_dropout import keras_model_of
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.postprocess.calibration import Calibration
from keras_batch_score.transforms.postprocess.plan import MemberRun, PostprocessPlan, output_columns


def is_plain(models: ModelsPlan) -> bool:
    """Whether the run is one model and nothing else (no ensemble, transform, A/B, fallback, ...)."""
    config = models.config
    plain = len(models.members) == 1 and not any(
        getattr(config, k, None) for k in FIELDS if k not in ("ensemble", "keep_member_predictions")
    )
    return plain and not output_options.needs_postprocess(config)


def _read_text(path: str, what: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            return f.read().decode("utf-8")
    except Exception as e:
        raise ConfigError(f"{what} {path} cannot be read: {e}") from None


def _describe(outputs: Sequence[TensorInfo]) -> str:
    return ", ".join(f"{o.name}{tuple(o.shape)}" for o in outputs)


def _signature(model: LoadedModel) -> list[object]:
    """A single output may be named anything; several outputs are matched by name."""
    if len(model.outputs) == 1:
        return [tuple(model.outputs[0].shape)]
    return sorted((o.name, tuple(o.shape)) for o in model.outputs)


def _calibration(path: str, width: int) -> Calibration:
    try:
        calibration = Calibration.from_json(_read_text(path, "calibration file"))
    except ValueError as e:
        raise ConfigError(f"calibration file {path}: {e}") from None
    bad = nonfinite_parameter(calibration.params)
    if bad is not None:
        raise ConfigError(
            f"--calibration {path}: parameter {bad!r} is not a finite number; "
            "re-fit it with `batch-score calibrate`"
        )
    if calibration.num_classes != width:
        raise ConfigError(
            f"calibration file {path} was fitted on {calibration.num_classes}-wide scores, "
            f"but the model outputs {width} value(s) per row"
        )
    return calibration


def _class_names(path: str, width: int) -> tuple[str, ...]:
    names = tuple(
        line.strip() for line in _read_text(path, "class names file").splitlines() if line.strip()
    )
    expected = 2 if width == 1 else width
    if len(names) != expected:
        raise ConfigError(
            f"class names file {path} lists {len(names)} names, the model outputs "
            f"{expected} classes"
            + (
                " (a one-output binary model has 2 classes: negative, positive)"
                if width == 1
                else ""
            )
        )
    return names


def plan_postprocess(
    models: ModelsPlan, primary: LoadedModel, feature_widths: Mapping[str, int]
) -> PostprocessPlan:
    """Loads and checks every other model and post-processing input.

    Args:
        models: The run's models (the first one already loaded and health-checked).
        primary: The first model, loaded.
        feature_widths: Values per row per model input.

    Raises:
        ConfigError: for a member whose outputs differ from the first model's, a
            calibration or class-names file that does not fit the model, MC
            dropout on a SavedModel, and so on.
    """
    config, members = models.config, models.members
    shape = _signature(primary)
    runs = [MemberRun(members[0].name, models.spec, members[0].weight, primary.model_id)]
    loaded = [primary]

    def load_checked(name: str, path: str, role: str) -> LoadedModel:
        model = load(models.spec_of(path))
        health_check(model, feature_widths)
        if _signature(model) != shape:
            raise ConfigError(
                f"{role} {name!r} ({path}) has outputs {_describe(model.outputs)}, but "
                f"{members[0].name!r} ({members[0].path}) has {_describe(primary.outputs)}: "
                "all models of a run must have the same output names and shapes"
            )
        return model

    for m in members[1:]:
        model = load_checked(m.name, m.path, "model")
        runs.append(MemberRun(m.name, models.spec_of(m.path), m.weight, model.model_id))
        loaded.append(model)
    fallback = None
    if models.fallback:
        fb_model = load_checked("fallback", models.fallback, "fallback model")
        fallback = MemberRun("fallback", models.spec_of(models.fallback), 1.0, fb_model.model_id)
    if config.mc_dropout_samples:
        for run, model in zip(runs, loaded, strict=True):
            if keras_model_of(model) is None:
                raise ConfigError(
                    f"model {run.name!r} ({run.spec.path}) is a SavedModel: --mc-dropout-samples needs "
                    "a .keras or .h5 model (training mode)"
                )
    outputs = output_columns(primary.outputs)
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
        calibration = _calibration(config.calibration, width)
    class_names = None
    if config.class_names:
        if not single:
            raise ConfigError("--class-names needs a model with one output; this model has several")
        class_names = _class_names(config.class_names, width)
    if config.top_k and config.top_k > (2 if width == 1 else width):
        raise ConfigError(
            f"'top_k' is {config.top_k}, but the model has only {2 if width == 1 else width} classes"
        )
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
    return PostprocessPlan(
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
        ab_split=models.ab_split,
        id_columns=tuple(config.id_columns),
        fallback=fallback,
        ensemble_label=label,
        **extras,
    )
