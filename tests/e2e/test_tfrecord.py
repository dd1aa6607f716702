"""TFRecord input: vectorized parsing, spec inference, parity with Parquet, corrupt files."""

from __future__ import annotations

import glob
import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.io.tfrecord_parse import example_bytes, parse_examples
from keras_batch_score.transforms.io.tfrecord_spec import (
    TFRecordFeature,
    infer_feature_specs,
    parse_feature_specs,
    resolve_input_format,
)

RNG = np.random.default_rng(5)


def _write(path, records, gzip=False) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP" if gzip else None) as w:
        for r in records:
            w.write(r)
    return str(path)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_examples_nulls_defaults_and_types():
    rows = [
        {"id": 1, "x": 1.5, "v": [1.0, 2.0, 3.0], "s": "hé", "b": b"\x00\xff"},
        {"id": 2, "v": [1.0, 2.0]},  # x missing, v too short, s defaulted, b missing
        {"id": 3, "x": 2.25, "v": [4.0, 5.0, 6.0], "s": "yo", "b": b""},
    ]
    specs = (
        TFRecordFeature("id", "int"),
        TFRecordFeature("x", "float"),
        TFRecordFeature("v", "float", (3,)),
        TFRecordFeature("s", "string", (), "dflt"),
        TFRecordFeature("b", "bytes"),
    )
    table = parse_examples([example_bytes(r) for r in rows], specs)
    assert table.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("x", pa.float32()),
            ("v", pa.list_(pa.float32(), 3)),
            ("s", pa.string()),
            ("b", pa.binary()),
        ]
    )
    assert table.to_pylist() == [
        {"id": 1, "x": 1.5, "v": [1.0, 2.0, 3.0], "s": "hé", "b": b"\x00\xff"},
        {"id": 2, "x": None, "v": None, "s": "dflt", "b": None},
        {"id": 3, "x": 2.25, "v": [4.0, 5.0, 6.0], "s": "yo", "b": b""},
    ]


def test_parse_examples_strings_and_bytes_when_every_record_has_them():
    """The one-buffer path for complete string / bytes columns gives each record its own value."""
    rows = [
        {"s": "h\u00e9", "b": b"\x00\xff", "v": [b"a", b""]},
        {"s": "", "b": b"", "v": [b"", b"\x00\x00"]},
        {"s": "\u65e5\u672c", "b": b"\x89PNG\r\n" * 1000, "v": [b"xy", b"z"]},
    ]
    specs = (
        TFRecordFeature("s", "string"),
        TFRecordFeature("b", "bytes"),
        TFRecordFeature("v", "bytes", (2,)),
    )
    table = parse_examples([example_bytes(r) for r in rows], specs)
    assert table.schema == pa.schema(
        [("s", pa.string()), ("b", pa.binary()), ("v", pa.list_(pa.binary(), 2))]
    )
    assert table.to_pylist() == rows
    assert table.slice(1).to_pylist() == rows[1:]
    assert parse_examples([], specs).num_rows == 0


def test_string_feature_that_is_not_utf8_is_located_and_named():
    from keras_batch_score.transforms.io.tfrecord_parse import parse_examples_located

    specs = (TFRecordFeature("id", "int"), TFRecordFeature("s", "string"))
    records = [example_bytes({"id": i, "s": f"r{i}"}) for i in range(20)]
    records[7] = example_bytes({"id": 7, "s": b"caf\xe9"})
    table, bad = parse_examples_located(records, specs)
    assert table["id"].to_pylist() == [i for i in range(20) if i != 7]
    assert table["s"].to_pylist() == [f"r{i}" for i in range(20) if i != 7]
    assert [(b.position, b.column, b.values) for b in bad] == [(7, "s", {"id": 7})]
    assert "not UTF-8" in bad[0].detail and "'bytes'" in bad[0].detail
    # the same record in a batch where another record lacks the feature (the padded path)
    records[3] = example_bytes({"id": 3})
    table, bad = parse_examples_located(records, specs)
    assert table["s"].to_pylist()[3] is None
    assert [(b.position, b.column) for b in bad] == [(7, "s")]


def test_spec_config_validation_and_format_detection():
    specs = parse_feature_specs({"a": "float", "v": {"dtype": "int", "shape": [2], "default": 0}})
    assert specs == (TFRecordFeature("a", "float"), TFRecordFeature("v", "int", (2,), 0))
    with pytest.raises(ConfigError, match="feature 'a' has dtype 'double'"):
        parse_feature_specs([{"name": "a", "dtype": "double"}])
    with pytest.raises(ConfigError, match="unknown key"):
        parse_feature_specs([{"name": "a", "dtype": "float", "shpe": [2]}])
    assert resolve_input_format("auto", ["a.tfrecord.gz", "b.tfr"]) == "tfrecord"
    assert resolve_input_format("auto", ["a.parquet"]) == "parquet"
    with pytest.raises(ConfigError, match="TFRecord files"):
        resolve_input_format("auto", ["a.tfrecord", "b.parquet"])


def test_infer_spec_from_gzip_file(tmp_path, caplog):
    rows = [{"id": i, "x": float(i), "v": [1.0, 2.0], "tag": "t"} for i in range(10)]
    path = _write(tmp_path / "d.tfrecord.gz", [example_bytes(r) for r in rows], gzip=True)
    with caplog.at_level(logging.INFO, logger="keras_batch_score"):
        specs = infer_feature_specs(path)
    assert {s.name: (s.dtype, s.shape) for s in specs} == {
        "id": ("int", ()),
        "x": ("float", ()),
        "v": ("float", (2,)),
        "tag": ("bytes", ()),
    }
    assert "inferred" in caplog.text


def _data(n: int):
    ids = np.arange(n, dtype=np.int64)
    x = RNG.normal(size=(n, 4)).astype(np.float32)
    images = RNG.integers(0, 256, size=(n, 10, 10, 3), dtype=np.uint8)
    pngs = [_png(im) for im in images]
    return ids, x, pngs


def _image_model(path) -> str:
    import keras

    x = keras.Input((4,), name="x")
    img = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(4, 3, activation="relu")(img)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([h, keras.layers.Dense(4)(x)]))
    keras.Model([x, img], out).save(str(path / "m.keras"))
    return str(path / "m.keras")


SPEC = {
    "features": {
        "x": {"type": "numeric", "shape": [4], "standardize": {"mean": 0.1, "std": 1.5}},
        "img": {"type": "image", "size": [8, 8], "resize": "bilinear", "scale": "-1-1"},
    }
}


def test_tfrecord_and_parquet_give_identical_predictions(tmp_path):
    from keras_batch_score.pipelines import score

    n = 300
    ids, x, pngs = _data(n)
    records = [
        example_bytes({"id": int(i), "x": list(map(float, x[i])), "img": pngs[i]}) for i in ids
    ]
    _write(tmp_path / "a.tfrecord.gz", records[:170], gzip=True)
    _write(tmp_path / "b.tfrecord.gz", records[170:], gzip=True)
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "x": pa.array(list(x), pa.list_(pa.float32(), 4)),
                "img": pa.array(pngs, pa.binary()),
            }
        ),
        tmp_path / "in.parquet",
        row_group_size=100,
    )
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    model = _image_model(tmp_path)
    common = ["--model", model, "--preprocess", str(tmp_path / "spec.yaml"), "--id-column", "id",
              "--batch-size", "64"]  # fmt: skip
    s1 = score.run(
        [*common, "--input", str(tmp_path / "*.tfrecord.gz"), "--output", str(tmp_path / "o1")]
    )
    s2 = score.run(
        [*common, "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o2")]
    )
    assert s1["rows_read"] == s2["rows_read"] == n
    assert s1["rows_scored"] == s2["rows_scored"] == n
    p1 = pq.read_table(glob.glob(str(tmp_path / "o1" / "predictions-*"))).sort_by("id")
    p2 = pq.read_table(glob.glob(str(tmp_path / "o2" / "predictions-*"))).sort_by("id")
    np.testing.assert_array_equal(p1["id"].to_numpy(), ids)
    np.testing.assert_array_equal(p1["prediction"].to_numpy(), p2["prediction"].to_numpy())
    # and both equal the model applied to an independent reference preprocessing
    import keras
    import tensorflow as tf

    imgs = np.stack(
        [tf.image.resize(tf.io.decode_png(p, channels=3), (8, 8)).numpy() for p in pngs]
    )
    ref = keras.saving.load_model(model)([(x - 0.1) / 1.5, imgs / 127.5 - 1.0])
    np.testing.assert_allclose(p1["prediction"].to_numpy(), np.asarray(ref)[:, 0], atol=1e-5)


def test_tfrecord_without_spec_matches_parquet(tmp_path):
    """Plain numeric features, spec inferred: same predictions as the Parquet file."""
    import keras

    from keras_batch_score.pipelines import score

    n = 250
    ids = np.arange(n, dtype=np.int64)
    a = RNG.normal(size=n).astype(np.float32)
    v = RNG.normal(size=(n, 3)).astype(np.float32)
    _write(
        tmp_path / "d.tfr",
        [example_bytes({"id": int(i), "a": float(a[i]), "v": list(map(float, v[i]))}) for i in ids],
    )
    pq.write_table(
        pa.table({"id": ids, "a": a, "v": pa.array(list(v), pa.list_(pa.float32(), 3))}),
        tmp_path / "d.parquet",
    )
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(1)(inp)).save(str(tmp_path / "lin.keras"))
    args = ["--model", str(tmp_path / "lin.keras"), "--id-column", "id", "--feature-columns", "a,v"]
    score.run([*args, "--input", str(tmp_path / "d.tfr"), "--output", str(tmp_path / "o1")])
    score.run([*args, "--input", str(tmp_path / "d.parquet"), "--output", str(tmp_path / "o2")])
    p1 = pq.read_table(glob.glob(str(tmp_path / "o1" / "predictions-*"))).sort_by("id")
    p2 = pq.read_table(glob.glob(str(tmp_path / "o2" / "predictions-*"))).sort_by("id")
    assert p1.num_rows == n
    np.testing.assert_array_equal(p1["prediction"].to_numpy(), p2["prediction"].to_numpy())


@pytest.mark.parametrize("gzip", [False, True])
def test_truncated_tfrecord_fails_job_and_publishes_nothing(tmp_path, gzip):
    import keras

    from keras_batch_score.pipelines import score

    records = [example_bytes({"id": i, "a": float(i)}) for i in range(200)]
    suffix = ".tfrecord.gz" if gzip else ".tfrecord"
    good = _write(tmp_path / f"good{suffix}", records, gzip=gzip)
    bad = _write(tmp_path / f"bad{suffix}", records, gzip=gzip)
    raw = Path(bad).read_bytes()
    with open(bad, "wb") as f:
        f.write(raw[: len(raw) * 2 // 3])  # cut in the middle of a record
    inp = keras.Input((1,))
    keras.Model(inp, keras.layers.Dense(1)(inp)).save(str(tmp_path / "m.keras"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions-previous.parquet").write_bytes(b"old results")
    (out / "run_summary.json").write_text('{"previous": true}')
    previous = [{"name": p.name, "size": p.stat().st_size} for p in out.iterdir()]
    manifest = {"format": "keras-batch-score/manifest", "version": 1, "files": previous}
    (out / "_manifest.json").write_text(json.dumps(manifest))  # a previous run wrote them
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    spec = yaml.safe_dump({"tfrecord_features": [{"name": "id", "dtype": "int"},
                                                 {"name": "a", "dtype": "float"}]})  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(spec)
    with pytest.raises(Exception, match=r"TFRecord file .*bad\.tfrecord.* is truncated or corrupt"):
        score.run(
            ["--config", str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "m.keras"),
             "--input", str(tmp_path / f"*{suffix}"), "--output", str(out), "--id-column", "id"]
        )  # fmt: skip
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("_staging")}
    assert after == before
    assert good  # the good file was part of the input


@pytest.mark.slow
def test_w2_benchmark_smoke(tmp_path):
    """The W2 harness on 40 images: both sides run and agree exactly (the real run is `make bench`)."""
    from benchmarks.images import run_w2

    result = run_w2(tmp_path, n_images=40, rounds=1)
    assert result["rows_compared"] == 40
    assert result["max_abs_prediction_diff"] is not None
    assert result["max_abs_prediction_diff"] < 1e-6
    assert result["ours_rows_per_s"] > 0 and result["tfdata_script_rows_per_s"] > 0


def test_tfrecord_bad_images_and_missing_values_go_to_errors(tmp_path):
    """Corrupt / missing images and wrong-length vectors: row errors, the rest is scored, counts reconcile."""
    from keras_batch_score.pipelines import score

    n = 90
    ids, x, pngs = _data(n)
    rows = [{"id": int(i), "x": list(map(float, x[i])), "img": pngs[i]} for i in ids]
    rows[4]["img"] = b"\x89PNG\r\n\x1a\n truncated"
    rows[50]["img"] = pngs[50][: len(pngs[50]) // 2]
    del rows[61]["img"]
    rows[70]["x"] = rows[70]["x"][:3]
    _write(tmp_path / "d.tfrecord", [example_bytes(r) for r in rows])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    cfg = {"tfrecord_features": [{"name": "id", "dtype": "int"},
                                 {"name": "x", "dtype": "float", "shape": [4]},
                                 {"name": "img", "dtype": "bytes"}]}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    summary = score.run(
        ["--config", str(tmp_path / "cfg.yaml"), "--model", _image_model(tmp_path),
         "--input", str(tmp_path / "d.tfrecord"), "--output", str(tmp_path / "out"),
         "--preprocess", str(tmp_path / "spec.yaml"), "--id-column", "id", "--batch-size", "32"]
    )  # fmt: skip
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (n, n - 4, 4)
    errors = {}
    for f in glob.glob(str(tmp_path / "out" / "errors-*.jsonl")):
        for line in Path(f).read_text().splitlines():
            e = json.loads(line)
            errors[e["row"]["id"]] = e
    assert sorted(errors) == [4, 50, 61, 70]
    assert errors[4]["reason"].startswith("image 'img' could not be decoded: ")
    assert errors[50]["reason"].startswith("image 'img' could not be decoded: ")
    assert errors[61]["reason"] == "image 'img' is null"
    assert errors[70]["reason"] == "feature 'x' is null"
    assert {e["stage"] for e in errors.values()} == {"preprocess"}
    preds = pq.read_table(glob.glob(str(tmp_path / "out" / "predictions-*"))).sort_by("id")
    assert preds["id"].to_pylist() == [i for i in range(n) if i not in (4, 50, 61, 70)]
