"""Combining the outputs of several models: pure numpy, no Beam.

Every function takes a stack of member outputs of shape ``(m, n, ...)``
(``m`` members, ``n`` rows) and per-member weights, and returns one array of
shape ``(n, ...)``. Weights are normalized to sum to 1.

Conventions for the output shape of a member:

* ``(n,)``: a regression value, or the positive-class probability of a
  binary classifier;
* ``(n, k)``: class probabilities (rows sum to 1) of a ``k``-class classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("mean", "geometric", "median", "vote")
_EPS = 1e-12


def normalize_weights(weights: Sequence[float] | np.ndarray | None, members: int) -> np.ndarray:
    """Weights as a float64 vector summing to 1 (``None``: equal weights).

    Raises:
        ValueError: for a wrong count, a negative weight or an all-zero vector.
    """
    if weights is None:
        return np.full(members, 1.0 / members)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (members,):
        raise ValueError(f"expected {members} weights, got {w.shape[0] if w.ndim else 0}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def _weights_for(stack: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``w`` reshaped to broadcast against ``stack`` along the member axis."""
    return w.reshape((-1,) + (1,) * (stack.ndim - 1))


def weighted_mean(stack: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted arithmetic mean over members (linear opinion pool)."""
    stack = np.asarray(stack, dtype=np.float64)
    w = normalize_weights(weights, stack.shape[0])
    return np.tensordot(w, stack, axes=1)


def geometric_mean(stack: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted log-linear pooling of probabilities, renormalized.

    For ``(m, n, k)`` class probabilities the result is
    ``softmax(sum_i w_i log p_i)`` over the class axis. For ``(m, n)``
    positive-class probabilities the pair ``(p, 1 - p)`` is pooled the same
    way, i.e. ``prod p^w / (prod p^w + prod (1-p)^w)``.

    Raises:
        ValueError: if a value is outside ``[0, 1]`` (not a probability).
    """
    stack = np.asarray(stack, dtype=np.float64)
    if stack.size and (stack.min() < 0 or stack.max() > 1):
        raise ValueError(
            "the geometric ensemble pools probabilities, but member outputs are outside [0, 1]; "
            "use --ensemble mean or median for regression outputs"
        )
    w = _weights_for(stack, normalize_weights(weights, stack.shape[0]))
    p = np.clip(stack, _EPS, 1.0)
    if stack.ndim == 2:
        log_pos = (w * np.log(p)).sum(axis=0)
        log_neg = (w * np.log(np.clip(1.0 - stack, _EPS, 1.0))).sum(axis=0)
        return 1.0 / (1.0 + np.exp(log_neg - log_pos))
    logits = (w * np.log(p)).sum(axis=0)
    return softmax(logits, axis=-1)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def weighted_median(stack: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Element-wise weighted median over members.

    With equal weights this is ``np.median`` (the middle two averaged for an
    even count). Otherwise it is the lower weighted median: the smallest
    member value whose cumulative weight reaches one half.
    """
    stack = np.asarray(stack, dtype=np.float64)
    w = normalize_weights(weights, stack.shape[0])
    if np.allclose(w, w[0]):
        return np.median(stack, axis=0)
    order = np.argsort(stack, axis=0, kind="stable")
    sorted_values = np.take_along_axis(stack, order, axis=0)
    cum = np.cumsum(w[order], axis=0)
    first = np.argmax(cum >= 0.5 - 1e-12, axis=0)
    return np.take_along_axis(sorted_values, first[np.newaxis], axis=0)[0]


def vote(stack: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted majority vote of class labels, as vote shares.

    Each member votes for its predicted class (``argmax`` of ``(n, k)``
    probabilities, or ``p >= 0.5`` for ``(n,)`` binary scores). The result has
    the members' shape and holds the share of the weight each class received,
    so ``argmax`` of it is the voted label (ties go to the lower class index);
    for binary scores it is the weight share voting positive.
    """
    stack = np.asarray(stack, dtype=np.float64)
    w = normalize_weights(weights, stack.shape[0])
    if stack.ndim == 2:
        return np.tensordot(w, (stack >= 0.5).astype(np.float64), axes=1)
    k = stack.shape[-1]
    onehot = np.eye(k)[np.argmax(stack, axis=-1)]  # (m, n, k)
    return np.tensordot(w, onehot, axes=1)


def combine(
    members: Sequence[np.ndarray], method: str, weights: Sequence[float] | None = None
) -> np.ndarray:
    """Combines member outputs of identical shape with one of :data:`METHODS`.

    Returns:
        float32 array with the shape of one member's output.
    """
    if not members:
        raise ValueError("no member outputs to combine")
    shapes = {np.shape(m) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"member outputs have different shapes: {sorted(shapes)}")
    functions = {
        "mean": weighted_mean,
        "geometric": geometric_mean,
        "median": weighted_median,
        "vote": vote,
    }
    if method not in functions:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {METHODS}")
    return functions[method](np.stack(members), weights).astype(np.float32)


def spread(
    members: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    member_std: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Weighted standard deviation across members (ensemble uncertainty).

    With ``member_std`` (e.g. MC-dropout std of each member) the total
    variance is used: the weighted mean of the member variances plus the
    weighted variance of the member means (law of total variance).
    """
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in members])
    w = _weights_for(stack, normalize_weights(weights, stack.shape[0]))
    mean = (w * stack).sum(axis=0)
    var = (w * (stack - mean) ** 2).sum(axis=0)
    if member_std is not None:
        inner = np.stack([np.asarray(s, dtype=np.float64) ** 2 for s in member_std])
        var = var + (w * inner).sum(axis=0)
    return np.sqrt(var).astype(np.float32)
