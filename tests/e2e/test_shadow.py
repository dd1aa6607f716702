"""Shadow (champion/challenger) scoring: released prediction unchanged, shadow column, agreement stats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_batch_score.pipelines import score
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model import shadow
from tests import util

keras = util.keras
N_FEATURES = 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow")
    table = util.feature_table(900, N_FEATURES, seed=8)
    return root, table, util.write_parquet(root / "in.parquet", table, row_group_size=250)


def _run(input_path: str, out, model: str, *extra: str, **options) -> dict:
    """Scores with ids and 100-row batches (options as in util.job_argv)."""
    defaults = {"model": model, "input": input_path, "id_column": "id", "batch_size": 100}
    return util.run_score(out, *extra, **{**defaults, **options}).summary


def _numpy_stats(a: np.ndarray, b: np.ndarray) -> dict:
    n = len(a)
    fa, fb = a.reshape(n, -1), b.reshape(n, -1)
    if fa.shape[1] == 1:
        agree = np.mean((fa[:, 0] >= 0.5) == (fb[:, 0] >= 0.5))
    else:
        agree = np.mean(fa.argmax(1) == fb.argmax(1))
    return {
        "mean_abs_diff": np.abs(fa - fb).mean(),
        "pearson": np.corrcoef(fa.ravel(), fb.ravel())[0, 1],
        "decision_agreement": agree,
    }


@pytest.mark.parametrize("classes", [1, 3])
def test_shadow_leaves_the_release_unchanged_and_reports_agreement(tmp_path, data, classes):
    _root, table, input_path = data
    champion, challenger = (
        util.mlp(N_FEATURES, outputs=classes, seed=1),
        util.mlp(N_FEATURES, outputs=classes, seed=2),
    )
    champion.save(tmp_path / "a.keras")
    challenger.save(tmp_path / "b.keras")
    _run(input_path, tmp_path / "plain", str(tmp_path / "a.keras"))
    summary = _run(
        input_path,
        tmp_path / "sh",
        str(tmp_path / "a.keras"),
        shadow_model=str(tmp_path / "b.keras"),
    )
    plain, got = util.read_predictions(tmp_path / "plain"), util.read_predictions(tmp_path / "sh")
    assert got.column_names == ["id", "prediction", "prediction_shadow", "model"]
    assert got["prediction"].equals(plain["prediction"])  # exact
    assert got["model"].equals(plain["model"])  # the released model's id, not the shadow's
    x = util.stacked(table, FEATURES)
    shadow_values = np.stack(got["prediction_shadow"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(
        shadow_values.reshape(len(x), -1),
        util.keras_reference(challenger, x).reshape(len(x), -1),
        atol=1e-6,
    )
    released = np.stack(got["prediction"].to_numpy(zero_copy_only=False)).astype(np.float64)
    expected = _numpy_stats(released, shadow_values.astype(np.float64))
    stats = summary["shadow"]["outputs"]["prediction"]
    assert summary["shadow"]["model"].startswith("b.keras@")
    assert stats["rows_compared"] == 900
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert 0 < stats["decision_agreement"] < 1  # two different random models disagree somewhere


def test_rows_the_shadow_fails_on_are_still_released(tmp_path, data):
    """A challenger that gives Inf on some rows never drops them: its column is null there.

    Null, not NaN: a NaN in an output file reads as a (broken) value; null says "no value".
    """
    _root, table, _ = data
    f0 = table["f0"].to_numpy().copy()
    bad = [5, 400, 899]
    f0[bad] = 100.0  # exp(100) overflows float32
    table = table.set_column(1, "f0", util.pa.array(f0))
    input_path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=300)
    champion = util.mlp(N_FEATURES, seed=1)
    champion.save(tmp_path / "a.keras")
    inp = keras.Input((N_FEATURES,), name="x")
    pick = keras.layers.Dense(1, use_bias=False)
    pick.build((None, N_FEATURES))
    kernel = np.zeros((N_FEATURES, 1), np.float32)
    kernel[0, 0] = 1.0
    pick.set_weights([kernel])
    keras.Model(inp, keras.layers.Activation("exponential")(pick(inp))).save(tmp_path / "exp.keras")
    summary = _run(
        input_path,
        tmp_path / "out",
        str(tmp_path / "a.keras"),
        shadow_model=str(tmp_path / "exp.keras"),
    )
    assert (summary["rows_scored"], summary["rows_failed"]) == (900, 0)
    got = util.read_predictions(tmp_path / "out")
    shadow = got["prediction_shadow"]
    assert np.flatnonzero(~np.asarray(shadow.is_valid())).tolist() == bad
    assert np.isfinite(shadow.drop_null().to_numpy()).all()
    ref = util.keras_reference(champion, util.stacked(table, FEATURES)).ravel()
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref, atol=1e-6)
    assert summary["shadow"]["outputs"]["prediction"]["rows_compared"] == 897


def test_agreement_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    a, b = rng.random((1000, 3)), rng.random((1000, 3))
    fn = shadow.AgreementFn(["p"])
    parts = [
        fn.add_input(
            fn.create_accumulator(), {"p": shadow.partial_stats(a[i : i + 77], b[i : i + 77])}
        )
        for i in range(0, 1000, 77)
    ]
    merged = fn.extract_output(fn.merge_accumulators(parts))["p"]
    whole = shadow.finish(shadow.partial_stats(a, b))
    for key in whole:
        assert merged[key] == pytest.approx(whole[key], rel=1e-12)
    assert merged["pearson"] == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-12)
    # outside [0, 1] there is no decision to agree on
    assert shadow.finish(shadow.partial_stats(a * 5, b))["decision_agreement"] is None


def test_shadow_outputs_must_match_and_yaml_key(tmp_path, data):
    _root, _, input_path = data
    util.mlp(N_FEATURES, seed=1).save(tmp_path / "a.keras")
    util.mlp(N_FEATURES, outputs=3, seed=1).save(tmp_path / "c.keras")
    config, _, _ = score.parse_args(
        ["--model", str(tmp_path / "a.keras"), "--input", input_path, "--output", str(tmp_path / "o"),
         "--id-column", "id", "--shadow-model", str(tmp_path / "c.keras")]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="shadow model"):
        score.plan(config)
    with pytest.raises(ConfigError, match="named 'shadow'"):
        score.parse_args(
            [
                "--model",
                "shadow=a.keras",
                "--input",
                "i",
                "--output",
                "o",
                "--shadow-model",
                "b.keras",
            ]
        )
    path = tmp_path / "c.yaml"
    path.write_text("model: a.keras\ninput: i.parquet\noutput: o\nshadow_model: b.keras\n")
    assert score.parse_args(["--config", str(path)])[0].shadow_model == "b.keras"


def test_drift_report_compares_the_shadow_predictions_with_the_reference(tmp_path, data):
    from keras_batch_score.pipelines import profile

    _, _, input_path = data
    champion, challenger = util.mlp(N_FEATURES, seed=1), util.mlp(N_FEATURES, seed=9)
    champion.save(tmp_path / "a.keras")
    challenger.save(tmp_path / "b.keras")
    prof = str(tmp_path / "profile.json")
    profile.run(
        ["--input", input_path, "--output", prof, "--id-column", "id", "--model", str(tmp_path / "a.keras"), "--quiet"]
    )  # fmt: skip
    flags = ["--reference-profile", prof]
    _run(
        input_path,
        tmp_path / "same",
        str(tmp_path / "a.keras"),
        *flags,
        "--shadow-model",
        str(tmp_path / "a.keras"),
    )
    _run(
        input_path,
        tmp_path / "diff",
        str(tmp_path / "a.keras"),
        *flags,
        "--shadow-model",
        str(tmp_path / "b.keras"),
    )
    same = json.loads((tmp_path / "same" / "drift.json").read_text())
    (pred,), (sh,) = same["predictions"], same["shadow_predictions"]
    assert (sh["name"], sh["reference"]) == ("prediction_shadow", "prediction")
    assert sh["histogram"] == pred["histogram"] and sh["metrics"] == pred["metrics"]  # same model
    diff = json.loads((tmp_path / "diff" / "drift.json").read_text())
    (sh,) = diff["shadow_predictions"]
    written = (
        util.read_predictions(tmp_path / "diff")["prediction_shadow"].to_numpy().astype(np.float64)
    )
    assert sh["current"]["mean"] == pytest.approx(written.mean(), rel=1e-6)
    edges = np.asarray(sh["histogram"]["edges"])
    counts = np.bincount(np.searchsorted(edges, written, side="right"), minlength=len(edges) + 1)
    assert sh["histogram"]["current"] == counts.tolist()
    assert sh["histogram"]["current"] != diff["predictions"][0]["histogram"]["current"]


def test_shadow_beside_an_ensemble(tmp_path, data):
    _, table, input_path = data
    paths = []
    for seed in (1, 2, 3):
        util.mlp(N_FEATURES, outputs=3, seed=seed).save(tmp_path / f"m{seed}.keras")
        paths.append(str(tmp_path / f"m{seed}.keras"))
    members = ["--model", f"a={paths[0]}", "--model", f"b={paths[1]}"]
    _run(input_path, tmp_path / "ens", members[1], *members[2:])
    summary = _run(
        input_path, tmp_path / "sh", members[1], *members[2:], "--shadow-model", paths[2]
    )
    plain, got = util.read_predictions(tmp_path / "ens"), util.read_predictions(tmp_path / "sh")
    assert got.column_names == ["id", "prediction", "prediction_std", "prediction_shadow", "model"]
    for column in ("prediction", "prediction_std", "model"):
        assert got[column].equals(plain[column]), column
    challenger = keras.models.load_model(paths[2])
    x = util.stacked(table, FEATURES)
    np.testing.assert_allclose(
        np.stack(got["prediction_shadow"].to_numpy(zero_copy_only=False)),
        util.keras_reference(challenger, x),
        atol=1e-6,
    )
    assert summary["rows_by_model"] == {got["model"][0].as_py(): 900}
