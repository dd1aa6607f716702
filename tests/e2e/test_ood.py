"""OOD scores against a reference profile, and the FGSM fragility flag, checked against numpy."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import cli, profile, score
from keras_batch_score.transforms.drift.profile_format import (
    CategoricalStats,
    NumericStats,
    Profile,
)
from keras_batch_score.transforms.postprocess import ood
from tests import util

keras = util.keras

FEATURES = ["f0", "f1", "f2", "f3"]
N_REF = 4000
N_CUR = 3000


def _table(n: int, seed: int, *, shift: float = 0.0, new_cat: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {"id": pa.array(np.arange(n, dtype=np.int64))}
    for i, name in enumerate(FEATURES):
        values = rng.normal(loc=i, scale=1.0 + i, size=n) + shift * (1.0 + i)
        cols[name] = pa.array(values.astype(np.float32))
    cats = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
    if new_cat:
        cats[:] = "purple"
    cols["colour"] = pa.array(cats.tolist(), pa.string())
    return pa.table(cols)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    ref = util.write_parquet(root / "ref.parquet", _table(N_REF, seed=1))
    prof = str(root / "profile.json")
    profile.run(["--input", ref, "--output", prof, "--id-column", "id", "--quiet"])
    model = util.mlp(len(FEATURES), seed=3)
    model_path = str(root / "model.keras")
    model.save(model_path)
    with open(prof) as f:
        doc = json.load(f)
    return {"root": root, "profile": prof, "doc": doc, "model": model_path}


def _score(env, table: pa.Table, name: str, *extra: str):
    data = util.write_parquet(env["root"] / name / "in.parquet", table)
    out = env["root"] / name / "out"
    summary = score.run(
        [
            *("--model", env["model"], "--input", data, "--output", str(out)),
            *("--id-column", "id", "--feature-columns", ",".join(FEATURES), "--quiet"),
            *("--reference-profile", env["profile"], *extra),
        ]
    )
    return util.read_predictions(out), summary


def test_reference_rows_are_flagged_at_no_more_than_the_tail_rate(env):
    preds, summary = _score(env, _table(N_CUR, seed=2), "same", "--ood-threshold", "0")
    assert preds.column_names[-4:] == ["ood_score", "ood_max_abs_z", "ood", "model"]
    share = float(np.mean(preds.column("ood_score").to_numpy() > 0))
    # Each numeric feature has two 0.1% tails; the categories are all seen.
    k = len(FEATURES)
    expected = 1 - (1 - 0.002) ** k  # 0.8%
    slack = 4 * np.sqrt(expected * (1 - expected) / N_CUR)  # 4 binomial standard deviations
    assert share <= expected + slack, share
    assert summary["rows_ood"] == int(np.sum(preds.column("ood").to_numpy(zero_copy_only=False)))


def test_shifted_rows_and_unseen_categories_are_flagged(env):
    preds, summary = _score(
        env, _table(300, seed=3, shift=6.0), "shifted", "--ood-threshold", "0.5"
    )
    score_ = preds.column("ood_score").to_numpy()
    # 6 std above the mean: beyond the reference's 99.9% quantile for (nearly) every row and feature.
    assert np.mean(score_ >= 0.6) > 0.95
    assert summary["rows_ood"] > 0.95 * 300
    cats, _ = _score(env, _table(200, seed=4, new_cat=True), "purple", "--ood-score")
    assert "ood" not in cats.column_names
    # One feature in five (the colour) is outside for every row, and a few numeric tails.
    assert np.all(cats.column("ood_score").to_numpy() >= 0.2 - 1e-6)


def test_max_abs_z_equals_numpy(env):
    table = _table(500, seed=5, shift=0.5)
    preds, _ = _score(env, table, "z", "--ood-score")
    feats = env["doc"]["features"]
    x = util.stacked(table, FEATURES).astype(np.float64)
    mean = np.array([feats[c]["mean"] for c in FEATURES])
    std = np.array([feats[c]["std"] for c in FEATURES])
    want = np.abs((x - mean) / std).max(axis=1)
    np.testing.assert_allclose(preds.column("ood_max_abs_z").to_numpy(), want, rtol=1e-5)


def test_ood_needs_a_profile(env, tmp_path, capsys):
    code = cli.main(
        [
            "score",
            "--model",
            env["model"],
            "--input",
            "x.parquet",
            "--output",
            str(tmp_path),
            "--ood-threshold",
            "0.1",
        ]
    )
    assert code == 2 and "--reference-profile" in capsys.readouterr().err


def _numeric(edges, counts, mean=0.0, std=1.0) -> NumericStats:
    return NumericStats(tuple(edges), tuple(counts), sum(counts), 0, edges[0], edges[-1], mean, std)


def test_tail_quantiles_interpolate_the_cumulative_counts():
    # Uniform on [0, 10] in 10 bins of 100: the 0.1% quantile is 0.01, the 99.9% one 9.99.
    lo, hi = ood.tail_quantiles(_numeric(np.arange(11.0), [100] * 10))
    assert lo == pytest.approx(0.01) and hi == pytest.approx(9.99)
    # Unequal bins: 0.1% of 1000 rows = 1 row, inside the first bin of 4 rows [0, 2): 2 * 1/4.
    lo, hi = ood.tail_quantiles(_numeric([0.0, 2.0, 3.0, 7.0], [4, 992, 4]))
    assert lo == pytest.approx(0.5) and hi == pytest.approx(7.0 - 4.0 * 1 / 4)


def test_scores_count_outside_values_unseen_categories_and_skip_nulls():
    prof = Profile(
        features={
            "a": _numeric(np.arange(11.0), [100] * 10, mean=5.0, std=2.0),
            "c": CategoricalStats(("x", "y"), (600, 400), 0, 1000, 0),
            # Rare values were pruned (1% of the rows): an unlisted value may have been seen.
            "d": CategoricalStats(("x",), (990,), 10, 1000, 0),
        }
    )
    ref = ood.reference_from_profile(prof)
    table = pa.table(
        {
            "a": pa.array([5.0, 11.0, None, -1.0], pa.float64()),
            "c": pa.array(["x", "z", "z", None]),
            "d": pa.array(["q", "q", "x", "x"]),
        }
    )
    score_, z = ood.ood_scores(table, ref)
    np.testing.assert_allclose(score_, [0.0, 2 / 3, 1 / 2, 1 / 2])
    np.testing.assert_allclose(z, [0.0, 3.0, 0.0, 3.0])


def test_fragile_rows_are_the_steep_ones(tmp_path):
    # f(x) = sigmoid(50 x0): steep near x0 = 0, flat for |x0| >= 1. One FGSM step of 0.01
    # moves f by about 50 * 0.01 / 4 = 0.125 at 0 and by less than 1e-15 at |x0| >= 1.
    inp = keras.Input((2,), name="x")
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(inp))
    dense.set_weights([np.array([[50.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    steep = rng.uniform(-0.02, 0.02, 40)
    flat = rng.uniform(1.0, 3.0, 60) * rng.choice([-1.0, 1.0], 60)
    x0 = np.concatenate([steep, flat]).astype(np.float32)
    table = pa.table(
        {"id": np.arange(100), "f0": x0, "f1": rng.normal(size=100).astype(np.float32)}
    )
    data = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out"
    summary = score.run(
        [
            *("--model", path, "--input", data, "--output", str(out), "--id-column", "id"),
            *("--adversarial-check", "--adversarial-epsilon", "0.01"),
            *("--adversarial-threshold", "0.05", "--quiet"),
        ]
    )
    preds = util.read_predictions(out)
    fragile = preds.column("fragile").to_numpy(zero_copy_only=False)
    sig = lambda v: 1 / (1 + np.exp(-50.0 * v))  # noqa: E731
    want = np.abs(sig(x0 + 0.01) - sig(x0)) > 0.05
    assert want[:40].all() and not want[40:].any()
    np.testing.assert_array_equal(fragile, want)
    assert summary["rows_fragile"] == 40
