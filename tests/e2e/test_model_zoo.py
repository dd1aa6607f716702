"""The model zoo: every kind of Keras model, in every format it can be saved in, scores
exactly ``model(x, training=False)`` through the CLI.

Kinds: functional, Sequential (with and without ``keras.Input``), a registered
subclassed model, preprocessing layers inside the model (``Normalization``,
``Rescaling``, ``StringLookup``, ``TextVectorization``), an integer ``Embedding``
fed an int list column, LSTMs fed list columns reshaped to ``(T, 1)`` and
``(T, F)``, and a model with several named inputs and outputs. Formats:
``.keras``, ``.h5``, SavedModel through ``model.export()``, and architecture
JSON + ``.weights.h5`` (a ``.json`` path and a directory).

One Parquet file holds every column the zoo needs; each model reads its own
columns (named inputs, or ``--feature-columns``).
"""

from __future__ import annotations

import functools
import json
import os
import uuid

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines.cli import main as cli_main
from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.features.layout import plan_layout
from keras_batch_score.transforms.features.validate import assemble_features, rejected_rows_table
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.model.tensors import TensorInfo
from tests import deploy_support, util
from tests.zoo_objects import ZooMLP, ZooTwoTower

keras = util.keras
tf = util.import_tensorflow()

N_ROWS = 240
T, F = 6, 2
TABULAR = ["f0", "f1", "f2", "f3"]
VOCAB = ["red", "green", "blue", "cyan"]
WORDS = [*VOCAB, "mauve"]  # one out-of-vocabulary word
CUSTOM = "tests.zoo_objects:ZooMLP"


def _zoo_table() -> pa.Table:
    rng = np.random.default_rng(2024)
    n = N_ROWS
    tab = rng.normal(size=(n, len(TABULAR))).astype(np.float32) * 3 + 1
    words = rng.choice(WORDS, size=n)
    sentences = [" ".join(rng.choice(WORDS, size=rng.integers(1, 8))) for _ in range(n)]
    tok = rng.integers(0, 20, size=(n, T))
    series = rng.normal(size=(n, T * F)).astype(np.float32)
    series1 = rng.normal(size=(n, T)).astype(np.float32)
    a = rng.normal(size=(n, 3)).astype(np.float32)
    columns = {
        "id": pa.array(np.arange(n, dtype=np.int64)),
        **{c: pa.array(tab[:, i]) for i, c in enumerate(TABULAR)},
        "word": pa.array(words.tolist(), pa.string()),
        "sentence": pa.array(sentences, pa.large_string()),
        "tok": pa.array(tok.tolist(), pa.list_(pa.int64())),
        "tok_fixed": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel(), pa.int32()), T),
        "series1": pa.array(series1.tolist(), pa.list_(pa.float32())),
        "series": pa.FixedSizeListArray.from_arrays(pa.array(series.ravel()), T * F),
        "a": pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), 3),
        "b": pa.array(rng.normal(size=n).astype(np.float32)),
    }
    return pa.table(columns)


def _np(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return np.asarray(col.to_pylist())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy()


# ------------------------------------------------------------------ the zoo's models


def _functional():
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))


def _sequential_input():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]
    )


def _sequential_built(x):
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model(x[:1])  # built by calling it: no Input layer
    return model


def _subclassed(x):
    model = ZooMLP(units=8)
    model(x[:2])
    return model


def _normalization(x):
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Rescaling(0.5, offset=0.25)(norm(inp))
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(h)))


def _string_lookup():
    inp = keras.Input((1,), dtype="string", name="word")
    onehot = keras.layers.StringLookup(vocabulary=VOCAB, output_mode="one_hot")(inp)
    return keras.Model(inp, keras.layers.Dense(1)(onehot))


def _text_vectorization():
    inp = keras.Input((1,), dtype="string", name="sentence")
    vec = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=5, vocabulary=VOCAB)
    emb = keras.layers.Embedding(10, 3)(vec(inp))
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(emb)))


def _embedding():
    inp = keras.Input((T,), dtype="int32", name="tok")
    emb = keras.layers.Embedding(20, 3)(inp)
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(emb)))


def _embedding_any_length():
    inp = keras.Input((None,), dtype="int32", name="tok_fixed")
    emb = keras.layers.Embedding(20, 3)(inp)
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(emb)))


def _lstm(features: int, name: str):
    inp = keras.Input((T, features), name=name)
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.LSTM(4)(inp)))


def _multi_io():
    a = keras.Input((3,), name="a")
    b = keras.Input((1,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    score = keras.layers.Dense(1, name="score")(h)
    probs = keras.layers.Dense(3, activation="softmax")(h)  # key and layer name differ
    return keras.Model({"a": a, "b": b}, {"score": score, "probs": probs})


def _subclassed_dict(x):
    model = ZooTwoTower()
    model({k: v[:2] for k, v in x.items()})
    return model


def _two_inputs(table):
    return {
        "a": _np(table, "a").astype(np.float32),
        "b": _np(table, "b").astype(np.float32).reshape(-1, 1),
    }


def _tabular(table):
    return np.stack([_np(table, c) for c in TABULAR], axis=1).astype(np.float32)


# kind -> (build(table) -> model, reference input(table), extra CLI flags)
KINDS = {
    "functional": (lambda t: _functional(), _tabular, ["--feature-columns", ",".join(TABULAR)]),
    "sequential_input": (
        lambda t: _sequential_input(),
        _tabular,
        ["--feature-columns", ",".join(TABULAR)],
    ),
    "sequential_built": (
        lambda t: _sequential_built(_tabular(t)),
        _tabular,
        ["--feature-columns", ",".join(TABULAR)],
    ),
    "subclassed": (
        lambda t: _subclassed(_tabular(t)),
        _tabular,
        ["--feature-columns", ",".join(TABULAR), "--custom-object", CUSTOM],
    ),
    "normalization": (
        lambda t: _normalization(_tabular(t)),
        _tabular,
        ["--feature-columns", ",".join(TABULAR)],
    ),
    "string_lookup": (
        lambda t: _string_lookup(),
        lambda t: _np(t, "word").reshape(-1, 1),
        [],
    ),
    "text_vectorization": (
        lambda t: _text_vectorization(),
        lambda t: _np(t, "sentence").reshape(-1, 1),
        [],
    ),
    "embedding": (lambda t: _embedding(), lambda t: _np(t, "tok").astype(np.int32), []),
    "embedding_any_length": (
        lambda t: _embedding_any_length(),
        lambda t: _np(t, "tok_fixed").astype(np.int32),
        [],
    ),
    "lstm_t1": (
        lambda t: _lstm(1, "series1"),
        lambda t: _np(t, "series1").astype(np.float32).reshape(-1, T, 1),
        [],
    ),
    "lstm_tf": (
        lambda t: _lstm(F, "series"),
        lambda t: _np(t, "series").astype(np.float32).reshape(-1, T, F),
        [],
    ),
    "subclassed_dict": (
        lambda t: _subclassed_dict(_two_inputs(t)),
        _two_inputs,
        ["--custom-object", "tests.zoo_objects:ZooTwoTower"],
    ),
    "multi_io": (lambda t: _multi_io(), _two_inputs, []),
}

CASES = [
    ("functional", "keras"),
    ("functional", "h5"),
    ("functional", "export"),
    ("functional", "json"),
    ("functional", "json_dir"),
    ("sequential_input", "keras"),
    ("sequential_input", "h5"),
    ("sequential_input", "export"),
    ("sequential_input", "json"),
    ("sequential_built", "keras"),
    ("sequential_built", "h5"),
    ("sequential_built", "export"),
    ("sequential_built", "json"),
    ("subclassed", "keras"),
    ("subclassed", "json"),
    ("subclassed", "export"),
    ("subclassed_dict", "keras"),
    ("normalization", "keras"),
    ("normalization", "h5"),
    ("normalization", "export"),
    ("string_lookup", "keras"),
    ("string_lookup", "export"),
    ("string_lookup", "json"),
    ("string_lookup", "h5"),
    ("text_vectorization", "keras"),
    ("text_vectorization", "export"),
    ("text_vectorization", "json"),
    ("embedding", "keras"),
    ("embedding", "h5"),
    ("embedding", "export"),
    ("embedding", "json"),
    ("embedding_any_length", "keras"),
    ("embedding_any_length", "export"),
    ("lstm_t1", "keras"),
    ("lstm_t1", "export"),
    ("lstm_tf", "keras"),
    ("lstm_tf", "h5"),
    ("lstm_tf", "export"),
    ("multi_io", "keras"),
    ("multi_io", "h5"),
    ("multi_io", "export"),
    ("multi_io", "json"),
]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    table = _zoo_table()
    data = util.write_parquet(root / "in" / "zoo.parquet", table, row_group_size=100)

    @functools.cache
    def model(kind: str):
        keras.utils.set_random_seed(sum(map(ord, kind)))
        return KINDS[kind][0](table)

    def save(kind: str, fmt: str) -> str:
        m = model(kind)
        base = root / f"{kind}-{fmt}"
        if fmt in ("keras", "h5"):
            path = f"{base}.{fmt}"
            m.save(path)
        elif fmt == "export":
            path = str(base)
            m.export(path)
        elif fmt == "json":
            path = f"{base}.json"
            with open(path, "w") as f:
                f.write(m.to_json())
            m.save_weights(f"{base}.weights.h5")
        else:  # json_dir
            path = str(base)
            os.makedirs(path)
            with open(os.path.join(path, "architecture.json"), "w") as f:
                f.write(m.to_json())
            m.save_weights(os.path.join(path, "model.weights.h5"))
        return path

    return table, data, model, save, root


def _score(model_path: str, data: str, out, *extra: str) -> int:
    return cli_main(
        [
            "score",
            "--model",
            model_path,
            "--input",
            data,
            "--output",
            str(out),
            "--id-column",
            "id",
            "--batch-size",
            "100",
            "--quiet",
            *extra,
        ]
    )


def _prediction_columns(ref) -> dict[str, np.ndarray]:
    """Expected prediction columns from ``model(x, training=False)``."""
    if isinstance(ref, dict):
        return {f"prediction_{k}": np.asarray(v) for k, v in ref.items()}
    return {"prediction": np.asarray(ref)}


def _as_matrix(column: pa.ChunkedArray) -> np.ndarray:
    col = column.combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
        return np.asarray(col.to_pylist(), dtype=np.float32)
    return col.to_numpy().reshape(-1, 1)


@pytest.mark.parametrize(("kind", "fmt"), CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_zoo_scores_exactly_like_keras(tmp_path, zoo, kind, fmt):
    table, data, model, save, _ = zoo
    path = save(kind, fmt)
    _, reference_input, extra = KINDS[kind]
    assert _score(path, data, tmp_path / "out", *extra) == 0
    got = util.read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(N_ROWS))
    expected = _prediction_columns(util.keras_reference(model(kind), reference_input(table)))
    for name, ref in expected.items():
        assert name in got.column_names, f"{name} not in {got.column_names}"
        np.testing.assert_allclose(_as_matrix(got[name]), ref.reshape(N_ROWS, -1), atol=1e-6)
    summary = util.read_summary(tmp_path / "out")
    assert summary["rows_scored"] == N_ROWS and summary["rows_failed"] == 0
    fmt_name = {"json_dir": "json+weights", "json": "json+weights", "export": "saved_model"}
    assert summary["model_format"].startswith(fmt_name.get(fmt, fmt))


# ------------------------------------------------------------------ loading details


def test_sequential_and_subclassed_inputs_are_known(zoo):
    _, _, _, save, _ = zoo
    for kind in ("sequential_input", "sequential_built", "subclassed"):
        loaded = load(ModelSpec(save(kind, "keras"), custom_objects=(CUSTOM,)))
        (info,) = loaded.inputs
        assert info.shape == (4,) and info.dtype == "float32", kind


def test_subclassed_h5_is_refused_with_advice(zoo):
    _, _, _, save, _ = zoo
    with pytest.raises(
        ModelError, match=r"subclassed model cannot be restored from \.h5; save it as \.keras"
    ):
        load(ModelSpec(save("subclassed", "h5"), custom_objects=(CUSTOM,)))


def test_json_without_weights_file_is_a_clear_error(tmp_path):
    model = _functional()
    (tmp_path / "arch.json").write_text(model.to_json())
    with pytest.raises(ModelError, match=r"weights file .*arch\.weights\.h5.* does not exist"):
        load(ModelSpec(str(tmp_path / "arch.json")))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "arch.json").write_text(model.to_json())
    with pytest.raises(ModelError, match=r"one \.json .* and one \.weights\.h5"):
        load(ModelSpec(str(tmp_path / "d")))


def test_json_with_lambda_layer_obeys_safe_mode(tmp_path):
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Lambda(lambda t: t * 2.0)(inp)))
    (tmp_path / "m.json").write_text(model.to_json())
    model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ModelError, match="arbitrary code"):
        load(ModelSpec(str(tmp_path / "m.json")))
    loaded = load(ModelSpec(str(tmp_path / "m.json"), safe_mode=False))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict({"x": x})[loaded.outputs[0].name],
        util.keras_reference(model, x)[:, 0],
        atol=1e-6,
    )


def test_cli_refuses_missing_weights_with_one_line(tmp_path, zoo, capsys):
    _, data, _, _, _ = zoo
    (tmp_path / "arch.json").write_text(_functional().to_json())
    assert _score(str(tmp_path / "arch.json"), data, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "weights" in err and len(err.splitlines()) == 1


def test_health_check_smoke_feeds_strings_and_integers(zoo):
    _, _, _, save, _ = zoo
    for kind, width in (("string_lookup", {"word": 1}), ("embedding", {"tok": T})):
        loaded = load(ModelSpec(save(kind, "keras")))
        health_check(loaded, width)


# ------------------------------------------------------------------ row checks (vectorized)


def test_integer_input_rejects_fractions_nan_and_out_of_range():
    table = pa.table(
        {
            "id": pa.array([0, 1, 2, 3, 4, 5], pa.int64()),
            "tok": pa.array([[1.0, 2.0], [2.7, 1.0], [np.nan, 0.0], [3e9, 1.0], [4.0, -5.0], None]),
            "c": pa.array([7, 8, 9, 2**40, 11, 12], pa.int64()),
        }
    )
    layout = plan_layout(
        table.schema,
        [TensorInfo("tok", (2,), "int32"), TensorInfo("c", (), "int32")],
    )
    got = assemble_features(table, layout)
    np.testing.assert_array_equal(got.good, [True, False, False, False, True, False])
    np.testing.assert_array_equal(got.features["tok"], np.array([[1, 2], [4, -5]], np.int32))
    np.testing.assert_array_equal(got.features["c"], np.array([7, 11], np.int32))
    assert got.features["tok"].dtype == np.int32
    errors = {
        json.loads(e["row"])["id"]: e["reason"]
        for e in rejected_rows_table(table, got.problems).to_pylist()
    }
    assert errors[1] == (
        "column 'tok' value 2.7 at position 0 is not an integer (model input 'tok' is int32)"
    )
    assert "column 'tok' value nan at position 0 is not an integer" in errors[2]
    assert "column 'tok' value 3000000000 at position 0 is out of range" in errors[3]
    assert "column 'c' value 1099511627776 is out of range" in errors[3]
    assert errors[5] == "feature 'tok' is null"


def test_scalar_float_column_into_int_input_is_checked():
    table = pa.table({"tok": pa.array([1.0, 2.5, np.nan, -3.0], pa.float64())})
    layout = plan_layout(table.schema, [TensorInfo("tokens", (1,), "int32")])
    got = assemble_features(table, layout)
    np.testing.assert_array_equal(got.features["tokens"], np.array([[1], [-3]], np.int32))
    reasons = dict(zip(*[a.tolist() for a in got.problems["tok"]], strict=True))
    assert reasons == {
        1: "column 'tok' value 2.5 is not an integer (model input 'tokens' is int32)",
        2: "column 'tok' value nan is not an integer (model input 'tokens' is int32)",
    }


def test_string_column_feeds_string_input_and_nulls_are_row_errors():
    table = pa.table({"word": pa.array(["a", None, "c"], pa.large_string())})
    layout = plan_layout(table.schema, [TensorInfo("word", (1,), "string")])
    got = assemble_features(table, layout)
    assert got.features["word"].tolist() == [["a"], ["c"]]
    assert got.problems["word"][1].tolist() == ["feature 'word' is null"]


def test_unknown_length_takes_the_fixed_size_list_width():
    values = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    fixed = pa.table({"s": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 6)})
    layout = plan_layout(fixed.schema, [TensorInfo("s", (None, 2), "float32")])
    assert layout.bindings[0].shape == (3, 2)
    got = assemble_features(fixed, layout)
    np.testing.assert_array_equal(got.features["s"], values.reshape(4, 3, 2))
    from keras_batch_score.transforms.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot take the 6 values per row"):
        plan_layout(fixed.schema, [TensorInfo("s", (None, 4), "float32")])
    variable = pa.table({"s": pa.array(values.tolist(), pa.list_(pa.float32()))})
    with pytest.raises(ConfigError, match=r"unknown length.*store it as a fixed-size list"):
        plan_layout(variable.schema, [TensorInfo("s", (None,), "float32")])


def test_dictionary_encoded_strings_feed_string_inputs():
    words = pa.array(["b", "a", None, "b"]).dictionary_encode()
    table = pa.table({"word": words})
    got = assemble_features(table, plan_layout(table.schema, [TensorInfo("word", (), "string")]))
    assert got.features["word"].tolist() == ["b", "a", "b"]
    assert got.problems["word"][0].tolist() == [2]


def test_validate_dofn_splits_off_non_integer_rows():
    from apache_beam import pvalue

    from keras_batch_score.transforms.features.transforms import ValidateDoFn

    table = pa.table({"id": pa.array([10, 11, 12], pa.int64()), "tok": pa.array([1.0, 1.5, 2.0])})
    layout = plan_layout(table.schema, [TensorInfo("tokens", (1,), "int64")], id_columns=["id"])
    dofn = ValidateDoFn(layout, ["id"])
    dofn.setup()
    out = list(dofn.process(table))
    (errors,) = [o.value for o in out if isinstance(o, pvalue.TaggedOutput)]
    (batch,) = [o for o in out if not isinstance(o, pvalue.TaggedOutput)]
    assert batch.table["id"].to_pylist() == [10, 12]
    np.testing.assert_array_equal(batch.features["tokens"], np.array([[1], [2]], np.int64))
    (record,) = errors.to_pylist()
    assert record["column"] == "tok" and json.loads(record["row"])["id"] == 11
    assert (
        record["reason"]
        == "column 'tok' value 1.5 is not an integer (model input 'tokens' is int64)"
    )


def test_string_and_number_mismatches_are_config_errors():
    from keras_batch_score.transforms.core.errors import ConfigError

    schema = pa.schema([("word", pa.string()), ("x", pa.float32())])
    with pytest.raises(ConfigError, match="feature column 'word' has type string"):
        plan_layout(schema, [TensorInfo("word", (1,), "float32")])
    with pytest.raises(ConfigError, match="model input 'x' takes strings"):
        plan_layout(schema, [TensorInfo("x", (1,), "string")])


def test_list_column_is_reshaped_to_the_input_shape():
    values = np.arange(3 * 6, dtype=np.float32).reshape(3, 6)
    table = pa.table({"s": pa.array(values.tolist(), pa.list_(pa.float32()))})
    layout = plan_layout(table.schema, [TensorInfo("s", (3, 2), "float32")])
    got = assemble_features(table, layout)
    np.testing.assert_array_equal(got.features["s"], values.reshape(3, 3, 2))
    short = assemble_features(
        table, plan_layout(table.schema, [TensorInfo("s", (2, 2), "float32")])
    )
    assert short.num_bad == 3
    assert short.problems["s"][1].tolist() == ["feature 's' has 6 values, expected 4"] * 3


def test_int_model_fed_floats_scores_good_rows_and_reports_bad_ones(tmp_path):
    keras.utils.set_random_seed(5)
    model = _embedding()
    path = tmp_path / "emb.keras"
    model.save(path)
    tok = np.random.default_rng(3).integers(0, 20, size=(50, T)).astype(np.float64)
    tok[7, 2] = 2.7
    tok[9, 0] = np.nan
    table = pa.table(
        {
            "id": pa.array(np.arange(50, dtype=np.int64)),
            "tok": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel()), T),
        }
    )
    data = util.write_parquet(tmp_path / "in.parquet", table)
    assert _score(str(path), data, tmp_path / "out") == 0
    got = util.read_predictions(tmp_path / "out")
    good = np.setdiff1d(np.arange(50), [7, 9])
    np.testing.assert_array_equal(got["id"].to_numpy(), good)
    ref = util.keras_reference(model, tok[good].astype(np.int32))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref, atol=1e-6)
    errors = {e["row"]["id"]: e for e in util.read_errors(tmp_path / "out")}
    assert sorted(errors) == [7, 9]
    assert errors[7]["column"] == "tok"
    assert errors[7]["reason"] == (
        "column 'tok' value 2.7 at position 2 is not an integer (model input 'tok' is int32)"
    )


def test_json_and_weights_from_gs(gcs, tmp_path):
    """A gs:// .json path brings its .weights.h5 along; so does a gs:// directory of both."""
    model = _functional()
    (tmp_path / "arch.json").write_text(model.to_json())
    model.save_weights(tmp_path / "arch.weights.h5")
    bucket = gcs.bucket(deploy_support.BUCKET)
    # The model cache is keyed by path: a fresh prefix per run, never a stale copy.
    prefix = f"zoo-{uuid.uuid4().hex[:8]}"
    for name in ("arch.json", "arch.weights.h5"):
        bucket.blob(f"{prefix}/file/{name}").upload_from_filename(str(tmp_path / name))
        bucket.blob(f"{prefix}/dir/{name}").upload_from_filename(str(tmp_path / name))
    x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    ref = util.keras_reference(model, x)[:, 0]
    root = f"gs://{deploy_support.BUCKET}/{prefix}"
    for uri in (f"{root}/file/arch.json", f"{root}/dir"):
        loaded = load(ModelSpec(uri))
        assert loaded.format == "json+weights"
        got = loaded.predict({"x": x})[loaded.outputs[0].name]
        np.testing.assert_allclose(got, ref, atol=1e-6)
    bucket.blob(f"{prefix}/alone/arch.json").upload_from_filename(str(tmp_path / "arch.json"))
    with pytest.raises(ModelError, match=r"arch\.weights\.h5 does not exist"):
        load(ModelSpec(f"{root}/alone/arch.json"))
