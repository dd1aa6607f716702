"""Inputs that vary across files, TFRecord records of the wrong type, and the row locator."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import yaml

from keras_batch_score.pipelines.cli import main
from tests.util import (
    feature_table,
    keras_reference,
    mlp,
    read_errors,
    read_predictions,
    read_summary,
    stacked,
    write_parquet,
)

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    mlp(4, seed=3).save(str(path))
    return str(path)


def _score(model_path, input_glob, out, *extra) -> int:
    return main(["score", "--model", model_path, "--input", str(input_glob), "--output", str(out),
                 "--batch-size", "64", *extra])  # fmt: skip


def _reference(model_path, table: pa.Table) -> np.ndarray:
    import keras

    model = keras.saving.load_model(model_path)
    return keras_reference(model, stacked(table, FEATURES))[:, 0]


def _two_files(tmp_path, variant: str) -> pa.Table:
    """Writes a.parquet and b.parquet; returns the combined rows as file a's schema would read them."""
    a = feature_table(120, 4, seed=1)
    b = feature_table(80, 4, seed=2)
    b = b.set_column(0, "id", pa.array(np.arange(120, 200, dtype=np.int64)))
    combined = pa.concat_tables([a, b])
    if variant == "swapped":
        b = b.select(["f3", "id", "f1", "f0", "f2"])
    elif variant == "extra":
        b = b.append_column("extra", pa.array(np.ones(b.num_rows)))
        b = b.append_column("note", pa.array(["x"] * b.num_rows))
    elif variant == "float64":
        b = b.set_column(2, "f1", b.column("f1").cast(pa.float64()))
    elif variant == "int_feature_and_id":
        ints = np.arange(b.num_rows, dtype=np.int32) % 5
        b = b.set_column(3, "f2", pa.array(ints))
        b = b.set_column(0, "id", b.column("id").cast(pa.int32()))
        combined = pa.concat_tables([a, b.cast(a.schema)])
    write_parquet(tmp_path / "in" / "a.parquet", a, row_group_size=50)
    write_parquet(tmp_path / "in" / "b.parquet", b, row_group_size=50)
    return combined


@pytest.mark.parametrize("variant", ["swapped", "extra", "float64", "int_feature_and_id"])
def test_files_with_different_but_compatible_schemas_are_unified(tmp_path, model_path, variant):
    combined = _two_files(tmp_path, variant)
    assert _score(model_path, tmp_path / "in", tmp_path / "out", "--id-column", "id") == 0
    got = read_predictions(tmp_path / "out")
    assert got.schema.field("id").type == pa.int64()
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(200))
    np.testing.assert_allclose(
        got["prediction"].to_numpy(), _reference(model_path, combined), atol=1e-6
    )
    summary = read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"]) == (200, 200)


def test_file_missing_a_feature_is_refused_naming_file_and_column(tmp_path, model_path, capsys):
    a = feature_table(30, 4, seed=1)
    write_parquet(tmp_path / "in" / "a.parquet", a)
    write_parquet(tmp_path / "in" / "b.parquet", a.drop_columns(["f2"]))
    rc = _score(model_path, tmp_path / "in", tmp_path / "out", "--id-column", "id",
                "--feature-columns", ",".join(FEATURES))  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "b.parquet" in err and "'f2'" in err
    # the same without --feature-columns: the default feature choice says which file lacks what
    rc = _score(model_path, tmp_path / "in", tmp_path / "out2", "--id-column", "id")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "b.parquet" in err and "'f2'" in err


def test_incompatible_types_name_file_column_and_both_types(tmp_path, model_path, capsys):
    a = feature_table(30, 4, seed=1)
    write_parquet(tmp_path / "in" / "a.parquet", a)
    b = a.set_column(1, "f0", pa.array([str(v) for v in a.column("f0").to_pylist()]))
    write_parquet(tmp_path / "in" / "b.parquet", b)
    rc = _score(model_path, tmp_path / "in", tmp_path / "out", "--id-column", "id",
                "--feature-columns", ",".join(FEATURES))  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "'f0'" in err and "b.parquet" in err and "a.parquet" in err
    assert "string" in err and "float" in err


def test_format_names_cuts_long_lists():
    from keras_batch_score.transforms.core.errors import format_names

    assert format_names(["a", "b"]) == "['a', 'b']"
    names = [f"c{i}" for i in range(25)]
    text = format_names(names)
    assert text.startswith("['c0', 'c1'") and "'c19'" in text and "'c20'" not in text
    assert text.endswith("… and 5 more]")


# --------------------------------------------------------------------------- text that is not UTF-8


def _string_array(values: list[bytes]) -> pa.Array:
    """A ``string`` array holding exactly these bytes: pyarrow does not check them, as some writers do not."""
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def test_string_feature_that_is_not_utf8_is_a_row_error(tmp_path, capsys):
    import keras

    inp = keras.Input((1,), dtype="string", name="word")
    onehot = keras.layers.StringLookup(vocabulary=["a", "b", "c"], output_mode="one_hot")(inp)
    model = keras.Model(inp, keras.layers.Dense(1)(onehot))
    model.save(str(tmp_path / "m.keras"))
    n = 90
    words = [b"abc"[i % 3 : i % 3 + 1] for i in range(n)]
    bad = {5, 64}
    for i in bad:
        words[i] = b"caf\xe9"  # latin-1
    table = pa.table({"id": np.arange(n), "word": _string_array(words)})
    path = write_parquet(tmp_path / "in.parquet", table, row_group_size=30)
    assert _score(str(tmp_path / "m.keras"), path, tmp_path / "out", "--id-column", "id") == 0, (
        capsys.readouterr().err
    )
    summary = read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (n, n - 2, 2)
    good = [i for i in range(n) if i not in bad]
    got = read_predictions(tmp_path / "out")
    assert got["id"].to_pylist() == good
    x = np.array([[words[i].decode()] for i in good], dtype=object)
    ref = keras_reference(model, x)[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref, atol=1e-6)
    errors = sorted(read_errors(tmp_path / "out"), key=lambda e: e["row"]["id"])
    assert [e["row"]["id"] for e in errors] == sorted(bad)
    for e in errors:
        assert (e["stage"], e["column"]) == ("validate", "word")
        assert e["reason"] == "feature 'word' is not UTF-8 text"
        assert e["row"]["word"] == "caf\\xe9"


def test_errors_output_keeps_a_rejected_row_whose_passthrough_text_is_not_utf8(
    tmp_path, model_path, capsys
):
    n = 60
    table = feature_table(n, 4, seed=4)
    f1 = table.column("f1").to_numpy().copy()
    f1[7] = np.nan
    table = table.set_column(table.column_names.index("f1"), "f1", pa.array(f1))
    names = [f"n{i}".encode() for i in range(n)]
    names[7] = names[8] = b"\xff\xfe"
    table = table.append_column("name", _string_array(names))
    path = write_parquet(tmp_path / "in.parquet", table, row_group_size=30)
    rc = _score(model_path, path, tmp_path / "out", "--id-column", "id", "--id-column", "name")
    assert rc == 0, capsys.readouterr().err
    summary = read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (n, n - 1, 1)
    [error] = read_errors(tmp_path / "out")
    assert (error["column"], error["row"]["id"], error["row"]["name"]) == ("f1", 7, "\\xff\\xfe")
    got = read_predictions(tmp_path / "out")
    assert got["id"].to_pylist() == [i for i in range(n) if i != 7]
    # a passthrough column is copied unchanged, as its help says, bytes and all
    copied = got["name"].cast(pa.binary()).to_pylist()
    assert copied == [names[i] for i in range(n) if i != 7]
    # JSON holds text: there the bytes are written escaped
    out = tmp_path / "out_jsonl"
    rc = _score(model_path, path, out, "--id-column", "id", "--id-column", "name",
                "--output-format", "jsonl")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    lines = [json.loads(x) for f in sorted(out.glob("predictions-*.jsonl")) for x in f.open()]
    by_id = {r["instance"]["id"]: r["instance"]["name"] for r in lines}
    assert (len(by_id), by_id[8], by_id[9]) == (n - 1, "\\xff\\xfe", "n9")


# --------------------------------------------------------------------------- TFRecord


def _write_tfrecord(path, records) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    return str(path)


def test_tfrecord_record_of_wrong_type_is_a_row_error(tmp_path, capsys):
    import keras

    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes

    rng = np.random.default_rng(0)
    n = 150
    a = rng.normal(size=n).astype(np.float32)
    rows = [{"id": i, "a": float(a[i])} for i in range(n)]
    records = [example_bytes(r) for r in rows]
    bad = {3, 97, 140}
    for i in bad:  # an int64_list where a float_list is expected
        records[i] = example_bytes({"id": i, "a": [7]})
    path = _write_tfrecord(tmp_path / "d.tfrecord", records)
    inp = keras.Input((1,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.save(str(tmp_path / "m.keras"))
    cfg = {"tfrecord_features": [{"name": "id", "dtype": "int"}, {"name": "a", "dtype": "float"}]}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["score", "--config", str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "m.keras"),
               "--input", path, "--output", str(tmp_path / "out"), "--id-column", "id",
               "--batch-size", "64"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (n, n - 3, 3)
    good = np.array([i for i in range(n) if i not in bad])
    got = read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(got["id"].to_numpy(), good)
    ref = np.asarray(model(a[good].reshape(-1, 1), training=False))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref, atol=1e-6)
    errors = sorted(read_errors(tmp_path / "out"), key=lambda e: e["row"]["id"])
    assert [e["row"]["id"] for e in errors] == sorted(bad)
    for e, i in zip(errors, sorted(bad), strict=True):
        assert e["stage"] == "parse" and e["column"] == "a"
        assert "d.tfrecord" in e["reason"] and f"record {i}" in e["reason"]


def test_tfrecord_string_feature_with_invalid_utf8_is_a_row_error(tmp_path, capsys):
    """A ``string`` feature whose bytes are not UTF-8 fails its record, not the job."""
    import keras

    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes

    n = 120
    a = np.random.default_rng(1).normal(size=n).astype(np.float32)
    rows = [{"id": i, "name": f"n\u00e9{i}", "a": float(a[i])} for i in range(n)]
    bad = {2, 77}
    for i in bad:
        rows[i]["name"] = b"\xff\xfe latin-1 \xe9"
    path = _write_tfrecord(tmp_path / "d.tfrecord", [example_bytes(r) for r in rows])
    inp = keras.Input((1,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.save(str(tmp_path / "m.keras"))
    cfg = {"tfrecord_features": [{"name": "id", "dtype": "int"}, {"name": "name", "dtype": "string"},
                                 {"name": "a", "dtype": "float"}]}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["score", "--config", str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "m.keras"),
               "--input", path, "--output", str(tmp_path / "out"), "--id-column", "id",
               "--id-column", "name", "--feature-columns", "a", "--batch-size", "64"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (n, n - 2, 2)
    good = [i for i in range(n) if i not in bad]
    got = read_predictions(tmp_path / "out")
    assert got["id"].to_pylist() == good
    assert got["name"].to_pylist() == [f"n\u00e9{i}" for i in good]
    errors = sorted(read_errors(tmp_path / "out"), key=lambda e: e["row"]["id"])
    assert [e["row"]["id"] for e in errors] == sorted(bad)
    for e, i in zip(errors, sorted(bad), strict=True):
        assert (e["stage"], e["column"]) == ("parse", "name")
        assert f"record {i}: feature 'name': " in e["reason"] and "UTF-8" in e["reason"]


def test_parse_examples_located_bisects_only_the_failing_batch():
    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes, parse_examples_located
    from keras_batch_score.transforms.io.tfrecord_spec import TFRecordFeature

    specs = (TFRecordFeature("id", "int"), TFRecordFeature("a", "float"))
    records = [example_bytes({"id": i, "a": float(i)}) for i in range(40)]
    records[5] = example_bytes({"id": 5, "a": [1]})
    records[6] = b"not a tf.train.Example \xff"
    records[39] = example_bytes({"id": "x", "a": 1.0})
    table, bad = parse_examples_located(records, specs)
    assert table["id"].to_pylist() == [i for i in range(40) if i not in (5, 6, 39)]
    assert table["a"].to_pylist() == [float(i) for i in range(40) if i not in (5, 6, 39)]
    assert [b.position for b in bad] == [5, 6, 39]
    assert [b.column for b in bad] == ["a", None, "id"]
    assert bad[0].values == {"id": 5}


# --------------------------------------------------------------------------- row locator


def test_row_locator_joins_predictions_and_errors_back_to_input_rows(tmp_path, model_path):
    tables = {}
    for name, seed, n in (("a", 1, 230), ("b", 2, 170)):
        t = feature_table(n, 4, seed=seed).drop_columns(["id"])
        f1 = t.column("f1").to_numpy().copy()
        f1[[7, n - 1]] = np.nan  # rows that fail validation
        t = t.set_column(1, "f1", pa.array(f1))
        path = write_parquet(tmp_path / "in" / f"{name}.parquet", t, row_group_size=60)
        tables[path] = t
    assert _score(model_path, tmp_path / "in", tmp_path / "out") == 0
    got = read_predictions(tmp_path / "out", sort_by=None)
    assert got.schema.field("source_file").type == pa.string()
    assert got.schema.field("row_index").type == pa.int64()
    assert got.num_rows == 400 - 4
    files = got["source_file"].to_pylist()
    rows = got["row_index"].to_numpy()
    assert set(files) == set(tables)
    for path, table in tables.items():
        mine = np.array([f == path for f in files])
        idx = rows[mine]
        assert len(set(idx.tolist())) == len(idx) == table.num_rows - 2
        ref = _reference(model_path, table.take(pa.array(idx)))
        np.testing.assert_allclose(got["prediction"].to_numpy()[mine], ref, atol=1e-6)
    errors = read_errors(tmp_path / "out")
    located = sorted((e["row"]["source_file"], e["row"]["row_index"]) for e in errors)
    expected = sorted((p, i) for p, t in tables.items() for i in (7, t.num_rows - 1))
    assert located == expected
    assert all(e["column"] == "f1" for e in errors)


def test_row_locator_for_tfrecord(tmp_path):
    import keras

    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes

    rng = np.random.default_rng(1)
    inp = keras.Input((1,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.save(str(tmp_path / "m.keras"))
    values = {}
    for name, n in (("a", 70), ("b", 50)):
        a = rng.normal(size=n).astype(np.float32)
        path = _write_tfrecord(tmp_path / f"{name}.tfrecord",
                               [example_bytes({"a": float(v)}) for v in a])  # fmt: skip
        values[path] = a
    rc = main(["score", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "*.tfrecord"),
               "--output", str(tmp_path / "out"), "--batch-size", "32"])  # fmt: skip
    assert rc == 0
    got = read_predictions(tmp_path / "out", sort_by=None)
    assert got.num_rows == 120
    located = list(zip(got["source_file"].to_pylist(), got["row_index"].to_pylist(), strict=True))
    assert len(set(located)) == 120
    x = np.array([values[f][i] for f, i in located])
    ref = np.asarray(model(x.reshape(-1, 1), training=False))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref, atol=1e-6)


def test_locator_column_name_collision_is_refused(tmp_path, model_path, capsys):
    t = feature_table(20, 4).rename_columns(["row_index", *FEATURES])
    write_parquet(tmp_path / "in.parquet", t)
    rc = _score(model_path, tmp_path / "in.parquet", tmp_path / "out",
                "--feature-columns", ",".join(FEATURES))  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "row_index" in err and "--id-column" in err


def test_unify_by_name_widens_and_records_conflicts():
    from keras_batch_score.transforms.io.schema import cast_table, unify

    s1 = pa.schema([("id", pa.int32()), ("a", pa.float32()), ("s", pa.string()), ("v", pa.list_(pa.float32(), 2))])  # fmt: skip
    s2 = pa.schema([("v", pa.list_(pa.float64(), 2)), ("a", pa.int64()), ("id", pa.int64()), ("s", pa.int64()), ("only2", pa.int8())])  # fmt: skip
    inputs = unify(["one", "two"], [s1, s2])
    assert inputs.schema == pa.schema(
        [("id", pa.int64()), ("a", pa.float64()), ("v", pa.list_(pa.float64(), 2))]
    )
    assert [c.column for c in inputs.conflicts] == ["s"]
    assert inputs.missing("only2") == ["one"]
    inputs.require(["id", "a", "not_anywhere"])  # fine: unknown names are the planners' business
    with pytest.raises(
        Exception, match=r"column 's' has type string in input file one but int64 in two"
    ):
        inputs.require(["s"])
    with pytest.raises(Exception, match=r"input file one has no column 'only2'"):
        inputs.require(["only2"])
    t = pa.table({"v": pa.array([[1.5, 2.5]], pa.list_(pa.float32(), 2)), "a": [3],
                  "id": pa.array([7], pa.int32()), "extra": ["x"]})  # fmt: skip
    cast = cast_table(t, inputs.schema)
    assert cast.schema == inputs.schema
    assert cast.to_pylist() == [{"id": 7, "a": 3.0, "v": [1.5, 2.5]}]
