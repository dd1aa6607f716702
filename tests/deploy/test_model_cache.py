"""The remote model cache follows the object's content, and the model id is the loaded bytes' hash.

Against the GCS emulator (the ``gcs`` fixture of tests/conftest.py): a model
replaced under the same ``gs://`` name is fetched again, in later runs too.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from keras_batch_score.pipelines.cli import main
from keras_batch_score.transforms.io import model_cache
from tests import deploy_support, util

BUCKET = deploy_support.BUCKET


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_replaced_object_is_fetched_again(gcs, tmp_path):
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    util.mlp(3, seed=1).save(a)
    util.mlp(3, seed=2).save(b)
    cache = str(tmp_path / "cache")
    uri = deploy_support.upload(gcs, str(a), "cache-unit/model.keras")

    first = model_cache.localize(uri, cache_dir=cache)
    assert model_cache.localize(uri, cache_dir=cache) == first  # unchanged: served from cache
    assert _sha(first) == _sha(a)
    deploy_support.upload(gcs, str(b), "cache-unit/model.keras")
    second = model_cache.localize(uri, cache_dir=cache)

    assert _sha(second) == _sha(b) != _sha(a)
    assert model_cache.model_id(uri, second) == f"model.keras@{_sha(b)[:12]}"


def test_file_system_without_checksum_falls_back_to_the_bytes(gcs, tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    def no_checksum(path):
        raise NotImplementedError

    monkeypatch.setattr(FileSystems, "checksum", staticmethod(no_checksum))
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    util.mlp(3, seed=1).save(a)
    util.mlp(3, seed=2).save(b)
    cache = str(tmp_path / "cache")
    uri = deploy_support.upload(gcs, str(a), "cache-nochecksum/model.keras")
    first = model_cache.localize(uri, cache_dir=cache)
    deploy_support.upload(gcs, str(b), "cache-nochecksum/model.keras")
    second = model_cache.localize(uri, cache_dir=cache)
    assert (_sha(first), _sha(second)) == (_sha(a), _sha(b))


def _score(model: str, input_path: str, output: str) -> int:
    return main(
        [
            *("score", "--model", model, "--input", input_path, "--output", output),
            *("--id-column", "id", "--quiet"),
        ]
    )


def test_scoring_after_the_model_is_replaced_uses_the_new_model(gcs, tmp_path, monkeypatch):
    """Upload A, score; replace the object with B, score again: B's predictions and id."""
    # A cache directory shared by every run of this test, as /tmp is between real runs.
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    table = util.feature_table(200, 3, seed=4)
    input_path = util.write_parquet(tmp_path / "in.parquet", table, row_group_size=100)
    x = util.stacked(table, ["f0", "f1", "f2"])
    models = {}
    for name, seed in (("a", 1), ("b", 2)):
        models[name] = util.mlp(3, seed=seed)
        models[name].save(tmp_path / f"{name}.keras")
    uri = f"gs://{BUCKET}/replaced/model.keras"

    got = {}
    for name in ("a", "b"):
        deploy_support.upload(gcs, str(tmp_path / f"{name}.keras"), "replaced/model.keras")
        out = tmp_path / f"out-{name}"
        assert _score(uri, input_path, str(out)) == 0
        got[name] = util.read_predictions(out)

    for name in ("a", "b"):
        expected = util.keras_reference(models[name], x)[:, 0]
        np.testing.assert_allclose(got[name]["prediction"].to_numpy(), expected, atol=1e-6)
        sha = _sha(tmp_path / f"{name}.keras")
        assert set(got[name]["model"].to_pylist()) == {f"model.keras@{sha[:12]}"}
    assert not os.path.exists(tmp_path / "cache" / "model.keras")


def test_bundle_on_gs_is_verified_and_scored(gcs, tmp_path, monkeypatch, capsys, features3):
    """package -> gs:// bundle; score it; a replaced model object is refused by its hash."""
    from keras_batch_score.transforms.model import bundle as bm

    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    table, input_path = features3
    model = util.mlp(3, seed=1)
    model.save(tmp_path / "m.keras")
    bundle = f"gs://{BUCKET}/bundles/churn/"
    args = ["package", "--model", str(tmp_path / "m.keras"), "--output", bundle]
    assert main([*args, "--feature-columns", "f2,f0,f1", "--id-column", "id", "--quiet"]) == 0

    assert _score_bundle(bundle, input_path, str(tmp_path / "out")) == 0
    got = util.read_predictions(tmp_path / "out")
    expected = util.keras_reference(model, util.stacked(table, ["f2", "f0", "f1"]))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)
    manifest = bm.Manifest.from_json(
        gcs.bucket(BUCKET).blob("bundles/churn/bundle.json").download_as_text()
    )
    assert set(got["model"].to_pylist()) == {manifest.version}

    util.mlp(3, seed=2).save(tmp_path / "other.keras")
    deploy_support.upload(gcs, str(tmp_path / "other.keras"), "bundles/churn/m.keras")
    capsys.readouterr()
    assert _score_bundle(bundle, input_path, str(tmp_path / "out2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "m.keras" in err and manifest.model_sha256[:12] in err


def _score_bundle(bundle: str, input_path: str, output: str) -> int:
    return main(["score", "--model", bundle, "--input", input_path, "--output", output, "--quiet"])
