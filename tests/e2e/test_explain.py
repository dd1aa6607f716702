"""--explain: attributions through the CLI, checked against Keras and hand-computed linear models."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import cli, profile
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.postprocess import explain
from tests import util

keras = util.keras
tf = util.import_tensorflow()

FEATURES = ["f0", "f1", "f2", "f3"]
W = np.array([[0.5], [-2.0], [1.5], [3.0]], dtype=np.float32)
B = np.array([0.25], dtype=np.float32)


def _score(model: str, input_path: str, output, *extra: str, **options) -> dict:
    """Scores with ids and 128-row batches (options as in util.job_argv)."""
    defaults = {"model": model, "input": input_path, "id_column": "id", "batch_size": 128}
    return util.run_score(output, *extra, **{**defaults, **options}).summary


def _x(table: pa.Table, columns=FEATURES) -> np.ndarray:
    return util.stacked(table, list(columns))


def _attrs(preds: pa.Table, columns=FEATURES) -> np.ndarray:
    return np.stack([preds.column(f"attr_{c}").to_numpy() for c in columns], axis=1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    table = util.feature_table(300, len(FEATURES), seed=5)
    data = util.write_parquet(root / "in" / "part-0.parquet", table, row_group_size=100)
    # A small smooth nonlinear MLP.
    keras.utils.set_random_seed(2)
    inp = keras.Input((len(FEATURES),), name="x")
    h = keras.layers.Dense(8, activation="tanh")(inp)
    h = keras.layers.Dense(8, activation="tanh")(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    mlp = keras.Model(inp, out)
    mlp_path = str(root / "mlp.keras")
    mlp.save(mlp_path)
    # A linear model with known weights.
    inp = keras.Input((len(FEATURES),), name="x")
    dense = keras.layers.Dense(1)
    linear = keras.Model(inp, dense(inp))
    dense.set_weights([W, B])
    linear_path = str(root / "linear.keras")
    linear.save(linear_path)
    return {
        "root": root,
        "table": table,
        "data": data,
        "mlp": mlp,
        "mlp_path": mlp_path,
        "linear_path": linear_path,
    }


def test_integrated_gradients_completeness_end_to_end(env, tmp_path):
    out = tmp_path / "out"
    _score(env["mlp_path"], env["data"], out, explain="integrated-gradients", explain_steps=64)
    preds = util.read_predictions(out)
    assert preds.column_names == ["id", "prediction", *(f"attr_{c}" for c in FEATURES), "model"]
    assert all(preds.schema.field(f"attr_{c}").type == pa.float32() for c in FEATURES)
    x = _x(env["table"])
    fx = np.asarray(env["mlp"](x, training=False))[:, 0]
    f0 = np.asarray(env["mlp"](np.zeros_like(x), training=False))[:, 0]
    total = _attrs(preds).sum(axis=1)
    assert np.abs(total - (fx - f0)).max() < 1e-2
    assert np.abs(fx - f0).max() > 0.1  # not a trivial check
    assert util.read_summary(out)["rows_scored"] == len(x)


@pytest.mark.parametrize("method", ["integrated-gradients", "gradient-x-input"])
def test_linear_model_attributions_are_w_times_x(env, tmp_path, method):
    out = tmp_path / "out"
    _score(env["linear_path"], env["data"], out, explain=method, explain_steps=3)
    got = _attrs(util.read_predictions(out))
    np.testing.assert_allclose(got, _x(env["table"]) * W[:, 0], atol=1e-5)


def test_reference_mean_baseline(env, tmp_path):
    prof = str(tmp_path / "profile.json")
    profile.run(["--input", env["data"], "--output", prof, "--id-column", "id", "--quiet"])
    with open(prof) as f:
        features = json.load(f)["features"]
    means = np.array([features[c]["mean"] for c in FEATURES], np.float32)
    out = tmp_path / "out"
    _score(
        env["linear_path"],
        env["data"],
        out,
        explain="integrated-gradients",
        explain_baseline="reference-mean",
        reference_profile=prof,
    )
    got = _attrs(util.read_predictions(out))
    np.testing.assert_allclose(got, (_x(env["table"]) - means) * W[:, 0], atol=1e-5)


def test_reference_mean_without_profile_is_refused(env, tmp_path, capsys):
    code = cli.main(
        [
            "score",
            "--model",
            env["linear_path"],
            "--input",
            env["data"],
            "--output",
            str(tmp_path / "o"),
            "--explain",
            "gradient-x-input",
            "--explain-baseline",
            "reference-mean",
        ]
    )
    assert code == 2
    assert "--reference-profile" in capsys.readouterr().err


def test_vector_output_explains_the_predicted_class_or_a_given_index(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    inp = keras.Input((3,), name="x")
    dense = keras.layers.Dense(4)
    model = keras.Model(inp, dense(inp))
    dense.set_weights([w, np.zeros(4, np.float32)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    table = util.feature_table(200, 3, seed=1)
    data = util.write_parquet(tmp_path / "in.parquet", table)
    x = _x(table, ["f0", "f1", "f2"])
    predicted = np.argmax(x @ w, axis=1)
    out = tmp_path / "out"
    _score(path, data, out, explain="gradient-x-input")
    got = _attrs(util.read_predictions(out), ["f0", "f1", "f2"])
    np.testing.assert_allclose(got, x * w[:, predicted].T, atol=1e-5)
    assert len(set(predicted)) > 1  # rows explain different classes
    name = model.output_names[0] if hasattr(model, "output_names") else None
    out2 = tmp_path / "out2"
    _score(path, data, out2, explain="gradient-x-input", explain_output=f"{name}:2")
    got2 = _attrs(util.read_predictions(out2), ["f0", "f1", "f2"])
    np.testing.assert_allclose(got2, x * w[:, 2], atol=1e-5)


def test_multi_input_model_gets_one_list_column_per_input(tmp_path):
    rng = np.random.default_rng(3)
    wa = rng.normal(size=(3, 1)).astype(np.float32)
    wb = rng.normal(size=(2, 1)).astype(np.float32)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    da, db = keras.layers.Dense(1, use_bias=False), keras.layers.Dense(1, use_bias=False)
    model = keras.Model([a, b], keras.layers.Add()([da(a), db(b)]))
    da.set_weights([wa])
    db.set_weights([wb])
    path = str(tmp_path / "m.keras")
    model.save(path)
    xa = rng.normal(size=(50, 3)).astype(np.float32)
    xb = rng.normal(size=(50, 2)).astype(np.float32)
    table = pa.table(
        {
            "id": np.arange(50),
            "a": pa.FixedSizeListArray.from_arrays(pa.array(xa.ravel()), 3),
            "b": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), 2),
        }
    )
    data = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out"
    _score(path, data, out, explain="integrated-gradients", explain_steps=2)
    preds = util.read_predictions(out)
    assert preds.schema.field("attr_a").type == pa.list_(pa.float32())
    np.testing.assert_allclose(
        np.stack(preds.column("attr_a").to_numpy(zero_copy_only=False)), xa * wa[:, 0], atol=1e-5
    )
    np.testing.assert_allclose(
        np.stack(preds.column("attr_b").to_numpy(zero_copy_only=False)), xb * wb[:, 0], atol=1e-5
    )


def test_integer_input_is_refused_naming_it(tmp_path, capsys):
    inp = keras.Input((2,), name="codes", dtype="int32")
    out = keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Embedding(5, 2)(inp)))
    path = str(tmp_path / "m.keras")
    keras.Model(inp, out).save(path)
    table = pa.table({"id": np.arange(10), "c0": np.arange(10) % 5, "c1": np.arange(10) % 3})
    data = util.write_parquet(tmp_path / "in.parquet", table)
    code = cli.main(
        [
            "score",
            "--model",
            path,
            "--input",
            data,
            "--output",
            str(tmp_path / "o"),
            "--id-column",
            "id",
            "--explain",
            "gradient-x-input",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'codes'" in err and "float inputs" in err


def test_saved_model_gradients_flow_and_match_keras(env, tmp_path):
    export = str(tmp_path / "sm")
    env["mlp"].export(export, verbose=False)
    out = tmp_path / "out"
    _score(export, env["data"], out, explain="gradient-x-input")
    got = _attrs(util.read_predictions(out))
    x = tf.constant(_x(env["table"]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = env["mlp"](x, training=False)
    want = tape.gradient(y, x).numpy() * x.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_saved_model_without_gradient_is_refused_naming_the_input(env, tmp_path, capsys):
    class Rounded(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="feats")])
        def serve(self, feats):
            return {"y": tf.reduce_sum(tf.round(feats), axis=1, keepdims=True)}

    module = Rounded()
    path = str(tmp_path / "sm")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    code = cli.main(
        [
            "score",
            "--model",
            path,
            "--input",
            env["data"],
            "--output",
            str(tmp_path / "o"),
            "--id-column",
            "id",
            "--explain",
            "gradient-x-input",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'feats'" in err, err


def test_attributor_chunks_agree_with_one_call(env, monkeypatch):
    model = load(ModelSpec(env["mlp_path"]))
    target = explain.parse_output_target(None, model.outputs)
    x = {"x": _x(env["table"])[:40]}
    zero = {"x": np.zeros((1, 4), np.float32)}
    one = explain.Attributor(model, target, {"x": (4,)}).attributions(
        x, zero, explain.INTEGRATED_GRADIENTS, 8
    )
    monkeypatch.setattr(explain, "MAX_POINTS_PER_CALL", 9 * 3)  # 3 rows per call
    chunked = explain.Attributor(model, target, {"x": (4,)}).attributions(
        x, zero, explain.INTEGRATED_GRADIENTS, 8
    )
    np.testing.assert_allclose(chunked["x"], one["x"], atol=1e-6)


def test_explain_output_errors():
    outputs = [TensorInfo("p", (3,), "float32"), TensorInfo("q", (), "float32")]
    assert explain.parse_output_target(None, outputs) == explain.OutputTarget("p", None, 3)
    assert explain.parse_output_target("p:1", outputs) == explain.OutputTarget("p", 1, 3)
    with pytest.raises(ConfigError, match="no output 'r'"):
        explain.parse_output_target("r", outputs)
    with pytest.raises(ConfigError, match="index 3"):
        explain.parse_output_target("p:3", outputs)


def test_settings_from_yaml(tmp_path):
    import argparse

    from keras_batch_score.pipelines.config import add_score_arguments, resolve_config

    path = tmp_path / "job.yaml"
    path.write_text(
        "model: m.keras\ninput: in.parquet\noutput: out\nexplain: integrated-gradients\n"
        "explain_steps: 64\nexplain_output: 'probs:1'\nreference_profile: p.json\n"
        "ood_threshold: 0.25\nadversarial_check: true\nadversarial_epsilon: 0.05\n"
    )
    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    config = resolve_config(parser.parse_args(["--config", str(path), "--explain-steps", "16"]))
    assert (config.explain, config.explain_steps, config.explain_output) == (
        "integrated-gradients",
        16,
        "probs:1",
    )
    assert config.ood_score and config.ood_threshold == 0.25
    assert config.adversarial_check and config.adversarial_epsilon == 0.05
    path.write_text("model: m.keras\ninput: i\noutput: o\nexplain_steps: many\n")
    with pytest.raises(ConfigError, match="explain_steps"):
        resolve_config(parser.parse_args(["--config", str(path)]))


def test_preprocessed_inputs_are_explained_per_model_input_feature(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "features:\n"
        "  age: {type: numeric, standardize: {mean: 1.0, std: 2.0}}\n"
        "  city: {type: categorical, vocab: [a, b], num_oov: 1, output: one_hot}\n"
    )
    w = np.array([[2.0], [-1.0], [0.5], [3.0]], np.float32)
    inp = keras.Input((4,), name="x")
    dense = keras.layers.Dense(1)
    model = keras.Model(inp, dense(inp))
    dense.set_weights([w, np.array([0.1], np.float32)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    rng = np.random.default_rng(9)
    age = rng.normal(size=60).astype(np.float32)
    city = rng.choice(["a", "b", "zz"], size=60)
    table = pa.table({"id": np.arange(60), "age": age, "city": city.tolist()})
    data = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out"
    _score(path, data, out, preprocess=str(spec), explain="gradient-x-input")
    preds = util.read_predictions(out)
    assert preds.schema.field("attr_city").type == pa.list_(pa.float32())
    np.testing.assert_allclose(
        preds.column("attr_age").to_numpy(), w[0, 0] * (age - 1) / 2, atol=1e-5
    )
    onehot = np.eye(3, dtype=np.float32)[np.select([city == "a", city == "b"], [1, 2], 0)]
    got = np.stack(preds.column("attr_city").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, onehot * w[1:, 0], atol=1e-5)


def test_rows_with_nan_attributions_go_to_errors(tmp_path):
    class Root(tf.Module):  # d sqrt(|x|)/dx is infinite at 0: 0 * inf = NaN attributions there
        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32, name="feats")])
        def serve(self, feats):
            return {"y": tf.reduce_sum(tf.sqrt(tf.abs(feats) + 0.0), axis=1, keepdims=True)}

    module = Root()
    path = str(tmp_path / "sm")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    f0 = np.array([0.0, 1.0, 4.0, 0.0, 9.0], np.float32)
    table = pa.table({"id": np.arange(5), "f0": f0, "f1": np.ones(5, np.float32)})
    data = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out"
    summary = _score(path, data, out, explain="gradient-x-input")
    assert (summary["rows_scored"], summary["rows_failed"]) == (3, 2)
    errors = util.read_errors(out)
    assert {e["stage"] for e in errors} == {"explain"}
    assert sorted(e["row"]["id"] for e in errors) == [0, 3]
    preds = util.read_predictions(out)
    np.testing.assert_allclose(
        preds.column("attr_f0").to_numpy(), np.sqrt(f0[[1, 2, 4]]) / 2, atol=1e-5
    )


def test_ensemble_is_refused(env, tmp_path, capsys):
    code = cli.main(
        [
            "score",
            "--model",
            f"a={env['mlp_path']}",
            "--model",
            f"b={env['linear_path']}",
            "--input",
            env["data"],
            "--output",
            str(tmp_path / "o"),
            "--id-column",
            "id",
            "--explain",
            "gradient-x-input",
        ]
    )
    assert code == 2 and "one model" in capsys.readouterr().err
