"""Probability calibration: fitting, applying and storing it; pure numpy/scipy, no Beam.

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

The metrics (ECE, MCE, Brier, NLL) are in
:mod:`keras_batch_score.transforms.postprocess.calibration_metrics`, the score
conversions in :mod:`keras_batch_score.transforms.postprocess.scores` and the
methods' fits in :mod:`keras_batch_score.transforms.postprocess.calibration_methods`.

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

from keras_batch_score.transforms.postprocess.calibration_methods import (
    apply_isotonic,
    fit_isotonic,
    fit_platt,
    fit_temperature,
)
from keras_batch_score.transforms.postprocess.calibration_metrics import DEFAULT_BINS, metrics
from keras_batch_score.transforms.postprocess.ensemble import softmax
from keras_batch_score.transforms.postprocess.scores import (
    INPUT_KINDS,
    as_scores,
    check_labels,
    detect_input_kind,
    sigmoid,
    to_logits,
    to_probabilities,
)

METHODS = ("temperature", "platt", "isotonic")
DEFAULT_FOLDS = 5
DEFAULT_SEED = 0


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
