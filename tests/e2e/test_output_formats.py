"""Richer outputs: JSON Lines and TFRecord predictions, prob_<class> columns, multi-label labels."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import score
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.postprocess import class_outputs
from tests import util

keras = util.keras
tf = util.import_tensorflow()
N_FEATURES = 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
CLASSES = ["cat", "dog house", "bird!"]  # sanitized: prob_cat, prob_dog_house, prob_bird_
THRESHOLDS = {"cat": 0.4, "dog house": 0.55}  # bird!: the default 0.5


def _multi_label_model(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.Dense(8, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation="sigmoid")(h))


def _two_output_model(seed: int = 5) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.Dense(8, activation="relu")(inp)
    score_out = keras.layers.Dense(1, activation="sigmoid", name="score")(h)
    embedding = keras.layers.Dense(2, name="embedding")(h)
    return keras.Model(inp, {"score": score_out, "embedding": embedding})


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    table = util.feature_table(700, N_FEATURES, seed=4)
    table = table.append_column("name", pa.array([f"row-{i}" for i in range(700)]))
    model = _multi_label_model()
    model.save(root / "ml.keras")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "thresholds.json").write_text(json.dumps(THRESHOLDS))
    return root, table, model, util.write_parquet(root / "in.parquet", table, row_group_size=300)


def _run(job, out, fmt: str, *extra: str, **options) -> dict:
    """Scores the job's multi-label model (ids ``id`` and ``name``) writing ``fmt``."""
    root, _, _, input_path = job
    defaults = {
        "model": str(root / "ml.keras"),
        "input": input_path,
        "id_columns": ["id", "name"],
        "feature_columns": ",".join(FEATURES),
        "batch_size": 128,
        "output_format": fmt,
    }
    return util.run_score(out, *extra, **{**defaults, **options}).summary


CLASS_FLAGS = (
    "--class-names",
    "CLASSES",
    "--probability-columns",
    "--multi-label-threshold",
    "0.5",
    "--multi-label-thresholds",
    "THRESHOLDS",
)


def _class_flags(root) -> list[str]:
    flags = list(CLASS_FLAGS)
    flags[1] = str(root / "classes.txt")
    flags[-1] = str(root / "thresholds.json")
    return flags


def _files(out, suffix: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(str(out), f"predictions-*.{suffix}")))
    assert files, os.listdir(out)
    return files


def _f32(value) -> list:
    return np.asarray(value, dtype=np.float32).ravel().tolist()


def _json_rows(out) -> list[dict]:
    rows = []
    for path in _files(out, "jsonl"):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return sorted(rows, key=lambda r: r["instance"]["id"])


def _tfrecord_rows(out) -> list[tf.train.Example]:
    rows = []
    for path in _files(out, "tfrecord"):
        rows += [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    return sorted(rows, key=lambda e: e.features.feature["id"].int64_list.value[0])


def test_prob_columns_and_labels_against_the_model(job, tmp_path):
    root, table, model, _ = job
    _run(job, tmp_path / "pq", "parquet", *_class_flags(root))
    got = util.read_predictions(tmp_path / "pq")
    assert got.column_names == [
        "id",
        "name",
        "prediction",
        "prob_cat",
        "prob_dog_house",
        "prob_bird_",
        "labels",
        "model",
    ]
    ref = util.keras_reference(model, util.stacked(table, FEATURES))
    for j, column in enumerate(["prob_cat", "prob_dog_house", "prob_bird_"]):
        np.testing.assert_allclose(got[column].to_numpy(), ref[:, j], atol=1e-6)
    thresholds = np.array([0.4, 0.55, 0.5], dtype=np.float32)
    mask = ref >= thresholds
    expected = [[c for c, m in zip(CLASSES, row, strict=True) if m] for row in mask]
    assert got["labels"].to_pylist() == expected
    assert any(len(x) == 0 for x in expected) and any(len(x) >= 2 for x in expected)


def test_jsonl_and_tfrecord_read_back_equal_parquet(job, tmp_path):
    root = job[0]
    flags = _class_flags(root)
    _run(job, tmp_path / "pq", "parquet", *flags)
    summary = _run(job, tmp_path / "js", "jsonl", *flags)
    _run(job, tmp_path / "tfr", "tfrecord", *flags)
    expected = util.read_predictions(tmp_path / "pq").to_pylist()
    assert all(f.endswith(".jsonl") for f in summary["output_files"] if "predictions-" in f)

    lines = _json_rows(tmp_path / "js")
    assert len(lines) == len(expected)
    for line, row in zip(lines, expected, strict=True):
        assert line["instance"] == {"id": row["id"], "name": row["name"]}
        assert _f32(line["prediction"]) == _f32(row["prediction"])  # the same float32 values
        for c in ("prob_cat", "prob_dog_house", "prob_bird_"):
            assert _f32(line[c]) == _f32(row[c])
        assert line["labels"] == row["labels"]
        assert line["model"] == row["model"]
        assert set(line) == {
            "instance",
            "prediction",
            "prob_cat",
            "prob_dog_house",
            "prob_bird_",
            "labels",
            "model",
        }

    examples = _tfrecord_rows(tmp_path / "tfr")
    assert len(examples) == len(expected)
    for ex, row in zip(examples, expected, strict=True):
        f = ex.features.feature
        assert set(f) == set(row)  # one feature per output column
        assert list(f["id"].int64_list.value) == [row["id"]]
        assert list(f["name"].bytes_list.value) == [row["name"].encode()]
        np.testing.assert_array_equal(
            np.array(f["prediction"].float_list.value, np.float32),
            np.array(row["prediction"], np.float32),
        )
        assert f["prob_cat"].float_list.value[0] == np.float32(row["prob_cat"])
        assert [v.decode() for v in f["labels"].bytes_list.value] == row["labels"]
        assert f["model"].bytes_list.value[0].decode() == row["model"]


def test_jsonl_named_outputs_form_a_prediction_object(job, tmp_path):
    _root, table, _, input_path = job
    model = _two_output_model()
    model.save(tmp_path / "two.keras")
    args = ["--model", str(tmp_path / "two.keras"), "--input", input_path, "--id-column", "id", "--feature-columns", ",".join(FEATURES), "--quiet"]  # fmt: skip
    score.run([*args, "--output", str(tmp_path / "pq")])
    score.run([*args, "--output", str(tmp_path / "js"), "--output-format", "jsonl"])
    expected = util.read_predictions(tmp_path / "pq").to_pylist()
    lines = _json_rows(tmp_path / "js")
    ref = util.keras_reference(model, util.stacked(table, FEATURES))
    for line, row in zip(lines, expected, strict=True):
        assert line["instance"] == {"id": row["id"]}
        assert set(line["prediction"]) == {"score", "embedding"}
        assert _f32(line["prediction"]["score"]) == _f32(row["prediction_score"])
        assert _f32(line["prediction"]["embedding"]) == _f32(row["prediction_embedding"])
    np.testing.assert_allclose(
        [x["prediction"]["score"] for x in lines], ref["score"].ravel(), atol=1e-6
    )


def test_a_new_format_replaces_the_previous_runs_files(job, tmp_path):
    out = tmp_path / "out"
    _run(job, out, "parquet")
    _run(job, out, "tfrecord")
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.endswith(".parquet")]
    assert [n for n in names if n.startswith("predictions-") and n.endswith(".tfrecord")]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert {f["name"] for f in manifest["files"]} == {n for n in names if not n.startswith("_")}


def test_class_name_sanitizing_and_collisions():
    assert class_outputs.probability_columns(["a b", "c-d", "é"]) == (
        "prob_a_b",
        "prob_c_d",
        "prob__",
    )
    with pytest.raises(ConfigError, match="both become column 'prob_a_b'"):
        class_outputs.probability_columns(["a b", "a-b"])


def test_multi_label_thresholds_resolve():
    assert class_outputs.resolve_thresholds(["a", "b"], 0.5, {"b": 0.2}) == (0.5, 0.2)
    with pytest.raises(ConfigError, match="lacks"):
        class_outputs.resolve_thresholds(["a", "b"], 0.5, {"z": 0.2})
    with pytest.raises(ConfigError, match="no threshold"):
        class_outputs.resolve_thresholds(["a", "b"], None, {"b": 0.2})


def _args(*extra: str) -> list[str]:
    return ["--model", "m.keras", "--input", "in.parquet", "--output", "out", *extra]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--output-format", "csv"], None),
        (["--probability-columns"], "--class-names"),
        (["--multi-label-threshold", "0.5"], "--class-names"),
        (["--multi-label-threshold", "0.5", "--class-names", "c.txt", "--top-k", "2"], "--top-k"),
        (["--multi-label-threshold", "nan", "--class-names", "c.txt"], "finite"),
    ],
)
def test_flags_are_checked(extra, match):
    if match is None:
        with pytest.raises(SystemExit):
            score.parse_args(_args(*extra))
        return
    with pytest.raises(ConfigError, match=match):
        score.parse_args(_args(*extra))


def test_yaml_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: m.keras\ninput: in.parquet\noutput: out\noutput_format: jsonl\nclass_names: c.txt\n"
        "probability_columns: true\nmulti_label_threshold: 0.3\nmulti_label_thresholds: t.json\n"
    )
    config, _, _ = score.parse_args(["--config", str(path)])
    assert config.output_format == "jsonl" and config.probability_columns
    assert (config.multi_label_threshold, config.multi_label_thresholds) == (0.3, "t.json")
    path.write_text("model: m.keras\ninput: in.parquet\noutput: out\noutput_format: xml\n")
    with pytest.raises(ConfigError, match="output_format"):
        score.parse_args(["--config", str(path)])


def test_multi_label_needs_one_sigmoid_per_class(job, tmp_path):
    _root, _, _, input_path = job
    util.mlp(N_FEATURES, seed=1).save(tmp_path / "bin.keras")
    (tmp_path / "two.txt").write_text("neg\npos\n")
    with pytest.raises(ConfigError, match="one sigmoid per class"):
        score.plan(
            score.parse_args(
                ["--model", str(tmp_path / "bin.keras"), "--input", input_path, "--output", str(tmp_path / "o"),
                 "--id-column", "id", "--feature-columns", ",".join(FEATURES),
                 "--class-names", str(tmp_path / "two.txt"), "--multi-label-threshold", "0.5"]
            )[0]
        )  # fmt: skip


def test_json_lines_write_nan_as_null_and_keep_row_order():
    from keras_batch_score.transforms.io.output_formats import JsonLayout, json_lines

    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "prediction": pa.array([[0.5, float("nan")], [1.0, 2.0]], pa.list_(pa.float32())),
            "prediction_shadow": pa.array([float("nan"), 0.25], pa.float32()),
            "model": pa.array(["m", "m"]),
        }
    )
    lines = json_lines(table, JsonLayout(("id",), (("prediction", "out"),))).split("\n")
    assert [json.loads(x) for x in lines] == [
        {"instance": {"id": 1}, "prediction": [0.5, None], "prediction_shadow": None, "model": "m"},
        {"instance": {"id": 2}, "prediction": [1.0, 2.0], "prediction_shadow": 0.25, "model": "m"},
    ]


def _reference_example(row: dict) -> tf.train.Example:
    """An independent per-row tf.train.Example built with TensorFlow's protobuf classes."""
    feature = {}
    for name, v in row.items():
        if v is None:
            continue
        items = v if isinstance(v, list) else [v]
        if name in FLOATS:
            feature[name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[np.nan if x is None else x for x in items])
            )
        elif name in INTS:
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(x) for x in items])
            )
        else:
            feature[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(
                    value=[x.encode() if isinstance(x, str) else x for x in items]
                )
            )
    return tf.train.Example(features=tf.train.Features(feature=feature))


FLOATS = {"p", "v"}
INTS = {"id", "flag", "ints"}


def test_columnar_example_encoder_matches_tensorflow():
    from keras_batch_score.transforms.io.example_encoder import serialize_examples

    long_text = "x" * 300  # a length that needs a 2-byte varint
    table = pa.table(
        {
            "id": pa.array([1, -5, None, 2**40, 0, 7], pa.int64()),
            "name": pa.array(["a", "", None, "héllo", long_text, "z"]),
            "p": pa.array([0.5, float("nan"), None, -1e30, 2.0, 0.0], pa.float32()),
            "v": pa.array(
                [[1.0, 2.0], [], None, [float("nan")], [3.0] * 100, [0.25]], pa.list_(pa.float32())
            ),
            "labels": pa.array(
                [["a", "b"], [], None, ["c"], ["d"] * 3, [long_text]], pa.list_(pa.string())
            ),
            "flag": pa.array([True, False, None, True, False, True]),
            "ints": pa.array(
                [[1, -2], [], None, [2**62], [127, 128], [-(2**63)]], pa.list_(pa.int64())
            ),
            "raw": pa.array([b"\x00\xff", b"", None, b"abc", b"q" * 200, b"!"], pa.binary()),
        }
    )
    for part in (table, table.slice(1, 4), table.slice(0, 0)):
        got = serialize_examples(part).rows()
        rows = part.to_pylist()
        assert len(got) == len(rows)
        for encoded, row in zip(got, rows, strict=True):
            parsed = tf.train.Example.FromString(encoded)
            assert str(parsed) == str(_reference_example(row))  # str(): NaN compares equal
    # and TensorFlow's own batch parser reads the same values
    parsed = tf.io.parse_example(
        serialize_examples(table).rows(),
        {
            "p": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
            "name": tf.io.VarLenFeature(tf.string),
        },
    )
    np.testing.assert_array_equal(
        parsed["p"].numpy()[[0, 2, 3]], np.array([0.5, -1.0, -1e30], np.float32)
    )


def test_json_values_round_trip_through_json_loads():
    from keras_batch_score.transforms.io.output_formats import json_values

    texts = ["plain", 'quote " and \\ backslash', "new\nline\ttab\x00nul\x1f", "ünï €", "", None]
    floats = np.array([0.37759227, 1e30, -0.0, 2.0, 1e-5, 3.4e38], np.float32)
    ints = [0, -1, 2**62, None, 7, -(2**63)]
    table = pa.table(
        {
            "s": pa.array(texts),
            "f": pa.array(floats),
            "i": pa.array(ints, pa.int64()),
            "b": pa.array([True, False, None, True, False, True]),
            "l": pa.array([["a", '"'], [], None, ["\\"], ["x"], ["y", "z"]], pa.list_(pa.string())),
            "fl": pa.array(
                [[1.5, float("inf")], [], None, [0.1], [2.0], [-3.0]], pa.list_(pa.float32())
            ),
        }
    )
    for name in table.column_names:
        decoded = [json.loads(x) for x in json_values(table.column(name)).to_pylist()]
        expected = table.column(name).to_pylist()
        if name == "f":
            np.testing.assert_array_equal(np.array(decoded, np.float32), floats)  # exact float32
        elif name == "fl":
            assert decoded == [[1.5, None], [], None, [pytest.approx(0.1, rel=1e-7)], [2.0], [-3.0]]
        else:
            assert decoded == expected, name
