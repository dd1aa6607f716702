"""Drift metrics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.drift import metrics as dm

REF = np.array([10, 20, 30, 40])
CUR = np.array([40, 30, 20, 10])


def test_psi_hand_computed():
    # p = [.1 .2 .3 .4], q = [.4 .3 .2 .1]
    expected = (
        (0.4 - 0.1) * math.log(4)
        + (0.3 - 0.2) * math.log(1.5)
        + (0.2 - 0.3) * math.log(2 / 3)
        + (0.1 - 0.4) * math.log(0.25)
    )
    assert dm.psi(REF, CUR) == pytest.approx(expected, rel=1e-12)
    assert dm.psi(REF, REF) == 0.0


def test_psi_empty_bin_uses_epsilon():
    # p = [.5 .5 0], q = [.5 .25 .25]; the empty reference bin is floored at 1e-4.
    ref, cur = np.array([5, 5, 0]), np.array([2, 1, 1])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    assert dm.PSI_EPSILON == 1e-4
    assert dm.psi(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_js_distance_hand_computed_and_scipy():
    # Disjoint supports: distance 1 in base 2.
    assert dm.js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    # p = [.5 .5], q = [1 0]: m = [.75 .25]
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = 1.0 * math.log2(1 / 0.75)
    assert dm.js_distance(np.array([1, 1]), np.array([3, 0])) == pytest.approx(
        math.sqrt((kl_p + kl_q) / 2), rel=1e-12
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 50, size=12)
        b = rng.integers(0, 50, size=12)
        a[rng.integers(0, 12)] = 0  # empty bins on either side
        b[rng.integers(0, 12)] = 0
        assert dm.js_distance(a, b) == pytest.approx(jensenshannon(a, b, base=2), abs=1e-12)


def test_ks_statistic_hand_computed_and_scipy():
    # CDFs: [.1 .3 .6 1] vs [.4 .7 .9 1] -> max gap .4
    assert dm.ks_statistic(REF, CUR) == pytest.approx(0.4)
    rng = np.random.default_rng(1)
    centres = np.arange(12, dtype=float) + 0.5
    for _ in range(10):
        a = rng.integers(0, 40, size=12)
        b = rng.integers(0, 40, size=12)
        # Data whose values sit on the bin centres.
        sample_a = np.repeat(centres, a)
        sample_b = np.repeat(centres, b)
        assert dm.ks_statistic(a, b) == pytest.approx(
            ks_2samp(sample_a, sample_b).statistic, abs=1e-12
        )


def test_wasserstein_hand_computed_and_scipy():
    centres = np.array([0.5, 1.5, 2.5, 3.5])
    # All mass moves from bin 0 to bin 3: distance 3.
    assert dm.wasserstein(np.array([1, 0, 0, 0]), np.array([0, 0, 0, 1]), centres) == pytest.approx(
        3.0
    )
    rng = np.random.default_rng(2)
    centres = np.cumsum(rng.uniform(0.1, 2.0, size=12))
    for _ in range(10):
        a = rng.integers(0, 40, size=12)
        b = rng.integers(0, 40, size=12)
        assert dm.wasserstein(a, b, centres) == pytest.approx(
            wasserstein_distance(centres, centres, a, b), rel=1e-9
        )


def test_numeric_metrics_normalizes_wasserstein_by_reference_std():
    edges = [0.0, 1.0, 2.0, 3.0]
    ref = np.array([0, 10, 10, 10, 0])  # slots: below, 3 bins, above
    cur = np.array([0, 0, 10, 20, 0])
    out = dm.numeric_metrics(
        ref, cur, edges, ref_mean=1.5, ref_std=2.0, cur_mean=2.0, cur_std=1.0, cur_min=1, cur_max=3
    )
    centres = dm.slot_centres(edges, 1, 3)
    assert out["wasserstein"] == pytest.approx(
        wasserstein_distance(centres, centres, ref, cur) / 2.0
    )
    assert out["mean_shift"] == pytest.approx(0.25)
    assert out["std_shift"] == pytest.approx(0.5)


def test_slot_centres_out_of_range():
    c = dm.slot_centres([0.0, 1.0, 2.0], current_min=-4.0, current_max=10.0)
    np.testing.assert_allclose(c, [-2.0, 0.5, 1.5, 6.0])
    c = dm.slot_centres([0.0, 1.0, 2.0], current_min=0.5, current_max=1.0)
    np.testing.assert_allclose(c, [0.0, 0.5, 1.5, 2.0])


def test_linf_is_max_abs_proportion_difference():
    # [.5 .5 0] vs [.25 .25 .5] -> .5 (TFDV's L-infinity distance)
    assert dm.linf(np.array([5, 5, 0]), np.array([1, 1, 2])) == pytest.approx(0.5)
    assert dm.linf(np.array([3, 1]), np.array([30, 10])) == 0.0


def test_histogram_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        dm.psi(np.array([1, 2]), np.array([1, 2, 3]))


def test_thresholds_parse_defaults_and_overrides():
    t = dm.parse_thresholds(
        ["psi=0.25", "age:js=0.3", "a:b:ks=0.05", "wasserstein=off", "age:alpha=off"], 0.3
    )
    assert t.for_feature("age")["alpha"] is None and t.default["alpha"] == 0.05
    assert t.default["psi"] == 0.25
    assert t.default["wasserstein"] is None
    assert t.for_feature("age")["js"] == 0.3
    assert t.for_feature("age")["psi"] == 0.25
    assert t.for_feature("a:b")["ks"] == 0.05
    assert t.drift_share == 0.3
    assert dm.DEFAULT_THRESHOLDS["psi"] == 0.2 and dm.DEFAULT_THRESHOLDS["js"] == 0.1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("psi", "expected metric=value"),
        ("foo=1", "unknown metric 'foo'"),
        ("psi=x", "not a number"),
    ],
)
def test_thresholds_errors_name_the_setting(spec, message):
    with pytest.raises(ConfigError, match=message):
        dm.parse_thresholds([spec])


def test_ks_p_value_matches_scipy_asymptotic():
    rng = np.random.default_rng(3)
    centres = np.arange(12, dtype=float)
    for _ in range(10):
        a = rng.integers(0, 80, size=12)
        b = rng.integers(0, 80, size=12)
        b[:3] += rng.integers(0, 40)  # sometimes a real difference
        expected = ks_2samp(np.repeat(centres, a), np.repeat(centres, b), method="asymp").pvalue
        assert dm.ks_p_value(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert dm.ks_p_value(np.array([5, 5]), np.array([0, 0])) == 1.0


def test_ks_p_value_on_large_samples_uses_the_kolmogorov_limit():
    """Large counts take the limit distribution: within 1% of scipy's finite-n one."""
    from scipy.stats import kstwo

    rng = np.random.default_rng(4)
    for _ in range(5):
        a = rng.integers(40_000, 60_000, size=10)
        b = a + rng.integers(-400, 400, size=10)
        n, m = a.sum(), b.sum()
        en = n * m / (n + m)
        assert en > dm.KS_EXACT_MAX_N
        expected = kstwo.sf(dm.ks_statistic(a, b), np.round(en))
        assert dm.ks_p_value(a, b) == pytest.approx(expected, rel=1e-2, abs=1e-12)


def test_chi2_p_value_matches_scipy():
    rng = np.random.default_rng(4)
    for _ in range(10):
        a = rng.integers(1, 80, size=5)
        b = rng.integers(1, 80, size=5)
        expected = chi2_contingency(np.vstack([a, b]), correction=False).pvalue
        assert dm.chi2_p_value(a, b) == pytest.approx(expected, rel=1e-9)
    # Slots empty on both sides are dropped (scipy refuses zero expected counts).
    a, b = np.array([10, 0, 20, 5]), np.array([12, 0, 9, 30])
    expected = chi2_contingency(np.vstack([a[[0, 2, 3]], b[[0, 2, 3]]]), correction=False).pvalue
    assert dm.chi2_p_value(a, b) == pytest.approx(expected, rel=1e-9)


def test_flag_and_dataset_drift():
    assert dm.flag_drift(
        {"psi": 0.3, "js": 0.05, "ks": 0.9}, {"psi": 0.2, "js": 0.1, "ks": None}
    ) == ["psi"]
    # The significance guard: an effect above its threshold needs p < alpha.
    limits = {"psi": 0.2, "alpha": 0.05}
    assert dm.flag_drift({"psi": 0.3, "p_value": 0.2}, limits) == []
    assert dm.flag_drift({"psi": 0.3, "p_value": 0.01}, limits) == ["psi"]
    assert dm.flag_drift({"psi": 0.3, "p_value": 0.2}, {**limits, "alpha": None}) == ["psi"]
    assert dm.dataset_drift(1, 2, 0.5) == (0.5, False)  # share must exceed drift_share
    assert dm.dataset_drift(2, 3, 0.5)[1] is True
    assert dm.dataset_drift(0, 0, 0.5) == (0.0, False)
