"""Preprocessing spec: per-row validation, model-input assembly, and end-to-end scoring."""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from keras_batch_score.transforms.core.aligned import is_aligned
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.preprocess.apply import BatchPreprocessor
from keras_batch_score.transforms.preprocess.plan import plan_preprocess
from keras_batch_score.transforms.preprocess.spec import load_spec

RNG = np.random.default_rng(11)
CITIES = ["paris", "rome", "oslo"]
WORDS = ["good", "bad", "movie", "plot", "great"]

SPEC = {
    "features": {
        "age": {
            "type": "numeric",
            "min": 0,
            "max": 120,
            "standardize": {"mean": 40.0, "std": 12.0},
        },
        "income": {"type": "numeric", "fill_missing": 1000.0, "log1p": True, "clip": [0, 12]},
        "emb": {"type": "numeric", "shape": [3], "min_max": {"min": -2.0, "max": 2.0}},
        "city": {"type": "categorical", "vocab": CITIES, "num_oov": 1, "output": "one_hot"},
        "review": {"type": "text", "vocab": WORDS, "max_len": 5},
    },
    "inputs": {"tab": ["age", "income", "emb", "city"], "txt": ["review"]},
}


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "age": pa.array(RNG.uniform(1, 99, n)),
            "income": pa.array(RNG.uniform(100, 90000, n)),
            "emb": pa.array(list(RNG.normal(size=(n, 3))), pa.list_(pa.float64())),
            "city": pa.array(RNG.choice([*CITIES, "lima"], n).tolist()),
            "review": pa.array(
                [" ".join(RNG.choice([*WORDS, "meh!"], 4)).title() for _ in range(n)]
            ),
        }
    )


def _reference_features(table: pa.Table) -> dict[str, np.ndarray]:
    """The model inputs computed independently with numpy and Keras layers."""
    import keras

    age = (np.asarray(table["age"].to_pylist(), float) - 40.0) / 12.0
    inc = np.asarray([1000.0 if v is None else v for v in table["income"].to_pylist()])
    inc = np.clip(np.log1p(inc), 0, 12)
    emb = (np.asarray(table["emb"].to_pylist(), float) + 2.0) / 4.0
    city = np.asarray(
        keras.layers.StringLookup(vocabulary=CITIES, output_mode="one_hot")(
            np.array(table["city"].to_pylist())
        )
    )
    txt = np.asarray(
        keras.layers.TextVectorization(vocabulary=WORDS, output_sequence_length=5)(
            np.array(table["review"].to_pylist())
        )
    )
    tab = np.concatenate([age[:, None], inc[:, None], emb, city], axis=1).astype(np.float32)
    return {"tab": tab, "txt": txt}


def _model(path) -> str:
    import keras

    tab = keras.Input((9,), name="tab")
    txt = keras.Input((5,), name="txt", dtype="int64")
    e = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(WORDS) + 2, 4)(txt))
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(tab), e])
    model = keras.Model([tab, txt], keras.layers.Dense(1)(h))
    out = str(path / "m.keras")
    model.save(out)
    return out


MODEL_INPUTS = [TensorInfo("tab", (9,), "float32"), TensorInfo("txt", (5,), "int64")]


def test_features_match_reference_on_clean_rows():
    table = _table(300)
    run = BatchPreprocessor(plan_preprocess(load_spec(SPEC), table.schema, MODEL_INPUTS))
    result = run(table)
    assert result.good is None and result.errors is None
    ref = _reference_features(table)
    np.testing.assert_allclose(result.features["tab"], ref["tab"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.features["txt"], ref["txt"])
    assert result.features["txt"].dtype == np.int64
    assert all(is_aligned(x) for x in result.features.values())  # no copy into the model


def test_bad_rows_go_to_errors_with_precise_reasons():
    table = _table(20)
    age = table["age"].to_pylist()
    age[3] = -3.0
    age[5] = 130.5
    age[7] = None
    emb = table["emb"].to_pylist()
    emb[9] = [1.0, 2.0]
    emb[11] = [0.5, float("nan"), 1.0]
    income = table["income"].to_pylist()
    income[13] = None  # filled, not an error
    review = table["review"].to_pylist()
    review[15] = None
    table = (
        table.set_column(1, "age", pa.array(age))
        .set_column(2, "income", pa.array(income))
        .set_column(3, "emb", pa.array(emb, pa.list_(pa.float64())))
        .set_column(5, "review", pa.array(review))
    )
    run = BatchPreprocessor(plan_preprocess(load_spec(SPEC), table.schema, MODEL_INPUTS))
    result = run(table)
    errors = {json.loads(r["row"])["id"]: r for r in result.errors.to_pylist()}
    assert sorted(errors) == [3, 5, 7, 9, 11, 15]
    assert errors[3]["reason"] == "feature 'age' = -3.0 below min 0"
    assert errors[5]["reason"] == "feature 'age' = 130.5 above max 120"
    assert errors[7]["reason"] == "feature 'age' is null"
    assert errors[9]["reason"] == "feature 'emb' has 2 values, expected 3"
    assert errors[11]["reason"] == "feature 'emb' is NaN"
    assert errors[15]["reason"] == "feature 'review' is null"
    assert {r["stage"] for r in errors.values()} == {"preprocess"}
    assert errors[3]["column"] == "age"
    assert result.num_bad == 6 and len(result.features["tab"]) == 14
    good = table.filter(pa.array(result.good))
    ref = _reference_features(good)
    np.testing.assert_allclose(result.features["tab"], ref["tab"], rtol=1e-5, atol=1e-6)


def _with_raw_text(table: pa.Table, name: str, rows: dict[int, bytes]) -> pa.Table:
    """``table`` with these rows of a string column set to raw bytes (pyarrow checks none)."""
    values = [v.encode() for v in table[name].to_pylist()]
    for i, raw in rows.items():
        values[i] = raw
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    column = pa.Array.from_buffers(pa.string(), len(values), buffers)
    return table.set_column(table.column_names.index(name), name, column)


@pytest.mark.parametrize("num_oov", [0, 1])
def test_categorical_and_text_that_is_not_utf8_are_row_errors(num_oov):
    table = _table(24)
    cities = pa.array([CITIES[i % 3] for i in range(24)])  # all in the vocabulary
    table = table.set_column(table.column_names.index("city"), "city", cities)
    table = _with_raw_text(table, "city", {2: b"m\xfcnchen"})  # Latin-1
    table = _with_raw_text(table, "review", {6: b"Good \xff Plot"})
    spec = json.loads(json.dumps(SPEC))
    spec["features"]["city"]["num_oov"] = num_oov
    tab = TensorInfo("tab", (9 - 1 + num_oov,), "float32")
    run = BatchPreprocessor(plan_preprocess(load_spec(spec), table.schema, [tab, MODEL_INPUTS[1]]))
    result = run(table)
    errors = {json.loads(r["row"])["id"]: r for r in result.errors.to_pylist()}
    assert sorted(errors) == [2, 6]
    # a row's reasons are all its problems, the first one first (with num_oov 0 the escaped
    # value is also out of the vocabulary)
    assert errors[2]["column"] == "city"
    assert errors[2]["reason"].startswith("feature 'city' is not UTF-8 text")
    assert errors[6]["reason"] == "feature 'review' is not UTF-8 text"
    assert json.loads(errors[2]["row"])["city"] == "m\\xfcnchen"
    good = table.filter(pa.array(result.good))
    ref = _reference_features(good)
    np.testing.assert_allclose(result.features["tab"][:, -3:], ref["tab"][:, -3:], atol=1e-6)
    np.testing.assert_array_equal(result.features["txt"], ref["txt"])


def test_plan_checks_shapes_and_fitting():
    table = _table(5)
    wrong = [TensorInfo("tab", (8,), "float32"), TensorInfo("txt", (5,), "int64")]
    with pytest.raises(ConfigError, match=r"model input 'tab' expects shape \[8\].*gives 9"):
        plan_preprocess(load_spec(SPEC), table.schema, wrong)
    unfitted = yaml.safe_load(yaml.safe_dump(SPEC))
    unfitted["features"]["age"]["standardize"] = True
    with pytest.raises(ConfigError, match=r"needs fitting.*age: standardize"):
        plan_preprocess(load_spec(unfitted), table.schema, MODEL_INPUTS)
    bad_type = yaml.safe_load(yaml.safe_dump(SPEC))
    bad_type["features"]["city"]["column"] = "emb"
    with pytest.raises(ConfigError, match="reads column 'emb'"):
        plan_preprocess(load_spec(bad_type), table.schema, MODEL_INPUTS)
    with pytest.raises(ConfigError, match="unknown key"):
        load_spec({"features": {"a": {"type": "numeric", "mean": 1}}})


def test_score_with_spec_end_to_end(tmp_path):
    import keras

    from keras_batch_score.pipelines import score

    table = _table(400)
    age = table["age"].to_pylist()
    for i in (10, 20, 30):
        age[i] = -1.0
    table = table.set_column(1, "age", pa.array(age))
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=150)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    model_path = _model(tmp_path)
    summary = score.run(
        [
            "--model", model_path,
            "--input", str(tmp_path / "in.parquet"),
            "--output", str(tmp_path / "out"),
            "--preprocess", str(tmp_path / "spec.yaml"),
            "--id-column", "id",
            "--batch-size", "128",
        ]
    )  # fmt: skip
    assert summary["rows_read"] == 400
    assert summary["rows_scored"] == 397 and summary["rows_failed"] == 3
    preds = pq.read_table(glob.glob(str(tmp_path / "out" / "predictions-*.parquet"))).sort_by("id")
    lines = [
        json.loads(line)
        for f in glob.glob(str(tmp_path / "out" / "errors-*.jsonl"))
        for line in Path(f).read_text().splitlines()
    ]
    assert sorted(e["row"]["id"] for e in lines) == [10, 20, 30]
    assert {e["reason"] for e in lines} == {"feature 'age' = -1.0 below min 0"}
    good = table.filter(pa.array(~np.isin(np.arange(400), [10, 20, 30])))
    ref = _reference_features(good)
    model = keras.saving.load_model(model_path)
    expected = np.asarray(model([ref["tab"], ref["txt"]]))[:, 0]
    np.testing.assert_array_equal(preds["id"].to_numpy(), good["id"].to_numpy())
    np.testing.assert_allclose(preds["prediction"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_image_spec_rejects_undecodable_and_null_images():
    import tensorflow as tf
    from keras.applications import imagenet_utils

    images = [RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(6)]
    data = [_png(im) for im in images]
    data[2] = b"\x89PNG garbage"
    data[4] = None
    table = pa.table({"id": list(range(6)), "img": pa.array(data, pa.binary())})
    spec = load_spec(
        {
            "features": {
                "img": {"type": "image", "size": [6, 6], "resize": "area", "scale": "imagenet",
                        "imagenet_mode": "torch"}
            }
        }
    )  # fmt: skip
    run = BatchPreprocessor(
        plan_preprocess(spec, table.schema, [TensorInfo("img", (6, 6, 3), "float32")])
    )
    result = run(table)
    errors = {json.loads(r["row"])["id"]: r["reason"] for r in result.errors.to_pylist()}
    assert sorted(errors) == [2, 4]
    assert errors[2].startswith("image 'img' could not be decoded: ")
    assert len(errors[2]) > len("image 'img' could not be decoded: ")
    assert errors[4] == "image 'img' is null"
    good = [0, 1, 3, 5]
    ref = np.stack(
        [
            tf.image.resize(tf.io.decode_png(data[i], channels=3), (6, 6), method="area").numpy()
            for i in good
        ]
    )
    ref = imagenet_utils.preprocess_input(ref, mode="torch", data_format="channels_last")
    np.testing.assert_allclose(result.features["img"], ref, rtol=1e-5, atol=1e-5)


def test_inline_preprocess_section_in_config(tmp_path):
    from keras_batch_score.pipelines import score

    table = _table(120)
    pq.write_table(table, tmp_path / "in.parquet")
    model_path = _model(tmp_path)
    config = {"model": model_path, "input": str(tmp_path / "in.parquet"), "id_columns": ["id"],
              "output": str(tmp_path / "out"), "preprocess": SPEC}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    summary = score.run(["--config", str(tmp_path / "cfg.yaml")])
    assert summary["rows_scored"] == 120 and summary["rows_failed"] == 0
    import keras

    ref = _reference_features(table)
    expected = np.asarray(keras.saving.load_model(model_path)([ref["tab"], ref["txt"]]))[:, 0]
    preds = pq.read_table(glob.glob(str(tmp_path / "out" / "predictions-*.parquet"))).sort_by("id")
    np.testing.assert_allclose(preds["prediction"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_model_shape_mismatch_fails_before_reading(tmp_path):
    from keras_batch_score.pipelines import score

    pq.write_table(_table(10), tmp_path / "in.parquet")
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["features"]["review"]["max_len"] = 7
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"model input 'txt' expects shape \[5\].*gives 7"):
        score.run(["--model", _model(tmp_path), "--input", str(tmp_path / "in.parquet"),
                   "--output", str(tmp_path / "out"), "--preprocess", str(tmp_path / "spec.yaml")])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_optional_categorical_and_text_nulls_are_not_errors():
    table = pa.table(
        {"c": pa.array(["rome", None, "lima"]), "t": pa.array(["Good plot", None, ""])}
    )
    spec = load_spec(
        {
            "features": {
                "c": {"type": "categorical", "vocab": CITIES, "required": False},
                "t": {"type": "text", "vocab": WORDS, "max_len": 3, "required": False},
            },
            "inputs": {"c": ["c"], "t": ["t"]},
        }
    )
    inputs = [TensorInfo("c", (), "int64"), TensorInfo("t", (3,), "int64")]
    result = BatchPreprocessor(plan_preprocess(spec, table.schema, inputs))(table)
    assert result.good is None
    np.testing.assert_array_equal(
        result.features["c"], [2, 0, 0]
    )  # rome = 1 + 1 OOV; null, lima -> OOV
    np.testing.assert_array_equal(result.features["t"], [[2, 5, 0], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(ConfigError, match="needs num_oov >= 1"):
        load_spec({"features": {"c": {"type": "categorical", "vocab": ["a"], "num_oov": 0,
                                      "required": False}}})  # fmt: skip
