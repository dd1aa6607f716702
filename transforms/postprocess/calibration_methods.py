"""The three calibration methods' fits: temperature, Platt and isotonic regression.

Pure numpy and scipy, no Beam; :mod:`keras_batch_score.transforms.postprocess.calibration`
chooses one, fits it and applies it.
"""

from __future__ import annotations

import numpy as np

from keras_batch_score.transforms.postprocess.scores import as_scores, sigmoid


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T > 0`` minimizing the NLL of ``softmax(logits / T)`` (sigmoid if binary)."""
    from scipy.optimize import minimize_scalar

    z = as_scores(logits)
    y = np.asarray(labels)

    def loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        if z.ndim == 1:
            # -log sigmoid(+-z) = logaddexp(0, -+z)
            signed = np.where(y == 1, scaled, -scaled)
            return float(np.mean(np.logaddexp(0.0, -signed)))
        log_norm = np.logaddexp.reduce(scaled, axis=1)
        return float(np.mean(log_norm - scaled[np.arange(len(y)), y]))

    result = minimize_scalar(
        loss, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-8}
    )
    return float(np.exp(result.x))


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of the unregularized logistic regression ``P(y=1 | s) = sigmoid(a s + b)``."""
    from scipy.optimize import minimize

    s = as_scores(scores)
    if s.ndim != 1:
        raise ValueError("Platt scaling is for binary scores of shape (n,); use temperature")
    y = (np.asarray(labels) == 1).astype(np.float64)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * s + theta[1]
        # log(1 + e^z) - y z
        loss = np.mean(np.logaddexp(0.0, z) - y * z)
        r = sigmoid(z) - y
        return float(loss), np.array([np.mean(r * s), np.mean(r)])

    result = minimize(
        loss_and_grad,
        np.array([1.0, 0.0]),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-10, "maxiter": 1000},
    )
    return float(result.x[0]), float(result.x[1])


def fit_isotonic(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Increasing isotonic regression of ``y`` on ``x`` (sklearn ``IsotonicRegression`` definition).

    Returns:
        ``(x_thresholds, y_thresholds)`` for :func:`apply_isotonic`.
    """
    from scipy.optimize import isotonic_regression

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if x.size == 0:
        raise ValueError("isotonic calibration needs at least one row")
    ux, inverse = np.unique(x, return_inverse=True)
    wsum = np.bincount(inverse, weights=w)
    ymean = np.bincount(inverse, weights=w * y) / wsum
    fitted = isotonic_regression(ymean, weights=wsum, increasing=True).x
    return ux, np.clip(fitted, 0.0, 1.0)


def apply_isotonic(x: np.ndarray, x_thresholds: np.ndarray, y_thresholds: np.ndarray) -> np.ndarray:
    """Linear interpolation between the thresholds, constant outside them."""
    if len(x_thresholds) == 1:
        return np.full(np.shape(x), float(y_thresholds[0]))
    return np.interp(x, x_thresholds, y_thresholds)
