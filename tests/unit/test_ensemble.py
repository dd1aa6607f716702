"""Ensemble maths against direct numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from keras_batch_score.transforms.postprocess import ensemble


@pytest.fixture
def probs() -> np.ndarray:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50, 4))
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


W = [0.5, 0.3, 0.2]


def test_weighted_mean_matches_numpy_average(probs):
    got = ensemble.combine(list(probs), "mean", [5, 3, 2])
    np.testing.assert_allclose(got, np.average(probs, axis=0, weights=W), rtol=1e-6)


def test_geometric_multiclass_is_renormalized_log_linear_pool(probs):
    got = ensemble.combine(list(probs), "geometric", W)
    pooled = np.prod(probs ** np.array(W)[:, None, None], axis=0)
    expected = pooled / pooled.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_geometric_binary_pools_both_classes():
    p = np.array([[0.9, 0.2, 0.5], [0.6, 0.1, 0.99]])
    w = np.array([0.75, 0.25])
    got = ensemble.combine(list(p), "geometric", w)
    pos = p[0] ** 0.75 * p[1] ** 0.25
    neg = (1 - p[0]) ** 0.75 * (1 - p[1]) ** 0.25
    np.testing.assert_allclose(got, pos / (pos + neg), rtol=1e-6)


def test_geometric_rejects_non_probabilities():
    with pytest.raises(ValueError, match="outside"):
        ensemble.combine([np.array([1.5, 2.0]), np.array([0.1, 0.2])], "geometric")


def test_median_equal_weights_is_numpy_median():
    rng = np.random.default_rng(1)
    members = rng.normal(size=(4, 30))
    np.testing.assert_allclose(
        ensemble.combine(list(members), "median"), np.median(members, axis=0), rtol=1e-6
    )


def test_weighted_median_reference():
    rng = np.random.default_rng(2)
    members = rng.normal(size=(3, 40))
    w = np.array([0.6, 0.3, 0.1])
    got = ensemble.combine(list(members), "median", w)
    expected = []
    for j in range(members.shape[1]):
        order = np.argsort(members[:, j])
        cum = np.cumsum(w[order])
        expected.append(members[order[np.searchsorted(cum, 0.5)], j])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # the heaviest member has more than half the weight: it always wins
    np.testing.assert_allclose(got, members[0], rtol=1e-6)


def test_vote_shares_and_label(probs):
    got = ensemble.combine(list(probs), "vote", W)
    labels = probs.argmax(axis=-1)
    expected = np.zeros((50, 4))
    for m, w in enumerate(W):
        expected[np.arange(50), labels[m]] += w
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_vote_binary():
    p = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.7], [0.8, 0.6, 0.4]])
    got = ensemble.combine(list(p), "vote")
    np.testing.assert_allclose(got, [2 / 3, 1 / 3, 2 / 3], rtol=1e-6)


def test_spread_is_weighted_std_and_total_variance():
    rng = np.random.default_rng(3)
    members = rng.normal(size=(3, 20))
    w = np.array(W)
    mean = np.average(members, axis=0, weights=w)
    var = np.average((members - mean) ** 2, axis=0, weights=w)
    np.testing.assert_allclose(ensemble.spread(list(members), w), np.sqrt(var), rtol=1e-5)
    stds = np.abs(rng.normal(size=(3, 20)))
    total = var + np.average(stds**2, axis=0, weights=w)
    np.testing.assert_allclose(
        ensemble.spread(list(members), w, list(stds)), np.sqrt(total), rtol=1e-5
    )
    np.testing.assert_array_equal(ensemble.spread([members[0], members[0]]), 0.0)


def test_shape_mismatch_and_bad_weights():
    with pytest.raises(ValueError, match="different shapes"):
        ensemble.combine([np.zeros(3), np.zeros((3, 2))], "mean")
    with pytest.raises(ValueError, match="weights"):
        ensemble.combine([np.zeros(3), np.zeros(3)], "mean", [1.0, -1.0])
    with pytest.raises(ValueError, match="unknown ensemble method"):
        ensemble.combine([np.zeros(3)], "max")
