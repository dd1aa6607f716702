"""Calibration fitting and metrics against sklearn and direct references."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss

from keras_batch_score.transforms.postprocess import calibration as cal
from keras_batch_score.transforms.postprocess import calibration_metrics as cm


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass(n=3000, k=4, sharpen=3.0, seed=0):
    """True probabilities softmax(z), labels drawn from them; the model reports softmax(sharpen*z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.0, size=(n, k))
    true = _softmax(z)
    labels = (rng.random(n)[:, None] > np.cumsum(true, axis=1)).sum(axis=1)
    return _softmax(sharpen * z), labels


def _binary(n=3000, sharpen=3.0, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 1 / (1 + np.exp(-sharpen * z)), labels


def _ece_reference(conf, correct, bins=15):
    total, worst = 0.0, 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        mask = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if mask.any():
            gap = abs(correct[mask].mean() - conf[mask].mean())
            total += mask.sum() / len(conf) * gap
            worst = max(worst, gap)
    return total, worst


def test_ece_mce_match_direct_reference_multiclass():
    probs, y = _multiclass()
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    ref_ece, ref_mce = _ece_reference(conf, correct)
    assert cm.ece(probs, y) == pytest.approx(ref_ece, abs=1e-12)
    assert cm.mce(probs, y) == pytest.approx(ref_mce, abs=1e-12)
    assert ref_ece > 0.05  # the sharpened model is clearly miscalibrated


def test_ece_binary_reference_and_perfect_calibration():
    p, y = _binary()
    ref_ece, ref_mce = _ece_reference(p, (y == 1).astype(float))
    assert cm.ece(p, y) == pytest.approx(ref_ece, abs=1e-12)
    assert cm.mce(p, y) == pytest.approx(ref_mce, abs=1e-12)
    # constant prediction equal to the base rate is perfectly calibrated
    base = np.full(len(y), y.mean())
    assert cm.ece(base, y) == pytest.approx(0.0, abs=1e-12)


def test_brier_and_nll_match_sklearn():
    p, y = _binary()
    assert cm.brier(p, y) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert cm.nll(p, y) == pytest.approx(log_loss(y, p), rel=1e-6)
    probs, yk = _multiclass()
    onehot = np.eye(4)[yk]
    assert cm.brier(probs, yk) == pytest.approx(np.mean(((probs - onehot) ** 2).sum(1)), rel=1e-12)
    assert cm.brier(probs, yk) == pytest.approx(
        brier_score_loss(yk, probs, labels=[0, 1, 2, 3], scale_by_half=False), rel=1e-9
    )
    assert cm.nll(probs, yk) == pytest.approx(log_loss(yk, probs, labels=[0, 1, 2, 3]), rel=1e-6)


def test_platt_matches_sklearn_logistic_regression():
    p, y = _binary()
    s = np.log(p) - np.log1p(-p)
    lr = LogisticRegression(C=1e10, tol=1e-12, max_iter=10000).fit(s[:, None], y)
    fitted = cal.fit(p, y, "platt")
    assert fitted.params["a"] == pytest.approx(lr.coef_[0, 0], rel=1e-4)
    assert fitted.params["b"] == pytest.approx(lr.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(fitted.apply(p), lr.predict_proba(s[:, None])[:, 1], atol=1e-6)
    # the model was 3x overconfident: a is about 1/3
    assert fitted.params["a"] == pytest.approx(1 / 3, rel=0.15)


def test_platt_refuses_multiclass():
    probs, y = _multiclass(n=100)
    with pytest.raises(ValueError, match="binary"):
        cal.fit(probs, y, "platt")


@pytest.mark.parametrize("kind", ["probabilities", "logits"])
def test_temperature_lowers_ece_and_nll_and_keeps_argmax(kind):
    probs, y = _multiclass()
    scores = probs if kind == "probabilities" else np.log(probs) + 5.0  # logits up to a shift
    fitted = cal.fit(scores, y, "temperature")
    assert fitted.input_kind == kind
    after = fitted.apply(scores)
    np.testing.assert_array_equal(after.argmax(axis=1), probs.argmax(axis=1))
    assert fitted.params["temperature"] == pytest.approx(3.0, rel=0.15)
    assert cm.nll(after, y) < cm.nll(probs, y)
    assert cm.ece(after, y) < cm.ece(probs, y) / 2
    assert fitted.report["after_in_sample"]["ece"] == pytest.approx(cm.ece(after, y))
    # the fitted T minimizes the NLL: nudging it either way is worse
    logits = np.log(probs)
    t = fitted.params["temperature"]
    for other in (t * 0.97, t * 1.03):
        assert cm.nll(_softmax(logits / other), y) > cm.nll(_softmax(logits / t), y)


def test_temperature_binary():
    p, y = _binary()
    fitted = cal.fit(p, y, "temperature")
    after = fitted.apply(p)
    np.testing.assert_array_equal(after >= 0.5, p >= 0.5)
    assert cm.ece(after, y) < cm.ece(p, y)
    assert cm.nll(after, y) < cm.nll(p, y)


def test_isotonic_matches_sklearn_and_is_monotone():
    p, y = _binary()
    p = np.round(p, 3)  # create ties, which sklearn pools by mean
    fitted = cal.fit(p, y, "isotonic")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    grid = np.linspace(-0.1, 1.1, 1001)
    np.testing.assert_allclose(fitted.apply(grid), iso.predict(grid), atol=1e-9)
    np.testing.assert_allclose(fitted.apply(p), iso.predict(p), atol=1e-9)
    assert np.all(np.diff(fitted.apply(grid)) >= -1e-12)
    assert fitted.report["after"]["nll"] < fitted.report["before"]["nll"]


def test_isotonic_multiclass_one_vs_rest_renormalized():
    probs, y = _multiclass(n=1500)
    fitted = cal.fit(probs, y, "isotonic")
    out = fitted.apply(probs)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-9)
    raw = np.column_stack(
        [
            IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)
            .fit(probs[:, c], (y == c).astype(float))
            .predict(probs[:, c])
            for c in range(4)
        ]
    )
    np.testing.assert_allclose(out, raw / raw.sum(axis=1, keepdims=True), atol=1e-9)


def test_json_round_trip_gives_the_same_predictions():
    probs, y = _multiclass(n=500)
    p, yb = _binary(n=500)
    for scores, labels, method in (
        (probs, y, "temperature"),
        (p, yb, "platt"),
        (probs, y, "isotonic"),
    ):
        fitted = cal.fit(scores, labels, method)
        text = fitted.to_json()
        json.loads(text)  # plain JSON
        again = cal.Calibration.from_json(text)
        np.testing.assert_array_equal(again.apply(scores), fitted.apply(scores))
    with pytest.raises(ValueError, match="method"):
        cal.Calibration.from_dict({"input_kind": "logits", "num_classes": 1, "params": {}})


def test_bad_labels_and_width_mismatch():
    probs, y = _multiclass(n=50)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\]"):
        cal.fit(probs, y + 1, "temperature")
    fitted = cal.fit(probs, y, "temperature")
    with pytest.raises(ValueError, match="fitted on 4-wide"):
        fitted.apply(probs[:, :3])


def test_reliability_html_for_extreme_bins():
    from keras_batch_score.transforms.postprocess.reliability import reliability_html

    p = np.array([0.0, 0.02, 0.97, 1.0, 0.5, 0.55])
    y = np.array([0, 0, 0, 0, 1, 0])  # bins with accuracy 0 and confidence 0 or 1
    report = {"before": cm.metrics(p, y), "after": cm.metrics(p, y)}
    page = reliability_html(p, p, y, report, "t")
    assert page.count("<circle") == 8 and f"{report['before']['ece']:.5f}" in page
    assert "<img" not in page and "<svg" in page
