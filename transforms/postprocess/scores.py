"""Model scores as probabilities or logits: shape checks, conversions and label checks.

Scores come in two shapes:

* ``(n,)``: binary classifier, the positive-class probability (or logit);
* ``(n, k)``: ``k``-class probabilities (or logits).

Pure numpy, no Beam.
"""

from __future__ import annotations

import numpy as np

from keras_batch_score.transforms.postprocess.ensemble import softmax

INPUT_KINDS = ("probabilities", "logits")
_EPS = 1e-12


def as_scores(scores: np.ndarray) -> np.ndarray:
    """float64 scores, ``(n, 1)`` squeezed to ``(n,)``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim not in (1, 2):
        raise ValueError(f"scores must have shape (n,) or (n, k), got {s.shape}")
    return s


def detect_input_kind(scores: np.ndarray) -> str:
    """``probabilities`` if every value is in [0, 1] (and ``(n, k)`` rows sum to 1), else ``logits``."""
    s = as_scores(scores)
    if s.size == 0:
        return "probabilities"
    in_range = s.min() >= 0 and s.max() <= 1
    if s.ndim == 2:
        in_range = in_range and np.allclose(s.sum(axis=1), 1.0, atol=1e-3)
    return "probabilities" if in_range else "logits"


def to_probabilities(scores: np.ndarray, input_kind: str) -> np.ndarray:
    """Probabilities from probabilities (clipped) or logits (sigmoid / softmax)."""
    s = as_scores(scores)
    if input_kind == "probabilities":
        return np.clip(s, 0.0, 1.0)
    return sigmoid(s) if s.ndim == 1 else softmax(s, axis=-1)


def to_logits(scores: np.ndarray, input_kind: str) -> np.ndarray:
    """Logits from logits (unchanged) or probabilities (``logit p`` binary, ``log p`` multiclass)."""
    s = as_scores(scores)
    if input_kind == "logits":
        return s
    p = np.clip(s, _EPS, 1.0 - _EPS if s.ndim == 1 else 1.0)
    return np.log(p) - np.log1p(-p) if s.ndim == 1 else np.log(p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def check_labels(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Labels as int64 class indices that fit the scores' shape.

    Raises:
        ValueError: for a length mismatch, non-integer labels or a class out of range.
    """
    s = as_scores(scores)
    y = np.asarray(labels)
    if y.shape != (s.shape[0],):
        raise ValueError(f"labels have shape {y.shape}, expected ({s.shape[0]},)")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("labels must be integer class indices (0/1 for binary)")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    k = 2 if s.ndim == 1 else s.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels must be in [0, {k - 1}] for {'binary' if s.ndim == 1 else f'{k}-class'} "
            f"scores, got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64)
