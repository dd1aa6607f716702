"""The reference profile: data model, the profile pipeline and its numbers against numpy/Keras."""

from __future__ import annotations

import collections
import json

import datasketches
import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines import cli, profile
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.drift import profile_format as prof
from keras_batch_score.transforms.drift.profile_build import Candidate
from keras_batch_score.transforms.drift.profile_format import KindRule
from keras_batch_score.transforms.drift.profiling import SketchFn
from keras_batch_score.transforms.drift.sketches import KLL_K
from tests import util

N = 3000
# The KLL sketch's bin-mass error bound (99% confidence) for k = KLL_K, plus rounding.
PMF_ERROR = datasketches.kll_doubles_sketch.get_normalized_rank_error(KLL_K, True)


def assert_counts_near_numpy(counts, values, edges):
    """Sketched bin counts: they sum exactly to the values and each is within the
    sketch's mass error of numpy's exact count on the same edges (last bin closed)."""
    expected, _ = np.histogram(values, np.asarray(edges))
    assert sum(counts) == values.size
    assert np.abs(np.asarray(counts) - expected).max() <= PMF_ERROR * values.size + 1


def _data(seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 3.0, size=N)
    x_nulls = rng.random(N) < 0.05
    y = rng.normal(size=N)
    y[rng.random(N) < 0.03] = np.nan  # NaN counts as null
    words = rng.choice(["a", "b", "c", "d", "e", "f"], size=N, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    words = words.astype(object)
    words[rng.random(N) < 0.02] = None
    return pa.table(
        {
            "id": pa.array(np.arange(N)),
            "x": pa.array(x, mask=x_nulls),
            "y": pa.array(y),
            "word": pa.array(words.tolist(), pa.string()),
            "small_int": pa.array(rng.integers(0, 3, size=N)),
            "big_int": pa.array(rng.integers(0, 10_000, size=N)),
            "flag": pa.array(rng.random(N) < 0.7),
            "vec": pa.array([[1.0, 2.0]] * N, pa.list_(pa.float32())),
        }
    )


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    table = _data()
    # Two files, several row groups: the sketches are merged across batches.
    util.write_parquet(root / "in" / "a.parquet", table.slice(0, 1700), row_group_size=400)
    util.write_parquet(root / "in" / "b.parquet", table.slice(1700), row_group_size=400)
    out = root / "profile.json"
    assert (
        cli.main(
            [
                "profile",
                "--input",
                str(root / "in"),
                "--output",
                str(out),
                "--id-column",
                "id",
                "--top-k",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    return table, json.loads(out.read_text()), str(out)


def test_numeric_bins_counts_and_moments_match_numpy(profiled):
    table, doc, _ = profiled
    assert doc["format"] == prof.PROFILE_FORMAT and doc["version"] == prof.PROFILE_VERSION
    assert doc["rows"] == N
    for name in ("x", "y"):
        raw = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        values = raw[~np.isnan(raw)]
        stats = doc["features"][name]
        assert stats["kind"] == "numeric"
        assert stats["null_count"] == N - values.size
        assert stats["count"] == values.size
        edges = np.asarray(stats["edges"])
        assert len(edges) == prof.DEFAULT_NUM_BINS + 1
        assert edges[0] == values.min() and edges[-1] == values.max()
        # Quantile edges from the sketch: each interior edge sits near its exact quantile.
        ranks = np.searchsorted(np.sort(values), edges[1:-1]) / values.size
        np.testing.assert_allclose(ranks, np.arange(1, 10) / 10, atol=0.02)
        # Counts from the sketch's PMF: near numpy's histogram on the same edges.
        assert_counts_near_numpy(stats["counts"], values, edges)
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert stats["std"] == pytest.approx(values.std(), rel=1e-9)
        assert stats["min"] == values.min() and stats["max"] == values.max()


def test_categorical_top_values_other_and_nulls(profiled):
    table, doc, _ = profiled
    words = [w for w in table.column("word").to_pylist() if w is not None]
    counter = collections.Counter(words)
    top = counter.most_common(3)
    stats = doc["features"]["word"]
    assert stats["kind"] == "categorical"
    assert stats["values"] == [w for w, _ in top]
    assert stats["counts"] == [c for _, c in top]
    assert stats["other_count"] == len(words) - sum(c for _, c in top)
    assert stats["null_count"] == N - len(words)
    flag = doc["features"]["flag"]
    n_true = int(np.sum(table.column("flag").to_numpy(zero_copy_only=False)))
    assert dict(zip(flag["values"], flag["counts"], strict=True)) == {
        "true": n_true,
        "false": N - n_true,
    }


def test_integer_kind_rule_and_skipped_columns(profiled):
    table, doc, _ = profiled
    small = doc["features"]["small_int"]
    assert small["kind"] == "categorical"
    counts = collections.Counter(table.column("small_int").to_pylist())
    assert dict(zip(small["values"], small["counts"], strict=True)) == {
        str(k): v for k, v in counts.items()
    }
    assert doc["features"]["big_int"]["kind"] == "numeric"
    assert "id" not in doc["features"]
    assert "vec" not in doc["features"]
    assert "vec" in doc["metadata"]["skipped_columns"]


def test_kind_rule_is_configurable(tmp_path):
    table = _data(1)
    path = util.write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "p.json"
    doc = profile.run(
        [
            "--input",
            path,
            "--output",
            str(out),
            "--feature-columns",
            "small_int,big_int,y",
            "--categorical-max-distinct",
            "0",
            "--categorical-columns",
            "big_int",
            "--num-bins",
            "4",
            "--quiet",
        ]
    )
    assert doc["features"]["small_int"]["kind"] == "numeric"  # rule off
    assert doc["features"]["big_int"]["kind"] == "categorical"  # forced
    assert len(doc["features"]["big_int"]["values"]) == prof.DEFAULT_TOP_K
    assert len(doc["features"]["y"]["edges"]) == 5
    assert set(doc["features"]) == {"small_int", "big_int", "y"}


def test_categorical_text_that_is_not_utf8_is_counted_escaped(tmp_path):
    """Profiling and drift count such a value as its escaped text, instead of failing the job."""
    words = [b"a", b"b", b"caf\xe9"] * 20
    offsets = np.cumsum([0, *map(len, words)]).astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(words))]
    word = pa.Array.from_buffers(pa.string(), len(words), buffers)  # pyarrow checks none
    table = pa.table({"id": np.arange(len(words)), "word": word})
    path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=25)
    out = str(tmp_path / "p.json")
    doc = profile.run(["--input", path, "--output", out, "--feature-columns", "word", "--quiet"])
    stats = doc["features"]["word"]
    assert stats["kind"] == "categorical"
    assert dict(zip(stats["values"], stats["counts"], strict=True)) == {
        "a": 20,
        "b": 20,
        "caf\\xe9": 20,
    }


def test_profile_with_model_covers_predictions(tmp_path):
    table = util.feature_table(1500, 3, seed=4)
    path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=500)
    model = util.mlp(3, seed=5)
    model_path = str(tmp_path / "m.keras")
    model.save(model_path)
    doc = profile.run(
        [
            "--input",
            path,
            "--output",
            str(tmp_path / "p.json"),
            "--id-column",
            "id",
            "--model",
            model_path,
            "--quiet",
        ]
    )
    assert set(doc["features"]) == {"f0", "f1", "f2"}
    pred = doc["predictions"]["prediction"]
    expected = util.keras_reference(model, util.stacked(table, ["f0", "f1", "f2"]))[:, 0]
    expected = expected.astype(np.float64)
    assert pred["kind"] == "numeric" and pred["count"] == 1500
    assert pred["mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert pred["std"] == pytest.approx(expected.std(), rel=1e-4)
    assert pred["min"] == pytest.approx(expected.min(), rel=1e-5)
    assert sum(pred["counts"]) == 1500
    assert doc["metadata"]["model"].startswith("m.keras@")


def test_roundtrip_and_validation_errors(profiled, tmp_path):
    _, doc, path = profiled
    loaded = prof.load_profile(path)
    assert loaded.to_dict() == doc
    assert isinstance(loaded.features["x"], prof.NumericStats)
    bad = dict(doc, version=2)
    with pytest.raises(prof.ProfileError, match="version 2 is not supported"):
        prof.profile_from_dict(bad)
    with pytest.raises(prof.ProfileError, match="not a keras-batch-score profile"):
        prof.profile_from_dict({"features": {}})
    broken = json.loads(json.dumps(doc))
    del broken["features"]["x"]["edges"]
    with pytest.raises(prof.ProfileError, match=r"features\['x'\]: missing field 'edges'"):
        prof.profile_from_dict(broken)
    broken = json.loads(json.dumps(doc))
    broken["features"]["y"]["counts"] = [1, 2]
    with pytest.raises(prof.ProfileError, match="k counts"):
        prof.profile_from_dict(broken)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(prof.ProfileError, match="not valid JSON"):
        prof.load_profile(str(tmp_path / "x.json"))
    with pytest.raises(prof.ProfileError, match="cannot be read"):
        prof.load_profile(str(tmp_path / "missing.json"))


def test_config_errors_before_reading(tmp_path):
    path = util.write_parquet(tmp_path / "in.parquet", _data(2))
    out = str(tmp_path / "p.json")
    with pytest.raises(ConfigError, match="'nope' is not in the input schema"):
        profile.plan(
            profile.parse_args(["--input", path, "--output", out, "--feature-columns", "nope"])[0]
        )
    with pytest.raises(ConfigError, match="'vec' cannot be profiled"):
        profile.plan(
            profile.parse_args(["--input", path, "--output", out, "--feature-columns", "vec"])[0]
        )
    with pytest.raises(ConfigError, match="num_bins"):
        profile.parse_args(["--input", path, "--output", out, "--num-bins", "0"])
    with pytest.raises(ConfigError, match="no files match"):
        profile.plan(profile.parse_args(["--input", str(tmp_path / "none*"), "--output", out])[0])


def test_empty_input_fails_with_a_clear_message(tmp_path):
    path = util.write_parquet(tmp_path / "in.parquet", _data(3).slice(0, 0))
    with pytest.raises(Exception, match="no rows"):
        profile.run(["--input", path, "--output", str(tmp_path / "p.json"), "--quiet"])


def test_sketch_merge_is_associative():
    table = _data(5)
    rule = KindRule()
    cands = [
        Candidate("x", "feature", "x", None, "numeric"),
        Candidate("word", "feature", "word", None, "categorical"),
        Candidate("small_int", "feature", "small_int", None, "integer"),
        Candidate("big_int", "feature", "big_int", None, "integer"),
    ]
    fn = SketchFn(cands, rule, 3, ())
    pieces = [table.slice(i, 200) for i in range(0, N, 200)]
    one = fn.create_accumulator()
    for p in pieces:
        one = fn.add_input(one, p)
    parts = []
    for group in (pieces[:3], pieces[3:4], pieces[4:]):
        acc = fn.create_accumulator()
        for p in group:
            acc = fn.add_input(acc, p)
        parts.append(acc)
    merged = fn.merge_accumulators([fn.merge_accumulators(parts[:2]), parts[2]])
    assert one.rows == merged.rows == N
    one, merged = one.columns, merged.columns
    for name in ("x", "word", "small_int", "big_int"):
        a, b = one[name], merged[name]
        assert (a.n, a.nulls, a.min, a.max) == (b.n, b.nulls, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert a.m2 == pytest.approx(b.m2, rel=1e-12)
        assert a.values == b.values
    assert merged["big_int"].values is None  # too many distinct values: numeric
    x = table.column("x").to_numpy(zero_copy_only=False).astype(np.float64)
    x = x[~np.isnan(x)]
    assert merged["x"].mean == pytest.approx(x.mean(), rel=1e-12)
    assert merged["x"].m2 / merged["x"].n == pytest.approx(x.var(), rel=1e-9)


def test_profile_reads_tfrecord(tmp_path):
    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes

    tf = util.import_tensorflow()
    rng = np.random.default_rng(6)
    x = rng.normal(size=600).astype(np.float32)
    words = rng.choice(["u", "v"], size=600)
    path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(600):
            w.write(example_bytes({"id": i, "x": float(x[i]), "w": str(words[i])}))
    doc = profile.run(
        ["--input", str(path), "--output", str(tmp_path / "p.json"), "--id-column", "id", "--quiet"]
    )
    assert set(doc["features"]) == {"x", "w"}
    assert doc["features"]["x"]["mean"] == pytest.approx(
        float(x.astype(np.float64).mean()), rel=1e-6
    )
    x_stats = doc["features"]["x"]
    assert_counts_near_numpy(x_stats["counts"], x.astype(np.float64), x_stats["edges"])
    w = doc["features"]["w"]
    assert dict(zip(w["values"], w["counts"], strict=True)) == dict(
        collections.Counter(words.tolist())
    )


def test_profile_on_two_worker_processes(tmp_path):
    table = _data(7)
    util.write_parquet(tmp_path / "in" / "a.parquet", table.slice(0, 1500), row_group_size=300)
    util.write_parquet(tmp_path / "in" / "b.parquet", table.slice(1500), row_group_size=300)
    doc = profile.run(
        [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "p.json"),
            "--feature-columns",
            "x,word,small_int",
            "--quiet",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    raw = table.column("x").to_numpy(zero_copy_only=False).astype(np.float64)
    values = raw[~np.isnan(raw)]
    x = doc["features"]["x"]
    assert_counts_near_numpy(x["counts"], values, x["edges"])
    assert x["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert x["std"] == pytest.approx(values.std(), rel=1e-9)
    counts = collections.Counter(table.column("small_int").to_pylist())
    small = doc["features"]["small_int"]
    assert dict(zip(small["values"], small["counts"], strict=True)) == {
        str(k): v for k, v in counts.items()
    }
    assert doc["rows"] == N
