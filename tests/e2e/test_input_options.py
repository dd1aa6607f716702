"""calibrate and profile read the same inputs as score: TFRecord and a preprocessing spec."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import yaml
from scipy.optimize import minimize_scalar

from keras_batch_score.transforms.io.tfrecord_parse import example_bytes
from tests import util

MEAN, STD = 2.0, 3.0


def _write_tfrecord(path, table: pa.Table) -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for row in table.to_pylist():
            w.write(example_bytes(row))
    return str(path)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Raw features f0..f2 = MEAN + STD * z; the model was trained on z; binary labels."""
    root = tmp_path_factory.mktemp("inputs")
    z = util.feature_table(600, 3, seed=3)
    raw = pa.table(
        {
            "id": z["id"],
            **{f"f{i}": pa.array(MEAN + STD * z[f"f{i}"].to_numpy()) for i in range(3)},
        }
    )
    model = util.mlp(3, seed=4)
    probs = util.keras_reference(model, util.stacked(z, ["f0", "f1", "f2"]))[:, 0]
    y = (np.random.default_rng(1).random(len(probs)) < probs).astype(np.int64)
    raw = raw.append_column("y", pa.array(y))
    spec = {
        "features": {
            f"f{i}": {"type": "numeric", "standardize": {"mean": MEAN, "std": STD}}
            for i in range(3)
        }
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    model.save(root / "m.keras")
    return {
        "probs": probs.astype(np.float64),
        "y": y,
        "parquet": util.write_parquet(root / "raw.parquet", raw, row_group_size=200),
        "tfrecord": _write_tfrecord(root / "raw.tfrecord", raw),
        "spec": str(root / "spec.yaml"),
        "model": str(root / "m.keras"),
    }


def _platt_reference(p: np.ndarray, y: np.ndarray) -> float:
    """Temperature of binary probabilities fitted with scipy (NLL of sigmoid(logit(p) / T))."""
    logit = np.log(p) - np.log1p(-p)

    def nll(t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-logit / t)), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    return minimize_scalar(nll, bounds=(0.05, 50), method="bounded", options={"xatol": 1e-9}).x


@pytest.mark.parametrize("source", ["parquet", "tfrecord"])
def test_calibrate_with_a_preprocessing_spec(tmp_path, labelled, source):
    from keras_batch_score.pipelines import calibrate

    result = calibrate.run(
        ["--model", labelled["model"], "--input", labelled[source], "--preprocess",
         labelled["spec"], "--id-column", "id", "--label-column", "y", "--method",
         "temperature", "--output", str(tmp_path / "c.json"), "--quiet"]
    )  # fmt: skip
    assert result["report"]["rows"] == 600
    ref = _platt_reference(labelled["probs"], labelled["y"])
    assert result["params"]["temperature"] == pytest.approx(ref, rel=1e-3)


@pytest.mark.parametrize("source", ["parquet", "tfrecord"])
def test_profile_with_a_model_and_a_preprocessing_spec(tmp_path, labelled, source):
    from keras_batch_score.pipelines import profile

    doc = profile.run(
        ["--model", labelled["model"], "--input", labelled[source], "--preprocess",
         labelled["spec"], "--id-column", "id", "--output", str(tmp_path / "p.json"), "--quiet"]
    )  # fmt: skip
    assert set(doc["features"]) == {"f0", "f1", "f2"}
    pred = doc["predictions"]["prediction"]
    assert pred["count"] == 600
    assert pred["mean"] == pytest.approx(labelled["probs"].mean(), rel=1e-5)
    assert pred["std"] == pytest.approx(labelled["probs"].std(), rel=1e-4)
    # the raw columns are profiled, as the scoring job sees them before preprocessing
    assert doc["features"]["f0"]["mean"] == pytest.approx(MEAN, abs=0.5)


def test_profile_takes_a_tfrecord_feature_spec(tmp_path, labelled):
    from keras_batch_score.pipelines import profile

    spec = {"tfrecord_features": {"id": {"dtype": "int"}, "f0": {"dtype": "float"}}}
    (tmp_path / "tf.yaml").write_text(yaml.safe_dump(spec))
    doc = profile.run(
        ["--input", labelled["tfrecord"], "--tfrecord-features", str(tmp_path / "tf.yaml"),
         "--id-column", "id", "--output", str(tmp_path / "p.json"), "--quiet"]
    )  # fmt: skip
    assert set(doc["features"]) == {"f0"}
