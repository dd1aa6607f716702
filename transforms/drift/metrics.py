"""Drift metrics between a reference histogram and a current histogram (pure numpy).

Every function takes two count vectors over the *same* slots: for a numeric
feature the slots are ``[below range, bin 1, ..., bin k, above range]`` on the
reference profile's quantile bin edges; for a categorical feature they are
``[top value 1, ..., top value N, other]``. Counts are turned into proportions
here, so the two samples may have different sizes.

Definitions (see docs/drift.md):

* **PSI** = sum_i (q_i - p_i) * ln(q_i / p_i), with p (reference) and q
  (current) proportions; a proportion of 0 is replaced by :data:`PSI_EPSILON`
  (1e-4, as Evidently does) so an empty bin adds a large but finite term.
* **Jensen-Shannon distance** (base 2, in [0, 1]) = sqrt(JSD), with
  JSD = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, 0 log 0 = 0; the
  same as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
* **Wasserstein (normed)**: the 1-Wasserstein distance between the two
  histograms with each slot's mass at its bin centre, divided by the
  reference standard deviation.
* **KS statistic**: max_i |P_i - Q_i| over the cumulative proportions of the
  slots, i.e. the two-sample KS statistic of data sitting on the bin centres.
* **L-infinity** (TFDV's categorical drift): max_i |p_i - q_i| over the
  category slots.
* **mean shift** = |mean_cur - mean_ref| / std_ref and **std shift** =
  |std_cur / std_ref - 1|.
* **p-value** of "same distribution": the two-sample KS test on the binned
  CDFs (numeric; Smirnov's asymptotic distribution, as ``scipy.stats.ks_2samp``
  with ``method="asymp"``) or Pearson's chi-square test of homogeneity on the
  category counts (categorical). A column drifts only when an effect-size
  metric exceeds its threshold *and* p < ``alpha`` (default 0.05), so small
  samples do not flag noise and huge samples do not flag negligible shifts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from keras_batch_score.transforms.core.errors import ConfigError

PSI_EPSILON = 1e-4
"""Floor applied to empty-bin proportions in PSI (no renormalization)."""

NUMERIC_METRICS = ("psi", "js", "wasserstein", "ks", "mean_shift", "std_shift")
CATEGORICAL_METRICS = ("psi", "js", "linf")
ALL_METRICS = tuple(dict.fromkeys(NUMERIC_METRICS + CATEGORICAL_METRICS))
P_VALUE = "p_value"
ALPHA = "alpha"
SETTINGS = (*ALL_METRICS, ALPHA)

DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "psi": 0.2,
    "js": 0.1,
    "wasserstein": 0.1,
    "linf": 0.1,
    "ks": None,
    "mean_shift": None,
    "std_shift": None,
    "alpha": 0.05,
}
"""A metric drifts when it is strictly above its threshold; ``None`` reports it without gating.
``alpha`` is the significance level the p-value must be below (``None``: no significance guard)."""

DEFAULT_DRIFT_SHARE = 0.5


def proportions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts -> proportions summing to 1 (all zeros stay zeros)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def _pair(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = proportions(reference), proportions(current)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms must be 1-D of the same length, got {p.shape} and {q.shape}")
    return p, q


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index; empty-bin proportions are floored at ``epsilon``."""
    p, q = _pair(reference, current)
    p = np.maximum(p, epsilon)
    q = np.maximum(q, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance with base-2 logarithms (0 = identical, 1 = disjoint)."""
    p, q = _pair(reference, current)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """Largest gap between the two binned CDFs."""
    p, q = _pair(reference, current)
    return float(np.max(np.abs(np.cumsum(p) - np.cumsum(q)), initial=0.0))


def wasserstein(reference: np.ndarray, current: np.ndarray, centres: np.ndarray) -> float:
    """1-Wasserstein distance of the histograms placed at ``centres`` (sorted ascending)."""
    p, q = _pair(reference, current)
    x = np.asarray(centres, dtype=np.float64)
    if x.shape != p.shape:
        raise ValueError(f"{len(x)} centres for {len(p)} slots")
    gaps = np.diff(x)
    return float(np.sum(np.abs(np.cumsum(p)[:-1] - np.cumsum(q)[:-1]) * gaps))


def linf(reference: np.ndarray, current: np.ndarray) -> float:
    """L-infinity distance of the category proportions (TFDV's categorical drift)."""
    p, q = _pair(reference, current)
    return float(np.max(np.abs(p - q), initial=0.0))


KS_EXACT_MAX_N = 10_000
"""Effective sample sizes up to which the KS p-value uses Smirnov's exact finite-n distribution."""


def ks_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sided p-value of the two-sample KS test on the binned CDFs (asymptotic).

    As ``scipy.stats.ks_2samp(method="asymp")``: the one-sample Kolmogorov distribution at the
    effective size ``en = n*m/(n+m)``. Above ``KS_EXACT_MAX_N`` its limit
    ``kolmogorov(sqrt(en) * D)`` is used instead: within 1% of it there, and microseconds
    instead of up to half a second per column (``kstwo.sf`` at en ~ 500k).
    """
    n, m = float(np.sum(reference)), float(np.sum(current))
    if n == 0 or m == 0:
        return 1.0
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    statistic = ks_statistic(reference, current)
    if en > KS_EXACT_MAX_N:
        from scipy import special

        return float(np.clip(special.kolmogorov(np.sqrt(en) * statistic), 0, 1))
    from scipy import stats  # imported lazily: scipy.stats costs ~0.5 s at start-up

    return float(np.clip(stats.kstwo.sf(statistic, np.round(en)), 0, 1))


def chi2_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of homogeneity on two count vectors."""
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    from scipy import special

    return float(special.chdtrc(table.shape[1] - 1, chi2))


def slot_centres(
    edges: Sequence[float], current_min: float | None, current_max: float | None
) -> np.ndarray:
    """Representative values of the numeric slots ``[below, bins..., above]``.

    A bin's centre is the midpoint of its edges. The below-range slot sits
    halfway between the current minimum and the first edge (the above-range
    slot likewise), or on the edge itself when no current value is out of range.
    """
    e = np.asarray(edges, dtype=np.float64)
    inner = (e[:-1] + e[1:]) / 2
    lo = e[0] if current_min is None or current_min >= e[0] else (current_min + e[0]) / 2
    hi = e[-1] if current_max is None or current_max <= e[-1] else (current_max + e[-1]) / 2
    return np.concatenate([[lo], inner, [hi]])


def numeric_metrics(
    reference: np.ndarray,
    current: np.ndarray,
    edges: Sequence[float],
    *,
    ref_mean: float,
    ref_std: float,
    cur_mean: float | None,
    cur_std: float | None,
    cur_min: float | None = None,
    cur_max: float | None = None,
) -> dict[str, float | None]:
    """Every numeric metric of one feature; ``None`` where it cannot be computed.

    A reference std of 0 (a constant feature) leaves the Wasserstein distance
    and the mean shift unnormalized (divided by 1).
    """
    scale = ref_std if ref_std > 0 else 1.0
    centres = slot_centres(edges, cur_min, cur_max)
    mean_shift = None if cur_mean is None else abs(cur_mean - ref_mean) / scale
    if cur_std is None:
        std_shift = None
    elif ref_std > 0:
        std_shift = abs(cur_std / ref_std - 1.0)
    else:
        std_shift = abs(cur_std)
    return {
        "psi": psi(reference, current),
        "js": js_distance(reference, current),
        "wasserstein": wasserstein(reference, current, centres) / scale,
        "ks": ks_statistic(reference, current),
        "mean_shift": mean_shift,
        "std_shift": std_shift,
        P_VALUE: ks_p_value(reference, current),
    }


def categorical_metrics(reference: np.ndarray, current: np.ndarray) -> dict[str, float | None]:
    """PSI, JS distance, L-infinity and the chi-square p-value of one categorical feature."""
    return {
        "psi": psi(reference, current),
        "js": js_distance(reference, current),
        "linf": linf(reference, current),
        P_VALUE: chi2_p_value(reference, current),
    }


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Drift thresholds: defaults per metric, overridden per feature.

    Attributes:
        default: Threshold per metric name (``None``: reported, never flags).
        per_feature: ``{feature: {metric: threshold or None}}`` overrides.
        drift_share: Dataset drift when the share of drifted features exceeds this.
    """

    default: Mapping[str, float | None] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS)
    )
    per_feature: Mapping[str, Mapping[str, float | None]] = dataclasses.field(default_factory=dict)
    drift_share: float = DEFAULT_DRIFT_SHARE

    def for_feature(self, name: str) -> dict[str, float | None]:
        return {**self.default, **self.per_feature.get(name, {})}

    def to_dict(self) -> dict[str, object]:
        return {
            "default": dict(self.default),
            "per_feature": {k: dict(v) for k, v in self.per_feature.items()},
            "drift_share": self.drift_share,
        }


def parse_thresholds(specs: Sequence[str], drift_share: float = DEFAULT_DRIFT_SHARE) -> Thresholds:
    """Parses ``metric=value`` and ``feature:metric=value`` settings.

    ``value`` is a non-negative number, or ``off`` to report a metric without
    gating on it. A feature name may itself contain ``:``; the last one splits.

    Raises:
        ConfigError: naming the malformed setting or unknown metric.
    """
    if not 0 <= drift_share <= 1:
        raise ConfigError(f"'drift_share' must be between 0 and 1, got {drift_share}")
    default: dict[str, float | None] = dict(DEFAULT_THRESHOLDS)
    per_feature: dict[str, dict[str, float | None]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(
                f"drift threshold {spec!r}: expected metric=value or feature:metric=value, e.g. psi=0.25"
            )
        feature, colon, metric = key.strip().rpartition(":")
        metric = metric.strip()
        if metric not in SETTINGS:
            raise ConfigError(
                f"drift threshold {spec!r}: unknown metric {metric!r}; metrics are {', '.join(SETTINGS)}"
            )
        value = _threshold_value(spec, raw.strip())
        if colon:
            per_feature.setdefault(feature, {})[metric] = value
        else:
            default[metric] = value
    return Thresholds(default, per_feature, drift_share)


def _threshold_value(spec: str, raw: str) -> float | None:
    if raw.lower() in ("off", "none", "null"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"drift threshold {spec!r}: {raw!r} is not a number (or 'off')") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"drift threshold {spec!r}: must be a finite number >= 0")
    return value


def flag_drift(
    metrics: Mapping[str, float | None], thresholds: Mapping[str, float | None]
) -> list[str]:
    """Names of the metrics strictly above their threshold, or [] when the difference is
    not significant (``p_value >= alpha``)."""
    over = [
        name
        for name, value in metrics.items()
        if name != P_VALUE
        and value is not None
        and thresholds.get(name) is not None
        and value > thresholds[name]
    ]
    alpha, p = thresholds.get(ALPHA), metrics.get(P_VALUE)
    if over and alpha is not None and p is not None and p >= alpha:
        return []
    return over


def dataset_drift(drifted: int, total: int, drift_share: float) -> tuple[float, bool]:
    """(share of drifted features, whether it exceeds ``drift_share``); no features is no drift."""
    share = drifted / total if total else 0.0
    return share, total > 0 and share > drift_share
