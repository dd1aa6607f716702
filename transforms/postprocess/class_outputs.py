"""Per-class output columns: ``prob_<class>`` probabilities and multi-label ``labels``.

Pure numpy; :mod:`keras_batch_score.transforms.postprocess.apply` calls these on the final
predictions, so they see the same values as the ``prediction`` column (after
calibration, clipping and, with ``--output-noise``, the noise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from keras_batch_score.transforms.core.errors import ConfigError

PROB_PREFIX = "prob_"
LABELS = "labels"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe_name(name: str) -> str:
    """A column-safe form of a class name: characters other than ``[A-Za-z0-9_]`` become ``_``."""
    return _UNSAFE.sub("_", name.strip()) or "_"


def probability_columns(class_names: Sequence[str]) -> tuple[str, ...]:
    """``prob_<class>`` per class, in output order.

    Raises:
        ConfigError: when two class names give the same column name.
    """
    seen: dict[str, str] = {}
    columns = []
    for name in class_names:
        column = PROB_PREFIX + safe_name(name)
        if column in seen:
            raise ConfigError(
                f"--probability-columns: classes {seen[column]!r} and {name!r} both become column "
                f"{column!r}; rename one in the --class-names file"
            )
        seen[column] = name
        columns.append(column)
    return tuple(columns)


def class_matrix(probs: np.ndarray) -> np.ndarray:
    """``(n, c)`` per-class scores; a binary model's ``(n,)`` or ``(n, 1)`` output reads as ``[1 - p, p]``."""
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p = p.reshape(-1)
        return np.column_stack([1.0 - p, p])
    return p.reshape(p.shape[0], -1)


def multi_label(
    probs: np.ndarray, thresholds: Sequence[float], class_names: Sequence[str]
) -> np.ndarray:
    """Classes at or above their threshold, per row.

    Args:
        probs: ``(n, c)`` independent per-class scores (sigmoid outputs).
        thresholds: ``c`` thresholds.
        class_names: ``c`` names.

    Returns:
        An ``(n, c)`` object array: the class name where ``probs >= threshold``,
        else None, in class order (:func:`keras_batch_score.transforms.io.output_tables.to_predictions_table`
        writes it as a ``list<string>`` without the Nones).
    """
    p = np.asarray(probs, dtype=np.float32).reshape(len(probs), -1)
    mask = p >= np.asarray(thresholds, dtype=np.float32)[None, :]
    names = np.asarray(class_names, dtype=object)
    return np.where(mask, names[None, :], None)


def resolve_thresholds(
    class_names: Sequence[str], default: float | None, per_class: dict[str, float] | None
) -> tuple[float, ...]:
    """One threshold per class: ``per_class`` where given, else ``default``.

    Raises:
        ConfigError: for a class in ``per_class`` that the class names lack, or a
            class with no threshold.
    """
    per_class = per_class or {}
    unknown = sorted(set(per_class) - set(class_names))
    if unknown:
        shown = ", ".join(map(repr, unknown[:20])) + (
            f" … and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        )
        raise ConfigError(
            f"--multi-label-thresholds names class(es) {shown} that the --class-names file lacks"
        )
    missing = [c for c in class_names if c not in per_class]
    if missing and default is None:
        raise ConfigError(
            f"--multi-label-thresholds has no threshold for {len(missing)} class(es), e.g. "
            f"{missing[0]!r}; list every class or also pass --multi-label-threshold as the default"
        )
    return tuple(float(per_class.get(c, default)) for c in class_names)
