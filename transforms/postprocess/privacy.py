"""Calibrated noise on released predictions: the Laplace and the analytic Gaussian mechanism.

``--output-noise laplace|gaussian`` adds noise to every released prediction
value so that the output is (ε, δ)-differentially private with respect to a
change of the prediction by at most ``sensitivity`` (L1 sensitivity for
Laplace, L2 for Gaussian; the user states it):

* Laplace: scale ``b = sensitivity / epsilon`` (ε-DP, δ = 0).
* Gaussian: the analytic Gaussian mechanism (Balle & Wang, "Improving the
  Gaussian Mechanism for Differential Privacy", ICML 2018, Theorem 8): the
  smallest ``sigma`` with (Phi: the standard normal CDF, S: the sensitivity)

      Phi(S/(2 sigma) - eps sigma/S) - e^eps Phi(-S/(2 sigma) - eps sigma/S) <= delta

  found by bisection (:func:`analytic_gaussian_sigma`). The left side falls
  monotonically in sigma; it is evaluated with ``log_ndtr`` so that e^ε never
  overflows. Unlike the classical ``sigma = S sqrt(2 ln(1.25/delta))/eps`` it is valid
  for every ε > 0 and is never larger.

The noise is a pure function of ``(seed, row key, output, element)``: a
counter-based generator (splitmix64 over the key) gives one uniform number
per value, vectorized over the whole batch. So a row gets the same noise on
every run with the same seed, whatever the batch size, order or worker. The
row key is the hash of the id columns, or of the row locator
(``source_file``, ``row_index``) when there are none; rows with equal ids get
equal noise (re-releasing the same value, which spends no extra privacy).

The seed is a secret: anyone who knows it and the ids can subtract the
noise. It is therefore never written to ``run_summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from keras_batch_score.transforms.postprocess.routing import hash_column

MECHANISMS = ("laplace", "gaussian")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TWO_53 = float(1 << 53)


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """A resolved noise mechanism.

    Attributes:
        mechanism: ``laplace`` or ``gaussian``.
        epsilon: Privacy parameter ε (> 0).
        delta: δ for ``gaussian`` (0 < δ < 1); None for ``laplace``.
        sensitivity: How much one individual can change a prediction (> 0).
        scale: Laplace scale b, or Gaussian standard deviation sigma.
        seed: Generator seed (secret; see the module docstring).
    """

    mechanism: str
    epsilon: float
    delta: float | None
    sensitivity: float
    scale: float
    seed: int

    def summary(self) -> dict[str, Any]:
        """The parameters for ``run_summary.json`` (the seed itself is withheld)."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sensitivity": self.sensitivity,
            "scale" if self.mechanism == "laplace" else "sigma": self.scale,
            "seed": "withheld (secret: the noise is reproducible from it)",
        }


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """The Laplace mechanism's scale ``b = sensitivity / epsilon``."""
    return float(sensitivity) / float(epsilon)


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """The smallest δ for which N(0, σ²) noise is (ε, δ)-DP at L2 sensitivity Δ (Balle & Wang, Thm 8)."""
    from scipy.special import log_ndtr, ndtr

    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return float(ndtr(a - b) - math.exp(epsilon + float(log_ndtr(-a - b))))


def analytic_gaussian_sigma(
    epsilon: float, delta: float, sensitivity: float, *, rel_tol: float = 1e-12
) -> float:
    """The smallest sigma of the analytic Gaussian mechanism for (ε, δ), by bisection.

    Returns the upper end of the final bracket, so the sigma returned always
    satisfies the privacy condition.

    Raises:
        ValueError: unless ε > 0, 0 < δ < 1 and sensitivity > 0, all finite.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a finite number > 0, got {sensitivity}")
    lo = hi = sensitivity
    while gaussian_delta(hi, epsilon, sensitivity) > delta:
        lo, hi = hi, hi * 2.0
    while gaussian_delta(lo, epsilon, sensitivity) <= delta:
        lo /= 2.0
        if lo < 1e-300:
            return hi
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mid, epsilon, sensitivity) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def make_spec(
    mechanism: str, epsilon: float, delta: float | None, sensitivity: float, seed: int
) -> NoiseSpec:
    """The :class:`NoiseSpec` with its scale computed (arguments already validated)."""
    if mechanism == "laplace":
        return NoiseSpec(
            mechanism, epsilon, None, sensitivity, laplace_scale(epsilon, sensitivity), seed
        )
    sigma = analytic_gaussian_sigma(epsilon, float(delta), sensitivity)
    return NoiseSpec(mechanism, epsilon, delta, sensitivity, sigma, seed)


# --------------------------------------------------------------------------- the generator


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def row_keys(table: pa.Table, key_columns: Sequence[str]) -> np.ndarray:
    """A stable uint64 key per row from ``key_columns`` (the id columns or the row locator)."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in key_columns:
            h = mix64(h * np.uint64(31) ^ hash_column(table.column(name)))
    return h


def uniforms(keys: np.ndarray, seed: int, stream: int, width: int) -> np.ndarray:
    """``(n, width)`` uniform numbers in the open interval (0, 1), a pure function of the arguments."""
    base = mix64(np.asarray(keys, dtype=np.uint64) ^ mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
    counters = (np.uint64(stream) << np.uint64(32)) + np.arange(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(base[:, None] + mix64(counters)[None, :] * _GOLDEN)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / _TWO_53


def noise(keys: np.ndarray, spec: NoiseSpec, output_index: int, width: int) -> np.ndarray:
    """``(n, width)`` float64 noise of ``spec`` for rows ``keys`` and one model output."""
    if spec.mechanism == "laplace":
        v = uniforms(keys, spec.seed, 2 * output_index, width) - 0.5
        return -spec.scale * np.sign(v) * np.log1p(-2.0 * np.abs(v))
    u1 = uniforms(keys, spec.seed, 2 * output_index, width)
    u2 = uniforms(keys, spec.seed, 2 * output_index + 1, width)
    return spec.scale * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def add_noise(
    values: np.ndarray, keys: np.ndarray, spec: NoiseSpec, output_index: int
) -> np.ndarray:
    """``values`` (``(n,)`` or ``(n, ...)``) plus the rows' noise, as float32."""
    v = np.asarray(values)
    n = v.shape[0]
    flat = v.reshape(n, -1).astype(np.float64)
    noisy = flat + noise(keys, spec, output_index, flat.shape[1])
    return noisy.reshape(v.shape).astype(np.float32)
