"""gs:// end to end against a real GCS emulator (gcp-storage-emulator on a free localhost port).

Model, input, config, reference profile, calibration file and every output
live in the emulated bucket; the jobs reach them only through Beam
``FileSystems`` and the model cache.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keras_batch_score.pipelines import profile, score
from keras_batch_score.transforms.io import model_cache
from tests import deploy_support as ds
from tests import util

BUCKET = ds.BUCKET


def _download_predictions(client, prefix: str) -> pa.Table:
    """Every ``predictions-*.parquet`` object directly under ``prefix``, read back."""
    names = [b.name for b in client.list_blobs(BUCKET, prefix=f"{prefix}/predictions-")]
    assert names and all(n.endswith(".parquet") for n in names), names
    bucket = client.bucket(BUCKET)
    return pa.concat_tables(
        pq.read_table(io.BytesIO(bucket.blob(n).download_as_bytes())) for n in names
    )


def test_score_with_gs_model_input_config_and_output(gcs, tmp_path):
    model, _, table, reference = ds.make_job(tmp_path / "local")
    half = table.num_rows // 2
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        local = tmp_path / f"part-{i}.parquet"
        pq.write_table(part, local, row_group_size=100)
        ds.upload(gcs, str(local), f"features/dt=2026-01-02/part-{i}.parquet")
    model_uri = ds.upload(gcs, model, "models/v1/model.keras")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"model: {model_uri}\n"
        # A "directory" without the trailing slash, as the Airflow DAG writes it.
        f"input: gs://{BUCKET}/features/dt=2026-01-02\n"
        f"output: gs://{BUCKET}/scores/dt=2026-01-02\n"
        "id_columns: [id]\n"
    )
    config_uri = ds.upload(gcs, str(config), "configs/job.yaml")

    summary = score.run(["--config", config_uri, "--batch-size=128"])

    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (600, 600, 0)
    assert summary["input_files"] == 2
    names = sorted(b.name for b in gcs.list_blobs(BUCKET, prefix="scores/dt=2026-01-02/"))
    assert "scores/dt=2026-01-02/run_summary.json" in names
    assert not any("_staging" in n for n in names), names  # staging was promoted and removed
    predictions = _download_predictions(gcs, "scores/dt=2026-01-02")
    ds.assert_predictions(predictions, table, reference)


def test_saved_model_directory_is_copied_to_the_local_cache(gcs, tmp_path):
    """A SavedModel directory on gs:// becomes one local copy with the same files."""
    tf = util.import_tensorflow()
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.__call__ = tf.function(
        lambda x: {"y": x * module.scale},
        input_signature=[tf.TensorSpec([None, 1], tf.float32)],
    )
    local = tmp_path / "saved"
    tf.saved_model.save(module, str(local), signatures={"serving_default": module.__call__})
    files = sorted(
        os.path.relpath(os.path.join(root, f), local)
        for root, _, names in os.walk(local)
        for f in names
    )
    for rel in files:
        ds.upload(gcs, str(local / rel), f"models/saved/{rel}")

    cache = tmp_path / "cache"
    copy = model_cache.localize(f"gs://{BUCKET}/models/saved", cache_dir=str(cache))
    again = model_cache.localize(f"gs://{BUCKET}/models/saved", cache_dir=str(cache))

    assert copy == again and copy.startswith(str(cache))
    copied = sorted(
        os.path.relpath(os.path.join(root, f), copy)
        for root, _, names in os.walk(copy)
        for f in names
    )
    assert copied == files
    for rel in files:
        assert (local / rel).read_bytes() == Path(copy, rel).read_bytes()
    loaded = tf.saved_model.load(copy)
    y = loaded.signatures["serving_default"](tf.constant([[1.5]], tf.float32))["y"]
    assert float(y.numpy()[0, 0]) == 3.0


def test_profile_calibration_and_drift_files_on_gs(gcs, tmp_path):
    """Profile and calibration read from gs://; drift.json written there and read by the gate."""
    model, input_path, table, _ = ds.make_job(tmp_path / "local")
    model_uri = ds.upload(gcs, model, "models/v2/model.keras")
    reference_uri = ds.upload(gcs, input_path, "reference/part-0.parquet")
    profile.run(
        [
            "--input",
            reference_uri,
            "--output",
            f"gs://{BUCKET}/profiles/v2.json",
            "--model",
            model_uri,
            "--id-column",
            "id",
        ]
    )
    shifted = table  # every feature moves by 3 std: dataset drift
    for name in ds.FEATURES:
        i = shifted.schema.get_field_index(name)
        shifted = shifted.set_column(i, name, pa.array(shifted.column(name).to_numpy() + 3.0))
    local = tmp_path / "shifted.parquet"
    pq.write_table(shifted, local)
    current_uri = ds.upload(gcs, str(local), "current/part-0.parquet")
    calibration = tmp_path / "calibration.json"
    calibration.write_text(
        json.dumps(
            {
                "format": "keras-batch-score/calibration@1",
                "method": "platt",
                "input_kind": "probabilities",
                "num_classes": 1,
                "params": {"a": 1.5, "b": -0.25},
            }
        )
    )
    calibration_uri = ds.upload(gcs, str(calibration), "calibration/v2.json")
    output = f"gs://{BUCKET}/scores-drift"

    summary = score.run(
        [
            *ds.job_flags(model_uri, current_uri, output),
            "--reference-profile",
            f"gs://{BUCKET}/profiles/v2.json",
            "--calibration",
            calibration_uri,
        ]
    )

    assert summary["rows_scored"] == 600
    predictions = _download_predictions(gcs, "scores-drift").sort_by("id")
    keras_model_ = util.keras.models.load_model(model)
    p = np.clip(
        util.keras_reference(keras_model_, util.stacked(shifted, ds.FEATURES)).reshape(-1),
        1e-12,
        1 - 1e-12,
    ).astype(np.float64)
    expected = 1.0 / (1.0 + np.exp(-(1.5 * np.log(p / (1 - p)) - 0.25)))
    np.testing.assert_allclose(
        predictions.column("prediction").to_numpy(), expected, rtol=1e-4, atol=1e-5
    )
    drift = json.loads(gcs.bucket(BUCKET).blob("scores-drift/drift.json").download_as_bytes())
    assert drift["drift_detected"] is True
    assert sorted(drift["dataset"]["drifted_features"]) == ds.FEATURES

    spec = importlib.util.spec_from_file_location(
        "score_gate", ds.REPO / "templates" / "airflow" / "score_gate.py"
    )
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)

    class _Hook:  # GCSHook's exists/download, on the same client library
        def exists(self, bucket_name: str, object_name: str) -> bool:
            return gcs.bucket(bucket_name).blob(object_name).exists()

        def download(self, bucket_name: str, object_name: str) -> bytes:
            return gcs.bucket(bucket_name).blob(object_name).download_as_bytes()

    with pytest.raises(gate.GateFailure, match="dataset drift detected"):
        gate.check_run(output, read=gate.gcs_reader(_Hook))


def test_tfrecord_input_on_gs_plain_and_gzip(gcs, tmp_path):
    """TFRecord files matched on gs:// (one GZIP), each read whole by the batched reader."""
    import tensorflow as tf

    model, _, table, reference = ds.make_job(tmp_path / "local")
    half = table.num_rows // 2
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        suffix = ".tfrecord.gz" if i else ".tfrecord"
        local = tmp_path / f"part-{i}{suffix}"
        with tf.io.TFRecordWriter(str(local), options="GZIP" if i else None) as writer:
            for row in part.to_pylist():
                feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["id"]]))}
                for name in ds.FEATURES:
                    feature[name] = tf.train.Feature(
                        float_list=tf.train.FloatList(value=[row[name]])
                    )
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        ds.upload(gcs, str(local), f"records/part-{i}{suffix}")

    out = tmp_path / "out"
    summary = score.run(
        ["--model", model, "--input", f"gs://{BUCKET}/records/part-*", "--output", str(out),
         "--input-format", "tfrecord", "--id-column", "id", "--batch-size=64",
         "--feature-columns", ",".join(ds.FEATURES)]
    )  # fmt: skip

    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (
        table.num_rows,
        table.num_rows,
        0,
    )
    ds.assert_predictions(
        pq.read_table(sorted(out.glob("predictions-*.parquet"))), table, reference
    )
