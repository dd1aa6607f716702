"""Probability calibration and calibration metrics: pure numpy/scipy, no Beam.

Scores come in two shapes:

* ``(n,)``: binary classifier, the positive-class probability (or logit);
* ``(n, k)``: ``k``-class probabilities (or logits).

Three methods, all fitted on held-out labelled data by the ``calibrate``
pipeline and stored as JSON:

* ``temperature`` (Guo et al. 2017): one scalar ``T`` dividing the logits,
  fitted by minimizing the NLL. Probabilities are turned into logits first
  (``log p`` for ``k`` classes, ``logit p`` for binary). The argmax never
  changes.
* ``platt``: binary only, ``sigmoid(a * s + b)`` on the score ``s`` (the
  logit of a probability, or the raw logit), fitted by unregularized logistic
  regression.
* ``isotonic``: the sklearn ``IsotonicRegression`` definition (ties pooled by
  weighted mean, pool-adjacent-violators fit, linear interpolation between
  thresholds, clipped outside them). For ``k`` classes one-vs-rest per class,
  then rows renormalized (as sklearn's ``CalibratedClassifierCV`` does).

Metrics (binary: on the positive-class probability against the 0/1 label;
multiclass: on the top-label confidence against "argmax is right"):
ECE and MCE over equal-width bins ``(i/B, (i+1)/B]`` (0 falls in the first
bin), Brier score (multiclass: sum over classes, sklearn's definition), NLL.

The "after" metrics are cross-fitted: the rows are split into ``k`` shuffled
folds (:data:`DEFAULT_FOLDS`, seeded; the same folds as sklearn's
``KFold(k, shuffle=True, random_state=seed)``), the method is fitted on
``k - 1`` folds and applied to the held-out one, and the metrics are computed
on the concatenated out-of-fold probabilities. Metrics on the rows a
calibration was fitted on flatter it (isotonic regression reaches ECE 0); they
are kept as ``after_in_sample``. The returned parameters are fitted on all rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_batch_score.transforms.postprocess.ensemble import softmax

METHODS = ("temperature", "platt", "isotonic")
INPUT_KINDS = ("probabilities", "logits")
DEFAULT_BINS = 15
DEFAULT_FOLDS = 5
DEFAULT_SEED = 0
_EPS = 1e-12


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- fitting


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


# --------------------------------------------------------------------------- the fitted object


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Fitted calibration parameters; :meth:`apply` maps raw scores to calibrated probabilities.

    Attributes:
        method: One of :data:`METHODS`.
        input_kind: ``probabilities`` or ``logits``: what the model outputs.
        num_classes: 1 for ``(n,)`` binary scores, else ``k``.
        params: Method parameters (``temperature``; ``a``, ``b``; or per-class thresholds).
        report: Metrics before and after, rows used (informational).
    """

    method: str
    input_kind: str
    num_classes: int
    params: dict[str, Any]
    report: dict[str, Any] = dataclasses.field(default_factory=dict)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities with the shape of ``scores`` (``(n, 1)`` becomes ``(n,)``)."""
        s = as_scores(scores)
        width = 1 if s.ndim == 1 else s.shape[1]
        if width != self.num_classes:
            raise ValueError(
                f"calibration was fitted on {self.num_classes}-wide scores, the model outputs {width}"
            )
        if self.method == "temperature":
            z = to_logits(s, self.input_kind) / self.params["temperature"]
            return sigmoid(z) if z.ndim == 1 else softmax(z, axis=-1)
        if self.method == "platt":
            z = to_logits(s, self.input_kind)
            return sigmoid(self.params["a"] * z + self.params["b"])
        if self.method == "isotonic":
            x = _isotonic_input(s, self.input_kind)
            tables = self.params["classes"]
            if x.ndim == 1:
                return apply_isotonic(x, *map(np.asarray, tables[0]))
            out = np.column_stack(
                [apply_isotonic(x[:, c], *map(np.asarray, tables[c])) for c in range(x.shape[1])]
            )
            return _renormalize(out)
        raise ValueError(f"unknown calibration method {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "keras-batch-score/calibration@1",
            "method": self.method,
            "input_kind": self.input_kind,
            "num_classes": self.num_classes,
            "params": self.params,
            "report": self.report,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Parses :meth:`to_dict` output.

        Raises:
            ValueError: naming the missing or invalid key.
        """
        for key in ("method", "input_kind", "num_classes", "params"):
            if key not in data:
                raise ValueError(
                    f"calibration file has no {key!r} key; was it written by `calibrate`?"
                )
        if data["method"] not in METHODS:
            raise ValueError(f"calibration method {data['method']!r} is not one of {METHODS}")
        if data["input_kind"] not in INPUT_KINDS:
            raise ValueError(
                f"calibration input_kind {data['input_kind']!r} is not one of {INPUT_KINDS}"
            )
        params = dict(data["params"])
        if data["method"] == "temperature" and not float(params.get("temperature", 0)) > 0:
            raise ValueError("calibration temperature must be > 0")
        return cls(
            method=data["method"],
            input_kind=data["input_kind"],
            num_classes=int(data["num_classes"]),
            params=params,
            report=dict(data.get("report", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))


def _isotonic_input(s: np.ndarray, input_kind: str) -> np.ndarray:
    return to_probabilities(s, input_kind)


def _renormalize(p: np.ndarray) -> np.ndarray:
    total = p.sum(axis=1, keepdims=True)
    uniform = np.full_like(p, 1.0 / p.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, p / total, uniform)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def kfold_indices(n: int, folds: int, seed: int = DEFAULT_SEED) -> list[np.ndarray]:
    """Held-out row indices of each of ``folds`` shuffled folds of ``n`` rows.

    The same folds as sklearn's ``KFold(folds, shuffle=True, random_state=seed)``:
    a seeded shuffle, then contiguous folds, the first ``n % folds`` one row larger.
    """
    if not 2 <= folds <= n:
        raise ValueError(f"cannot split {n} rows into {folds} folds")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    return np.split(order, np.cumsum(sizes)[:-1])


def fit_params(
    scores: np.ndarray, labels: np.ndarray, method: str, input_kind: str
) -> dict[str, Any]:
    """The parameters of ``method`` fitted on checked scores and labels."""
    s = as_scores(scores)
    if method == "temperature":
        return {"temperature": fit_temperature(to_logits(s, input_kind), labels)}
    if method == "platt":
        if s.ndim != 1:
            raise ValueError(
                f"Platt scaling is for binary models with one output; this model outputs {s.shape[1]} "
                "classes: use --method temperature or isotonic"
            )
        a, b = fit_platt(to_logits(s, input_kind), labels)
        return {"a": a, "b": b}
    x = _isotonic_input(s, input_kind)
    if x.ndim == 1:
        tables = [fit_isotonic(x, (labels == 1).astype(np.float64))]
    else:
        tables = [
            fit_isotonic(x[:, c], (labels == c).astype(np.float64)) for c in range(x.shape[1])
        ]
    return {"classes": [[t[0].tolist(), t[1].tolist()] for t in tables]}


def cross_fitted_probabilities(
    scores: np.ndarray,
    labels: np.ndarray,
    method: str,
    input_kind: str,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold calibrated by a fit on the other folds."""
    s = as_scores(scores)
    y = np.asarray(labels)
    num_classes = 1 if s.ndim == 1 else s.shape[1]
    out = np.empty(s.shape, dtype=np.float64)
    for held in kfold_indices(len(y), folds, seed):
        train = np.ones(len(y), dtype=bool)
        train[held] = False
        params = fit_params(s[train], y[train], method, input_kind)
        out[held] = Calibration(method, input_kind, num_classes, params).apply(s[held])
    return out


def fit_and_evaluate(
    scores: np.ndarray,
    labels: np.ndarray,
    method: str,
    *,
    input_kind: str | None = None,
    n_bins: int = DEFAULT_BINS,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> tuple[Calibration, np.ndarray]:
    """Fits ``method`` on all rows; reports the metrics before and (cross-fitted) after.

    Args:
        scores: Model outputs, ``(n,)`` binary or ``(n, k)``.
        labels: Class indices (0/1 for binary).
        method: One of :data:`METHODS`.
        input_kind: ``probabilities`` or ``logits``; detected from the values if None.
        n_bins: Bins for ECE/MCE.
        folds: Folds of the cross-fitted "after" metrics (fewer with fewer rows;
            with one row the "after" metrics are in-sample and the report says so).
        seed: Seed of the fold shuffle.

    Returns:
        The calibration fitted on all rows, and the probabilities the "after"
        metrics were computed on (out-of-fold; in-sample with one row).

    Raises:
        ValueError: for an unknown method, Platt on multiclass scores, or bad labels.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    s = as_scores(scores)
    y = check_labels(labels, s)
    if len(y) == 0:
        raise ValueError("no rows with a non-null label to calibrate on")
    kind = input_kind or detect_input_kind(s)
    if kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {kind!r}")
    num_classes = 1 if s.ndim == 1 else s.shape[1]
    calibration = Calibration(method, kind, num_classes, fit_params(s, y, method, kind))
    in_sample = calibration.apply(s)
    k = min(folds, len(y))
    if k >= 2:
        held_out = cross_fitted_probabilities(s, y, method, kind, k, seed)
        evaluation = f"cross-fitted, {k} folds"
    else:
        held_out = in_sample
        evaluation = "in-sample (too few rows to cross-fit)"
    report = {
        "rows": len(y),
        "bins": n_bins,
        "before": metrics(to_probabilities(s, kind), y, n_bins),
        "after": metrics(held_out, y, n_bins),
        "after_evaluation": evaluation,
        "cross_fit": {"folds": k if k >= 2 else 0, "seed": seed},
        "after_in_sample": metrics(in_sample, y, n_bins),
    }
    return dataclasses.replace(calibration, report=report), held_out


def fit(
    scores: np.ndarray,
    labels: np.ndarray,
    method: str,
    *,
    input_kind: str | None = None,
    n_bins: int = DEFAULT_BINS,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> Calibration:
    """Fits ``method`` on labelled scores and reports the metrics before and after.

    The same as :func:`fit_and_evaluate` without the out-of-fold probabilities.
    """
    return fit_and_evaluate(
        scores, labels, method, input_kind=input_kind, n_bins=n_bins, folds=folds, seed=seed
    )[0]
