"""End-to-end scoring runs: Parquet in, predictions/errors/summary out, checked against Keras."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from tests import util

keras = util.keras
tf = util.import_tensorflow()

N_FEATURES = 6
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    table = util.feature_table(3000, N_FEATURES, seed=7)
    path = util.write_parquet(root / "in" / "part-0.parquet", table, row_group_size=700)
    return table, path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = util.mlp(N_FEATURES, seed=11)
    path = root / "model.keras"
    model.save(path)
    return model, str(path)


def _run(model: str, input_path: str, output, *extra: str, **options) -> dict:
    """Scores with ids and 512-row batches (options as in util.job_argv)."""
    defaults = {"model": model, "input": input_path, "id_column": "id", "batch_size": 512}
    return util.run_score(output, *extra, **{**defaults, **options}).summary


def test_predictions_equal_keras_and_ids_line_up(tmp_path, data, model_path):
    table, input_path = data
    model, path = model_path
    summary = _run(path, input_path, tmp_path / "out")
    got = util.read_predictions(tmp_path / "out")
    assert got.column_names == ["id", "prediction", "model"]
    np.testing.assert_array_equal(got["id"].to_numpy(), table["id"].to_numpy())
    expected = util.keras_reference(model, util.stacked(table, FEATURES))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)
    assert set(got["model"].to_pylist()) == {summary["model"]}
    assert summary["rows_read"] == summary["rows_scored"] == 3000 and summary["rows_failed"] == 0
    assert summary["reconciled"] is True and summary["config"]["batch_size"] == 512
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith("_staging")]


@pytest.mark.parametrize("fmt", ["h5", "saved_model"])
def test_other_formats_score_like_keras(tmp_path, data, fmt):
    table, input_path = data
    model = util.mlp(N_FEATURES, seed=5)
    path = tmp_path / ("m.h5" if fmt == "h5" else "sm")
    if fmt == "h5":
        model.save(path)
    else:
        model.export(str(path))
    _run(str(path), input_path, tmp_path / "out")
    got = util.read_predictions(tmp_path / "out")
    expected = util.keras_reference(model, util.stacked(table, FEATURES))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)


def test_multi_input_multi_output_model(tmp_path):
    keras.utils.set_random_seed(2)
    a = keras.Input((2,), name="a")
    emb = keras.Input((3,), name="emb")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, emb]))
    model = keras.Model(
        {"a": a, "emb": emb},
        {
            "score": keras.layers.Dense(1, name="score")(h),
            "probs": keras.layers.Dense(3, activation="softmax", name="probs")(h),
        },
    )
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    a_val = rng.normal(size=(400, 2)).astype(np.float32)
    emb_val = rng.normal(size=(400, 3)).astype(np.float32)
    table = pa.table(
        {
            "id": np.arange(400),
            "a": pa.FixedSizeListArray.from_arrays(pa.array(a_val.ravel()), 2),
            "emb": pa.array(list(emb_val), pa.list_(pa.float32())),
        }
    )
    util.write_parquet(tmp_path / "in.parquet", table, row_group_size=150)
    _run(str(tmp_path / "m.keras"), str(tmp_path / "in.parquet"), tmp_path / "out")
    got = util.read_predictions(tmp_path / "out")
    assert got.column_names == [
        "id",
        "prediction_probs",
        "prediction_score",
        "model",
    ] or got.column_names == [
        "id",
        "prediction_score",
        "prediction_probs",
        "model",
    ]
    ref = util.keras_reference(model, {"a": a_val, "emb": emb_val})
    np.testing.assert_allclose(got["prediction_score"].to_numpy(), ref["score"][:, 0], atol=1e-6)
    np.testing.assert_allclose(
        np.stack(got["prediction_probs"].to_numpy(zero_copy_only=False)), ref["probs"], atol=1e-6
    )


def test_bad_rows_go_to_errors_and_counts_reconcile(tmp_path, model_path):
    model, path = model_path
    table = util.feature_table(1000, N_FEATURES, seed=3)
    f2 = table["f2"].to_numpy().copy()
    f2[[5, 500]] = np.nan
    f4 = pa.array(table["f4"].to_numpy(), mask=np.isin(np.arange(1000), [7]))
    table = table.set_column(2 + 1, "f2", pa.array(f2)).set_column(5, "f4", f4)
    input_path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=300)
    summary = _run(path, input_path, tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (1000, 997, 3)
    errors = util.read_errors(tmp_path / "out")
    by_id = {e["row"]["id"]: e for e in errors}
    assert sorted(by_id) == [5, 7, 500]
    assert (
        by_id[5]["column"] == "f2"
        and "NaN" in by_id[5]["reason"]
        and by_id[5]["stage"] == "validate"
    )
    assert by_id[7]["reason"] == "feature 'f4' is null"
    got = util.read_predictions(tmp_path / "out")
    keep = ~np.isin(np.arange(1000), [5, 7, 500])
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(1000)[keep])
    x = util.stacked(table, FEATURES)[keep]
    np.testing.assert_allclose(
        got["prediction"].to_numpy(), util.keras_reference(model, x)[:, 0], atol=1e-6
    )


def test_multi_processing_matches_in_memory(tmp_path, data, model_path):
    _, input_path = data
    _, path = model_path
    _run(path, input_path, tmp_path / "mem")
    summary = _run(
        path,
        input_path,
        tmp_path / "mp",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )
    assert summary["rows_scored"] == 3000
    a, b = util.read_predictions(tmp_path / "mem"), util.read_predictions(tmp_path / "mp")
    np.testing.assert_array_equal(a["id"].to_numpy(), b["id"].to_numpy())
    np.testing.assert_allclose(a["prediction"].to_numpy(), b["prediction"].to_numpy(), atol=1e-6)


def test_empty_input_gives_empty_valid_output(tmp_path, model_path):
    _, path = model_path
    empty = util.feature_table(0, N_FEATURES)
    input_path = util.write_parquet(tmp_path / "empty.parquet", empty)
    summary = _run(path, input_path, tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (0, 0, 0)
    got = util.read_predictions(tmp_path / "out")
    assert got.num_rows == 0 and got.column_names == ["id", "prediction", "model"]
    assert util.read_errors(tmp_path / "out") == []


def test_rerun_replaces_previous_shards(tmp_path, data, model_path):
    _, input_path = data
    _, path = model_path
    out = tmp_path / "out"
    _run(path, input_path, out, num_shards=3)
    assert len([f for f in os.listdir(out) if f.startswith("predictions-")]) == 3
    _run(path, input_path, out, num_shards=2)
    shards = sorted(f for f in os.listdir(out) if f.startswith("predictions-"))
    assert shards == ["predictions-00000-of-00002.parquet", "predictions-00001-of-00002.parquet"]
    assert util.read_predictions(out).num_rows == 3000


def test_inference_failure_sends_rows_to_errors(tmp_path, data, model_path):
    """A batch on which the model raises is not lost: its rows land in errors (stage 'inference')."""

    @keras.saving.register_keras_serializable(package="kbs_test")
    class FailOnNegativeSum(keras.layers.Layer):
        def call(self, x):
            tf.debugging.assert_non_negative(tf.reduce_sum(x[:, :1]), message="boom")
            return x

    inp = keras.Input((N_FEATURES,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1)(FailOnNegativeSum()(inp)))
    model.save(tmp_path / "fail.keras")
    table = util.feature_table(600, N_FEATURES, seed=1)
    f0 = table["f0"].to_numpy().copy()
    f0[:] = np.abs(f0)
    f0[300:] = -1e12  # rows 300.. make every batch holding them fail
    table = table.set_column(1, "f0", pa.array(f0.astype(np.float32)))
    input_path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=300)
    summary = _run(str(tmp_path / "fail.keras"), input_path, tmp_path / "out", batch_size=300)
    assert summary["rows_read"] == 600
    assert summary["rows_scored"] == 300 and summary["rows_failed"] == 300
    errors = util.read_errors(tmp_path / "out")
    assert {e["stage"] for e in errors} == {"inference"}
    assert sorted(e["row"]["id"] for e in errors) == list(range(300, 600))
    assert "boom" in errors[0]["reason"]


def test_integer_outputs_are_written_exactly(tmp_path, data):
    """A plain run writes an integer output as the model gives it (no float32 rounding)."""
    tf = util.import_tensorflow()
    table, input_path = data

    class Codes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32, name="x")])
        def serve(self, x):
            return {"code": tf.cast(tf.round(x[:, 0] * 1000.0), tf.int64) + 2**40 + 1}

    module = Codes()
    path = tmp_path / "codes"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    summary = _run(str(path), input_path, tmp_path / "out")
    assert summary["rows_scored"] == table.num_rows
    got = util.read_predictions(tmp_path / "out")
    x = np.stack([table.column(c).to_numpy() for c in FEATURES], axis=1).astype(np.float32)
    expected = module.serve(tf.constant(x))["code"].numpy()
    assert pa.types.is_integer(got.schema.field("prediction").type)
    np.testing.assert_array_equal(got.column("prediction").to_numpy(), expected)
