"""fit-preprocess: statistics equal numpy's / Counter's on the same data, through the Beam pipeline."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from keras_batch_score.transforms.preprocess.fit import (
    Moments,
    batch_stats,
    fitted_spec,
    merge_stats,
)
from keras_batch_score.transforms.preprocess.spec import load_spec

RNG = np.random.default_rng(3)

SPEC = {
    "features": {
        "age": {"type": "numeric", "fill_missing": "mean", "standardize": True},
        "income": {"type": "numeric", "log1p": True, "clip": [None, 10.5], "min_max": True},
        "emb": {"type": "numeric", "shape": [2], "standardize": True},
        "city": {"type": "categorical", "output": "one_hot", "max_tokens": 3},
        "code": {"type": "categorical"},
        "review": {"type": "text", "max_len": 4, "min_frequency": 2},
    }
}


def _data(n: int) -> pa.Table:
    age = RNG.normal(40, 12, n)
    age_list = [None if i % 9 == 0 else float(v) for i, v in enumerate(age)]
    return pa.table(
        {
            "age": pa.array(age_list),
            "income": pa.array(RNG.lognormal(9, 2, n)),
            "emb": pa.array(list(RNG.normal(size=(n, 2))), pa.list_(pa.float64(), 2)),
            "city": pa.array(
                RNG.choice(["a", "b", "c", "d", "e"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05]).tolist()
            ),
            "code": pa.array(RNG.choice([7, 11, 13], n).astype(np.int64)),
            "review": pa.array(
                [" ".join(RNG.choice(["Good", "bad!", "Plot", "rare", "x"], 3)) for _ in range(n)]
            ),
        }
    )


def _expected(table: pa.Table) -> dict:
    age = np.array([v for v in table["age"].to_pylist() if v is not None])
    inc = np.minimum(np.log1p(np.asarray(table["income"].to_pylist())), 10.5)
    emb = np.asarray(table["emb"].to_pylist()).ravel()
    cities = Counter(table["city"].to_pylist())
    tokens = Counter(
        t
        for text in table["review"].to_pylist()
        for t in re.sub(r'[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\']', "", text.lower()).split()
    )
    by_freq = lambda c: [k for k, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]  # noqa: E731
    return {
        "age_mean": age.mean(),
        "age_std": age.std(),
        "inc": (inc.min(), inc.max()),
        "emb": (emb.mean(), emb.std()),
        "city": by_freq(cities)[:3],
        "code": by_freq(Counter(table["code"].to_pylist())),
        "review": [t for t in by_freq(tokens) if tokens[t] >= 2],
    }


def _check(fitted: dict, exp: dict) -> None:
    f = fitted["features"]
    assert f["age"]["fill_missing"]["mean"] == pytest.approx(exp["age_mean"], rel=1e-12)
    assert f["age"]["standardize"]["mean"] == pytest.approx(exp["age_mean"], rel=1e-12)
    assert f["age"]["standardize"]["std"] == pytest.approx(exp["age_std"], rel=1e-10)
    assert (f["income"]["min_max"]["min"], f["income"]["min_max"]["max"]) == pytest.approx(
        exp["inc"]
    )
    assert f["emb"]["standardize"]["mean"] == pytest.approx(exp["emb"][0], abs=1e-12)
    assert f["emb"]["standardize"]["std"] == pytest.approx(exp["emb"][1], rel=1e-10)
    assert f["city"]["vocab"] == exp["city"]
    assert f["code"]["vocab"] == exp["code"]
    assert f["review"]["vocab"] == exp["review"]


def test_moments_merge_equals_numpy():
    x = RNG.normal(5, 3, 1000)
    parts = [Moments.of(p) for p in np.array_split(x, 7)]
    merged = Moments()
    for p in parts:
        merged = merged.merge(p)
    assert merged.count == 1000
    assert merged.mean == pytest.approx(x.mean(), rel=1e-12)
    assert merged.std == pytest.approx(x.std(), rel=1e-10)
    assert (merged.min, merged.max) == (x.min(), x.max())


def test_fitted_spec_in_process_matches_numpy():
    table = _data(600)
    spec = load_spec(SPEC)
    acc: dict = {}
    for piece in (table.slice(0, 250), table.slice(250, 100), table.slice(350)):
        merge_stats(acc, batch_stats(spec, piece))
    fitted = fitted_spec(spec, acc)
    _check(fitted, _expected(table))
    assert load_spec(fitted).needs_fit() == {}


def test_fit_preprocess_pipeline_then_score(tmp_path):
    from keras_batch_score.pipelines import fit_preprocess

    table = _data(900)
    pq.write_table(table.slice(0, 500), tmp_path / "a.parquet", row_group_size=200)
    pq.write_table(table.slice(500), tmp_path / "b.parquet", row_group_size=200)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "fitted.yaml"
    fitted = fit_preprocess.run(
        ["--input", str(tmp_path / "*.parquet"), "--spec", str(tmp_path / "spec.yaml"),
         "--output", str(out)]
    )  # fmt: skip
    _check(fitted, _expected(table))
    assert yaml.safe_load(out.read_text()) == fitted


def test_cli_lists_fit_preprocess(capsys):
    from keras_batch_score.pipelines.cli import main

    assert main([]) == 2
    assert "fit-preprocess" in capsys.readouterr().out


def test_fit_preprocess_on_tfrecord(tmp_path):
    import tensorflow as tf

    from keras_batch_score.pipelines import fit_preprocess
    from keras_batch_score.transforms.io.tfrecord_parse import example_bytes

    x = RNG.normal(3, 2, 300)
    words = RNG.choice(["up", "down", "left"], 300, p=[0.5, 0.3, 0.2])
    with tf.io.TFRecordWriter(str(tmp_path / "t.tfrecord.gz"), options="GZIP") as w:
        for v, word in zip(x, words, strict=True):
            w.write(example_bytes({"x": float(v), "w": str(word)}))
    spec = {"features": {"x": {"type": "numeric", "standardize": True},
                         "w": {"type": "categorical"}}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    fitted = fit_preprocess.run(
        ["--input", str(tmp_path / "t.tfrecord.gz"), "--spec", str(tmp_path / "spec.yaml"),
         "--output", str(tmp_path / "fitted.yaml")]
    )  # fmt: skip
    x32 = x.astype(np.float32).astype(np.float64)  # TFRecord floats are float32
    assert fitted["features"]["x"]["standardize"]["mean"] == pytest.approx(x32.mean(), rel=1e-9)
    assert fitted["features"]["x"]["standardize"]["std"] == pytest.approx(x32.std(), rel=1e-9)
    counts = Counter(words.tolist())
    assert fitted["features"]["w"]["vocab"] == sorted(counts, key=lambda k: (-counts[k], k))
