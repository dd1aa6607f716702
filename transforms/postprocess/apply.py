"""After inference, the numbers: ensemble -> calibrate -> inverse standardization -> clip -> top-k.

Pure numpy (with :mod:`keras_batch_score.transforms.postprocess.ensemble` and
:mod:`keras_batch_score.transforms.postprocess.calibration`); the Beam wiring is in
:mod:`keras_batch_score.transforms.postprocess.transforms`.

Clipping runs after inverse standardization (not before, as a first sketch
had it) so that ``--clip-min 0`` means "no negative predictions" in the
target's own units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keras_batch_score.transforms.model.output_keys import SHADOW, member_key, std_key
from keras_batch_score.transforms.postprocess import ensemble
from keras_batch_score.transforms.postprocess.class_outputs import LABELS, class_matrix, multi_label
from keras_batch_score.transforms.postprocess.plan import (
    TOP_K_LABELS,
    TOP_K_SCORES,
    PostprocessPlan,
)
from keras_batch_score.transforms.postprocess.privacy import add_noise


def top_k(probs: np.ndarray, k: int, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely classes of each row, most likely first.

    Args:
        probs: ``(n, c)`` class probabilities, or ``(n,)`` positive-class
            probabilities of a binary model (read as ``[1 - p, p]``).
        k: Number of classes to return (at most ``c``).
        class_names: ``c`` names in output order.

    Returns:
        ``(labels, scores)``, both ``(n, min(k, c))``; ties go to the lower class index.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.shape[1] != len(class_names):
        raise ValueError(
            f"the model outputs {p.shape[1]} classes, the class names file lists {len(class_names)}"
        )
    k = min(k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    names = np.asarray(class_names, dtype=object)
    return names[order], np.take_along_axis(p, order, axis=1)


def _value_transforms(value: np.ndarray, plan: PostprocessPlan) -> np.ndarray:
    """Calibration, inverse standardization and clipping (the shadow model's outputs get these too)."""
    if plan.calibration is not None:
        value = plan.calibration.apply(value).astype(np.float32)
    if plan.target_std is not None:
        value = value * np.float32(plan.target_std) + np.float32(plan.target_mean)
    if plan.clip_min is not None or plan.clip_max is not None:
        value = np.clip(value, plan.clip_min, plan.clip_max)
    return np.asarray(value, dtype=np.float32)


def postprocess_predictions(
    predictions: Mapping[str, np.ndarray],
    plan: PostprocessPlan,
    keys: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Member/raw outputs of one batch -> the final prediction arrays, keyed like the output columns.

    Batches scored by a single model (a plain run, an A/B arm or the
    fallback) have their outputs under the plain keys; ensemble batches under
    member keys. Ensemble rows scored by the fallback get NaN std. With
    ``plan.noise``, ``keys`` (one uint64 per row, :func:`keras_batch_score.transforms.postprocess.privacy.row_keys`)
    seed each row's noise; the noise is added last, then the clip bounds are
    applied again (post-processing, which keeps the privacy guarantee), and
    every column derived from the prediction (top-k, ``prob_``, ``labels``)
    is computed from the noisy value.
    """
    out: dict[str, np.ndarray] = {}
    names = [m.name for m in plan.members]
    weights = [m.weight for m in plan.members]
    changes_values = plan.calibration is not None or plan.target_std is not None
    changes_values |= plan.clip_min is not None or plan.clip_max is not None
    changes_values |= plan.noise is not None
    for col in plan.outputs:
        member_values = [predictions.get(member_key(col.key, n)) for n in names]
        combined = plan.is_ensemble and all(v is not None for v in member_values)
        # One model's output and nothing to change: kept as the model gave it (int64 stays exact).
        as_given = not combined and not changes_values
        if combined:
            value = ensemble.combine(member_values, plan.method, weights)
            member_std = [predictions.get(member_key(std_key(col.key), n)) for n in names]
            std = ensemble.spread(
                member_values,
                weights,
                member_std if all(s is not None for s in member_std) else None,
            )
        else:
            value = (
                predictions[col.key] if as_given else np.asarray(predictions[col.key], np.float32)
            )
            std = predictions.get(std_key(col.key))
            if std is None and plan.emits_std:
                std = np.full(value.shape, np.nan, dtype=np.float32)
        if plan.calibration is not None:
            value = plan.calibration.apply(value).astype(np.float32)
        if plan.target_std is not None:
            value = value * np.float32(plan.target_std) + np.float32(plan.target_mean)
            std = None if std is None else std * np.float32(plan.target_std)
        if plan.clip_min is not None or plan.clip_max is not None:
            value = np.clip(value, plan.clip_min, plan.clip_max)
        if plan.noise is not None:
            if keys is None:
                raise ValueError("output noise needs the rows' keys")
            value = add_noise(value, keys, plan.noise, plan.outputs.index(col))
            if plan.clip_min is not None or plan.clip_max is not None:
                value = np.clip(value, plan.clip_min, plan.clip_max)
        out[col.key] = value if as_given else np.asarray(value, dtype=np.float32)
        shadow = predictions.get(member_key(col.key, SHADOW)) if plan.shadow else None
        if shadow is not None:
            out[member_key(col.key, SHADOW)] = _value_transforms(shadow, plan)
        if plan.emits_std:
            out[std_key(col.key)] = np.asarray(std, dtype=np.float32)
        if plan.keep_member_predictions and plan.is_ensemble:
            for n, v in zip(names, member_values, strict=True):
                fill = v if combined else np.full(value.shape, np.nan, dtype=np.float32)
                out[member_key(col.key, n)] = np.asarray(fill, dtype=np.float32)
    if plan.top_k and plan.class_names:
        labels, scores = top_k(out[plan.outputs[0].key], plan.top_k, plan.class_names)
        out[TOP_K_LABELS] = labels
        out[TOP_K_SCORES] = scores
    if plan.probability_columns:
        probs = class_matrix(out[plan.outputs[0].key])
        for j, column in enumerate(plan.probability_columns):
            out[column] = np.ascontiguousarray(probs[:, j])
    if plan.multi_label_thresholds is not None and plan.class_names:
        out[LABELS] = multi_label(
            out[plan.outputs[0].key], plan.multi_label_thresholds, plan.class_names
        )
    return out


def final_subjects(plan: PostprocessPlan) -> dict[str, str]:
    """How post-processing reasons name each final output: ``prediction`` or ``prediction 'col'``."""
    if len(plan.outputs) == 1:
        return {plan.outputs[0].key: "prediction"}
    return {o.key: f"prediction {o.column!r}" for o in plan.outputs}
