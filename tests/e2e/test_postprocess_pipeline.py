"""End-to-end: ensembles, calibration, post-transforms, MC dropout, A/B routing and fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import score
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.mc_dropout import MCDropout
from keras_batch_score.transforms.model.output_keys import std_key
from keras_batch_score.transforms.postprocess import calibration as cal
from keras_batch_score.transforms.postprocess import calibration_metrics as cm
from keras_batch_score.transforms.postprocess.routing import route
from keras_batch_score.transforms.postprocess.transforms import ToFallbackDoFn
from tests import util

keras = util.keras
tf = util.import_tensorflow()

N_FEATURES = 5
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def _classifier(
    seed: int, classes: int = 3, scale: float = 1.0, dropout: float = 0.0
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.Dense(16, activation="relu")(inp)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    logits = keras.layers.Dense(classes)(h)
    if scale != 1.0:
        logits = keras.layers.Rescaling(scale)(logits)
    out = (
        keras.layers.Softmax()(logits)
        if classes > 1
        else keras.layers.Activation("sigmoid")(logits)
    )
    return keras.Model(inp, out)


def _save(model: keras.Model, path) -> str:
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    table = util.feature_table(1200, N_FEATURES, seed=3)
    return table, util.write_parquet(root / "in.parquet", table, row_group_size=400)


def _run(input_path: str, output, *extra: str, **options) -> dict:
    """Scores ``input_path`` into ``output`` with ids and 256-row batches (options as in util.job_argv)."""
    defaults = {"input": input_path, "id_column": "id", "batch_size": 256}
    return util.run_score(output, *extra, **{**defaults, **options}).summary


def _x(table: pa.Table) -> np.ndarray:
    return util.stacked(table, FEATURES)


# --------------------------------------------------------------------------- 1. ensembles


def test_geometric_ensemble_with_member_columns_and_spread(tmp_path, data):
    table, input_path = data
    a, b = _classifier(1), _classifier(2)
    pa_, pb = _save(a, tmp_path / "a.keras"), _save(b, tmp_path / "b.keras")
    summary = _run(
        input_path,
        tmp_path / "out",
        model=[f"alpha={pa_}", f"beta={pb}"],
        ensemble="geometric",
        ensemble_weights="alpha=3,beta=1",
        keep_member_predictions=True,
    )
    got = util.read_predictions(tmp_path / "out")
    assert got.column_names == [
        "id",
        "prediction",
        "prediction_std",
        "prediction__alpha",
        "prediction__beta",
        "model",
    ]
    x = _x(table)
    ra, rb = util.keras_reference(a, x), util.keras_reference(b, x)
    pooled = ra**0.75 * rb**0.25
    expected = pooled / pooled.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        np.stack(got["prediction"].to_numpy(zero_copy_only=False)), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        np.stack(got["prediction__alpha"].to_numpy(zero_copy_only=False)), ra, atol=1e-6
    )
    np.testing.assert_allclose(
        np.stack(got["prediction__beta"].to_numpy(zero_copy_only=False)), rb, atol=1e-6
    )
    mean = 0.75 * ra + 0.25 * rb
    std = np.sqrt(0.75 * (ra - mean) ** 2 + 0.25 * (rb - mean) ** 2)
    np.testing.assert_allclose(
        np.stack(got["prediction_std"].to_numpy(zero_copy_only=False)), std, atol=1e-5
    )
    labels = set(got["model"].to_pylist())
    assert len(labels) == 1 and labels.pop().startswith("ensemble[geometric](alpha=a.keras@")
    assert summary["rows_scored"] == 1200 and summary["rows_by_model"] == {
        next(iter(set(got["model"].to_pylist()))): 1200
    }


def test_members_with_incompatible_outputs_fail_before_reading(tmp_path, data):
    _, input_path = data
    pa_ = _save(_classifier(1, classes=3), tmp_path / "a.keras")
    pb = _save(_classifier(2, classes=4), tmp_path / "b.keras")
    with pytest.raises(
        ConfigError, match=r"'b' .* has outputs .*\(4,\).* same output names and shapes"
    ):
        _run(input_path, tmp_path / "out", model=[pa_, pb])
    assert not os.path.exists(tmp_path / "out")


# --------------------------------------------------------------------------- 2. calibration, clip, labels


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Labels drawn from a teacher model's probabilities; the student is the teacher sharpened 4x."""
    root = tmp_path_factory.mktemp("labelled")
    teacher = _classifier(5, classes=3, scale=1.5)
    student = _classifier(5, classes=3, scale=6.0)
    table = util.feature_table(2000, N_FEATURES, seed=9)
    probs = util.keras_reference(teacher, _x(table))
    rng = np.random.default_rng(0)
    y = (rng.random(len(probs))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    table = table.append_column("y", pa.array(np.minimum(y, 2).astype(np.int64)))
    path = util.write_parquet(root / "labelled.parquet", table, row_group_size=500)
    return table, path, student, _save(student, root / "student.keras")


def test_calibrate_then_score_with_calibration_and_top_k(tmp_path, labelled):
    from keras_batch_score.pipelines import calibrate

    table, path, student, model_path = labelled
    out_json = tmp_path / "calib" / "calib.json"
    result = calibrate.run(
        [
            "--model",
            model_path,
            "--input",
            path,
            "--label-column",
            "y",
            "--id-column",
            "id",
            "--method",
            "temperature",
            "--output",
            str(out_json),
            "--quiet",
        ]
    )
    raw = util.keras_reference(student, _x(table))
    y = table["y"].to_numpy()
    # independent reference: scipy fit of T on log-probabilities
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logp = np.log(np.clip(raw.astype(np.float64), 1e-12, 1))
    ref_t = minimize_scalar(
        lambda t: -log_softmax(logp / t, axis=1)[np.arange(len(y)), y].mean(),
        bounds=(0.05, 50),
        method="bounded",
        options={"xatol": 1e-9},
    ).x
    assert result["params"]["temperature"] == pytest.approx(ref_t, rel=1e-3)
    assert result["params"]["temperature"] > 1.5  # the student was overconfident
    report = result["report"]
    assert report["rows"] == 2000 and report["before"]["ece"] == pytest.approx(
        cm.ece(raw, y), abs=1e-5
    )
    assert (
        report["after"]["ece"] < report["before"]["ece"]
        and report["after"]["nll"] < report["before"]["nll"]
    )
    assert not (tmp_path / "calib" / "calib.reliability.png").exists()
    html_text = (tmp_path / "calib" / "calib.reliability.html").read_text()
    assert "<svg" in html_text and "ECE" in html_text and "cross-fitted, 5 folds" in html_text

    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\nbird\n")
    _run(
        path,
        tmp_path / "out",
        model=model_path,
        calibration=str(out_json),
        class_names=str(names),
        top_k=2,
        feature_columns=",".join(FEATURES),
    )
    got = util.read_predictions(tmp_path / "out")
    assert got.column_names == ["id", "prediction", "top_k_labels", "top_k_scores", "model"]
    t = result["params"]["temperature"]
    expected = np.exp(logp / t) / np.exp(logp / t).sum(axis=1, keepdims=True)
    pred = np.stack(got["prediction"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(pred, expected, atol=1e-5)
    order = np.argsort(-expected, axis=1)[:, :2]
    np.testing.assert_array_equal(
        got["top_k_labels"].to_pylist(), np.array(["cat", "dog", "bird"])[order].tolist()
    )
    np.testing.assert_allclose(
        np.array(got["top_k_scores"].to_pylist()), np.take_along_axis(expected, order, 1), atol=1e-5
    )
    assert got.schema.field("top_k_labels").type == pa.list_(pa.string())


def test_inverse_standardization_and_clip(tmp_path, data):
    table, input_path = data
    keras.utils.set_random_seed(4)
    inp = keras.Input((N_FEATURES,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(8, activation="tanh")(inp)))
    path = _save(model, tmp_path / "reg.keras")
    _run(input_path, tmp_path / "out", model=path, target_mean=10, target_std=4, clip_min="9.5")
    got = util.read_predictions(tmp_path / "out")
    raw = util.keras_reference(model, _x(table))[:, 0]
    expected = np.maximum(raw * 4 + 10, 9.5)
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, rtol=1e-6)
    assert (expected == 9.5).any() and (expected > 9.5).any()


def test_bad_calibration_and_class_names_fail_at_startup(tmp_path, data):
    _, input_path = data
    model_path = _save(_classifier(1), tmp_path / "m.keras")
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="lists 2 names, the model outputs 3 classes"):
        _run(input_path, tmp_path / "o", model=model_path, class_names=str(names), top_k=1)
    p = np.full(10, 0.5)
    (tmp_path / "c.json").write_text(cal.fit(p, np.arange(10) % 2, "platt").to_json())
    with pytest.raises(ConfigError, match="fitted on 1-wide scores, but the model outputs 3"):
        _run(input_path, tmp_path / "o", model=model_path, calibration=str(tmp_path / "c.json"))


# --------------------------------------------------------------------------- 3. MC dropout


def _loaded(model: keras.Model, path) -> object:
    from keras_batch_score.transforms.model.load import load
    from keras_batch_score.transforms.model.spec import ModelSpec

    model.save(path)
    return load(ModelSpec(str(path)))


def test_mc_dropout_std_positive_with_dropout_zero_without_and_seeded(tmp_path, data):
    table, _ = data
    x = {"x": _x(table)[:300]}
    with_dropout = _loaded(_classifier(1, dropout=0.5), tmp_path / "d.keras")
    a = MCDropout(with_dropout, 16, seed=7).predict(x)
    b = MCDropout(with_dropout, 16, seed=7).predict(x)
    c = MCDropout(with_dropout, 16, seed=8).predict(x)
    key = with_dropout.outputs[0].name
    assert a[key].shape == (300, 3) and a[std_key(key)].shape == (300, 3)
    assert (a[std_key(key)] > 0).mean() > 0.9
    np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a[std_key(key)], b[std_key(key)])
    assert not np.array_equal(a[key], c[key])
    np.testing.assert_allclose(a[key].sum(axis=1), 1.0, rtol=1e-5)

    # no dropout, but batch normalization: passes are identical and BN stays in inference mode
    keras.utils.set_random_seed(3)
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inp))
    plain = keras.Model(inp, keras.layers.Dense(1)(h))
    plain.layers[2].moving_mean.assign(
        np.full(8, 0.3, np.float32)
    )  # make inference != training mode
    loaded = _loaded(plain, tmp_path / "p.keras")
    out = MCDropout(loaded, 5, seed=1).predict(x)
    name = loaded.outputs[0].name
    np.testing.assert_array_equal(out[std_key(name)], 0.0)
    np.testing.assert_allclose(out[name], util.keras_reference(plain, x["x"])[:, 0], atol=1e-6)


def test_seeded_mc_dropout_gives_the_same_results_when_called_from_several_threads(tmp_path, data):
    """Model calls run on two threads; each MC call resets the seeds its passes read."""
    from concurrent.futures import ThreadPoolExecutor

    table, _ = data
    x = _x(table)
    batches = [{"x": x[i * 50 : (i + 1) * 50]} for i in range(12)]
    loaded = _loaded(_classifier(1, dropout=0.5), tmp_path / "d.keras")
    mc = MCDropout(loaded, 8, seed=11)
    alone = [mc.predict(b) for b in batches]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(mc.predict, batches * 3))
    for i, out in enumerate(together):
        for key, values in alone[i % len(batches)].items():
            np.testing.assert_array_equal(out[key], values, err_msg=f"batch {i}, {key}")


def test_mc_dropout_pipeline_is_reproducible(tmp_path, data):
    table, input_path = data
    path = _save(_classifier(1, classes=1, dropout=0.3), tmp_path / "d.keras")
    flags = ["--model", path, "--mc-dropout-samples", "10", "--seed", "42"]
    _run(input_path, tmp_path / "o1", *flags)
    _run(input_path, tmp_path / "o2", *flags)
    one, two = util.read_predictions(tmp_path / "o1"), util.read_predictions(tmp_path / "o2")
    assert one.column_names == ["id", "prediction", "prediction_std", "model"]
    assert one.equals(two)
    std = one["prediction_std"].to_numpy()
    assert (std > 0).all() and (std < 0.5).all()
    deterministic = util.keras_reference(keras.models.load_model(path), _x(table))[:, 0]
    # the MC mean stays close to the deterministic prediction (dropout 0.3, 10 passes)
    assert np.abs(one["prediction"].to_numpy() - deterministic).mean() < 0.1


def test_mc_dropout_on_a_sequential_model(tmp_path, data):
    """Sequential models have no ``model.input``; MC dropout reads the loaded input structure."""
    table, _ = data
    keras.utils.set_random_seed(5)
    seq = keras.Sequential(
        [keras.Input((N_FEATURES,)), keras.layers.Dense(8), keras.layers.Dropout(0.0),
         keras.layers.Dense(1)]
    )  # fmt: skip
    loaded = _loaded(seq, tmp_path / "s.keras")
    x = {loaded.inputs[0].name: _x(table)[:200]}
    out = MCDropout(loaded, 4, seed=1).predict(x)
    name = loaded.outputs[0].name
    np.testing.assert_allclose(
        out[name], util.keras_reference(seq, _x(table)[:200])[:, 0], atol=1e-6
    )
    np.testing.assert_array_equal(out[std_key(name)], 0.0)


def test_mc_dropout_refuses_saved_model(tmp_path, data):
    _, input_path = data
    _classifier(1).export(str(tmp_path / "sm"))
    with pytest.raises(ConfigError, match=r"needs a \.keras or \.h5 model"):
        _run(input_path, tmp_path / "o", model=str(tmp_path / "sm"), mc_dropout_samples=4)


# --------------------------------------------------------------------------- 4. A/B split and fallback


def _ids(n: int, kind: str) -> pa.Table:
    if kind == "str":
        return pa.table({"id": pa.array([f"user-{i}" for i in range(n)])})
    return pa.table({"id": pa.array(np.arange(n, dtype=np.int64) * 7919)})


@pytest.mark.parametrize("kind", ["str", "int"])
def test_ab_route_shares_on_100k_rows_and_batching_invariance(kind):
    table = _ids(100_000, kind)
    arms = route(table, ["id"], [0.9, 0.1])
    assert abs((arms == 1).mean() - 0.1) < 0.02 and abs((arms == 0).mean() - 0.9) < 0.02
    three = route(table, ["id"], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        np.bincount(three, minlength=3) / 100_000, [0.5, 0.3, 0.2], atol=0.02
    )
    pieces = np.concatenate(
        [route(table.slice(s, 7000), ["id"], [0.9, 0.1]) for s in range(0, 100_000, 7000)]
    )
    np.testing.assert_array_equal(pieces, arms)


def test_ab_route_is_stable_across_processes():
    code = (
        "import numpy as np, pyarrow as pa; from keras_batch_score.transforms.postprocess.routing import route;"
        "t = pa.table({'id': [f'user-{i}' for i in range(2000)], 'n': np.arange(2000)});"
        "print(''.join(map(str, route(t, ['id', 'n'], [0.5, 0.5]))))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=str(util.REPO),
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(runs) == 1
    t = pa.table({"id": [f"user-{i}" for i in range(2000)], "n": np.arange(2000)})
    assert runs.pop() == "".join(map(str, route(t, ["id", "n"], [0.5, 0.5])))


def test_ab_split_pipeline_routes_rows_and_counts_them(tmp_path, data):
    table, input_path = data
    a, b = _classifier(1), _classifier(2)
    pa_, pb = _save(a, tmp_path / "a.keras"), _save(b, tmp_path / "b.keras")
    flags = ["--model", f"ctrl={pa_}", "--model", f"exp={pb}", "--ab-split", "ctrl=0.7,exp=0.3"]
    summary = _run(input_path, tmp_path / "o1", *flags)
    _run(input_path, tmp_path / "o2", *flags)
    got = util.read_predictions(tmp_path / "o1")
    assert got.equals(util.read_predictions(tmp_path / "o2"))
    arms = route(table.select(["id"]), ["id"], [0.7, 0.3])
    ids = {0: summary_id(summary, "a.keras"), 1: summary_id(summary, "b.keras")}
    assert got["model"].to_pylist() == [ids[i] for i in arms]
    x = _x(table)
    expected = np.where(arms[:, None] == 0, util.keras_reference(a, x), util.keras_reference(b, x))
    np.testing.assert_allclose(
        np.stack(got["prediction"].to_numpy(zero_copy_only=False)), expected, atol=1e-6
    )
    assert summary["rows_by_model"] == {
        ids[0]: int((arms == 0).sum()),
        ids[1]: int((arms == 1).sum()),
    }
    assert summary["rows_scored"] == 1200 and summary["rows_failed"] == 0


def summary_id(summary: dict, file_name: str) -> str:
    return next(k for k in summary["rows_by_model"] if k.startswith(file_name + "@"))


@keras.saving.register_keras_serializable(package="kbs_test")
class Tripwire(keras.layers.Layer):
    """Raises at inference when any row's first feature exceeds 40 (a stand-in for a flaky model)."""

    def call(self, x):
        check = tf.debugging.assert_less(tf.reduce_max(x[:, 0]), 40.0, message="tripwire")
        with tf.control_dependencies([check]):
            return tf.identity(x)


def test_fallback_scores_batches_the_primary_fails_on(tmp_path):
    table = util.feature_table(1500, N_FEATURES, seed=4)
    f0 = table["f0"].to_numpy().copy()
    f0[[10, 700, 701, 1400]] = 50.0
    table = table.set_column(1, "f0", pa.array(f0))
    input_path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=300)
    keras.utils.set_random_seed(0)
    inp = keras.Input((N_FEATURES,), name="x")
    primary = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(Tripwire()(inp)))
    fallback = _classifier(6, classes=1)
    pp_, pf = (
        _save(primary, tmp_path / "primary.keras"),
        _save(fallback, tmp_path / "fallback.keras"),
    )
    flags = ["--model", pp_, "--fallback-model", pf, "--custom-object", f"{__name__}:Tripwire"]
    summary = _run(input_path, tmp_path / "out", *flags)
    got = util.read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(
        got["id"].to_numpy(), np.arange(1500)
    )  # nothing lost, nothing doubled
    fb_id = summary_id(summary, "fallback.keras")
    from_fallback = np.array([m == fb_id for m in got["model"].to_pylist()])
    assert from_fallback[[10, 700, 701, 1400]].all() and 0 < from_fallback.sum() < 1500
    x = _x(table)
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[from_fallback],
        util.keras_reference(fallback, x[from_fallback])[:, 0],
        atol=1e-6,
    )
    safe = ~from_fallback
    ref_primary = keras.Model(inp, primary.layers[-1](inp))  # the primary without its tripwire
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[safe],
        util.keras_reference(ref_primary, x[safe])[:, 0],
        atol=1e-6,
    )
    assert summary["rows_fallback"] == int(from_fallback.sum()) and summary["rows_failed"] == 0
    assert summary["rows_by_model"][fb_id] == int(from_fallback.sum())

    # without a fallback the same batches go to the errors output
    summary = _run(input_path, tmp_path / "out2", model=pp_, custom_object=f"{__name__}:Tripwire")
    assert (
        summary["rows_failed"] == int(from_fallback.sum())
        and summary["rows_scored"] == 1500 - summary["rows_failed"]
    )
    errors = util.read_errors(tmp_path / "out2")
    assert {e["stage"] for e in errors} == {"inference"} and all(
        "tripwire" in e["reason"] for e in errors
    )


# --------------------------------------------------------------------------- configuration


def test_members_from_flags_and_yaml(tmp_path):
    import yaml

    from keras_batch_score.pipelines.planning.models import Member

    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "big", "path": "gs://b/big.keras", "weight": 3},
                    {"path": "small.h5"},
                ],
                "input": "in.parquet",
                "output": "out",
                "ensemble": "median",
                "clip_min": 0,
            }
        )
    )
    config, _, _ = score.parse_args(["--config", str(cfg)])
    from keras_batch_score.pipelines.planning.models import parse_members

    assert parse_members(config.model, config.ensemble_weights) == [
        Member("big", "gs://b/big.keras", 3.0),
        Member("small", "small.h5", 1.0),
    ]
    assert config.ensemble == "median" and config.clip_min == 0.0
    config, _, _ = score.parse_args(
        [
            "--model",
            "a=x.keras",
            "--model",
            "gs://bucket/k=v/y.keras",
            "--input",
            "i",
            "--output",
            "o",
            "--ensemble-weights",
            "a=2",
        ]
    )
    assert parse_members(config.model, config.ensemble_weights) == [
        Member("a", "x.keras", 2.0),
        Member("y", "gs://bucket/k=v/y.keras", 1.0),
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ab-split", "a=0.5,b=0.5"], "must be exactly the model names"),
        (["--ab-split", "m1=0.5,m2=0.6", "--id-column", "id"], "sum to 1"),
        (["--ab-split", "m1=0.5,m2=0.5"], "pass --id-column"),
        (["--ensemble-weights", "zz=1"], "match no model"),
        (["--top-k", "2"], "needs 'class_names'"),
        (["--target-mean", "1"], "set both or neither"),
        (["--clip-min", "2", "--clip-max", "1"], "greater than"),
        (["--mc-dropout-samples", "1"], "0 \\(off\\) or >= 2"),
    ],
)
def test_bad_options_are_config_errors(flags, message):
    base = ["--model", "m1=a.keras", "--model", "m2=b.keras", "--input", "i", "--output", "o"]
    with pytest.raises(ConfigError, match=message):
        score.parse_args([*base, *flags])


def test_fallback_logs_each_distinct_error_once(caplog):
    from keras_batch_score.transforms.model.handler import FailedRows

    fn = ToFallbackDoFn()
    fn.setup()
    batch = ScoringBatch(
        table=pa.table({"id": [1, 2]}),
        features={"x": np.zeros((2, 1))},
        predictions={"p__a": np.zeros(2)},
    )
    with caplog.at_level("WARNING", logger="keras_batch_score"):
        out = []
        for reasons in (
            ["ValueError: boom"] * 2,
            ["ValueError: boom"] * 2,
            ["RuntimeError: other"] * 2,
        ):
            out += list(fn.process(FailedRows(batch, reasons)))
    assert len(out) == 3 and all(b.predictions == {} and b.num_rows == 2 for b in out)
    messages = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage()]
    assert (
        len(messages) == 2
        and "ValueError: boom" in messages[0]
        and "RuntimeError: other" in messages[1]
    )


def test_calibrate_an_ensemble_uses_the_combined_output(tmp_path, labelled):
    from keras_batch_score.pipelines import calibrate

    table, path, student, model_path = labelled
    other = _classifier(8)
    other_path = _save(other, tmp_path / "other.keras")
    result = calibrate.run(
        ["--model", f"s={model_path}", "--model", f"o={other_path}", "--ensemble", "mean",
         "--input", path, "--label-column", "y", "--id-column", "id", "--method", "isotonic",
         "--output", str(tmp_path / "c.json"), "--quiet"]
    )  # fmt: skip
    x, y = _x(table), table["y"].to_numpy()
    combined = (util.keras_reference(student, x) + util.keras_reference(other, x)) / 2
    assert result["report"]["before"]["ece"] == pytest.approx(cm.ece(combined, y), abs=1e-5)
    assert result["report"]["before"]["brier"] == pytest.approx(cm.brier(combined, y), abs=1e-5)
    assert result["report"]["model"].startswith("ensemble[mean](s=")
    assert result["report"]["after"]["nll"] < result["report"]["before"]["nll"]
