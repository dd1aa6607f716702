"""The remote model cache follows the object's content, and the model id is the loaded bytes' hash.

Against the GCS emulator (the ``gcs`` fixture of tests/test_gcs.py): a model
replaced under the same ``gs://`` name is fetched again, in later runs too.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from pipelines.cli import main
from tests import test_gcs, util
from transforms import model_cache

gcs = test_gcs.gcs  # the emulator fixture (module scope here)
BUCKET = test_gcs.BUCKET


def _upload(client, local: str, name: str) -> str:
    client.bucket(BUCKET).blob(name).upload_from_filename(local)
    return f"gs://{BUCKET}/{name}"


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_replaced_object_is_fetched_again(gcs, tmp_path):
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    util.mlp(3, seed=1).save(a)
    util.mlp(3, seed=2).save(b)
    cache = str(tmp_path / "cache")
    uri = _upload(gcs, str(a), "cache-unit/model.keras")

    first = model_cache.localize(uri, cache_dir=cache)
    assert model_cache.localize(uri, cache_dir=cache) == first  # unchanged: served from cache
    assert _sha(first) == _sha(a)
    _upload(gcs, str(b), "cache-unit/model.keras")
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
    uri = _upload(gcs, str(a), "cache-nochecksum/model.keras")
    first = model_cache.localize(uri, cache_dir=cache)
    _upload(gcs, str(b), "cache-nochecksum/model.keras")
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
        _upload(gcs, str(tmp_path / f"{name}.keras"), "replaced/model.keras")
        out = tmp_path / f"out-{name}"
        assert _score(uri, input_path, str(out)) == 0
        got[name] = util.read_predictions(out)

    for name in ("a", "b"):
        expected = util.keras_reference(models[name], x)[:, 0]
        np.testing.assert_allclose(got[name]["prediction"].to_numpy(), expected, atol=1e-6)
        sha = _sha(tmp_path / f"{name}.keras")
        assert set(got[name]["model"].to_pylist()) == {f"model.keras@{sha[:12]}"}
    assert not os.path.exists(tmp_path / "cache" / "model.keras")
