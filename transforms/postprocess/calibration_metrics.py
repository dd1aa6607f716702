"""Calibration metrics: ECE, MCE, Brier score and NLL, and the reliability bins behind them.

Binary: on the positive-class probability against the 0/1 label; multiclass:
on the top-label confidence against "argmax is right". ECE and MCE use
equal-width bins ``(i/B, (i+1)/B]`` (0 falls in the first bin); the Brier
score of ``(n, k)`` probabilities sums over classes (sklearn's definition).
Pure numpy, no Beam.
"""

from __future__ import annotations

import numpy as np

from keras_batch_score.transforms.postprocess.scores import as_scores

DEFAULT_BINS = 15
_EPS = 1e-12


def confidence_and_correct(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row confidence and outcome the reliability metrics are computed on.

    Binary ``(n,)``: (positive-class probability, label). Multiclass: (max
    probability, argmax == label).
    """
    p = as_scores(probs)
    y = np.asarray(labels)
    if p.ndim == 1:
        return p, (y == 1).astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def bin_statistics(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS
) -> dict[str, np.ndarray]:
    """Per-bin counts, mean confidence and accuracy over equal-width bins on [0, 1].

    Bin ``i`` holds confidences in ``(i/B, (i+1)/B]``; 0 goes to bin 0.
    Empty bins have NaN means.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.ceil(np.asarray(confidence) * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges,
            "count": counts,
            "confidence": conf_sum / counts,
            "accuracy": acc_sum / counts,
        }


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: bin-size-weighted mean |accuracy - confidence|."""
    stats = bin_statistics(*confidence_and_correct(probs, labels), n_bins)
    filled = stats["count"] > 0
    gaps = np.abs(stats["accuracy"][filled] - stats["confidence"][filled])
    total = stats["count"].sum()
    return float((gaps * stats["count"][filled]).sum() / total) if total else 0.0


def mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
    stats = bin_statistics(*confidence_and_correct(probs, labels), n_bins)
    filled = stats["count"] > 0
    gaps = np.abs(stats["accuracy"][filled] - stats["confidence"][filled])
    return float(gaps.max()) if gaps.size else 0.0


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: mean squared error to the one-hot label (summed over classes if ``(n, k)``)."""
    p = as_scores(probs)
    y = np.asarray(labels)
    if p.ndim == 1:
        return float(np.mean((p - (y == 1)) ** 2))
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(((p - onehot) ** 2).sum(axis=1)))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped to [1e-12, 1])."""
    p = as_scores(probs)
    y = np.asarray(labels)
    p_true = np.where(y == 1, p, 1.0 - p) if p.ndim == 1 else p[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0))))


def metrics(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """ECE, MCE, Brier and NLL of probabilities against labels."""
    return {
        "ece": ece(probs, labels, n_bins),
        "mce": mce(probs, labels, n_bins),
        "brier": brier(probs, labels),
        "nll": nll(probs, labels),
    }
