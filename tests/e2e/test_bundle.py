"""Model bundles: `package` writes the feature contract, `score --model BUNDLE/` enforces it.

Also ``--model-sha256`` for a bare model, and the ``feature_columns_source``
that every run reports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines.cli import main
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model import bundle as bm
from tests import util

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A 4-feature model, an input table, and a bundle of both (features f0..f3, id column id)."""
    root = tmp_path_factory.mktemp("bundle")
    model = util.mlp(4, seed=5)
    model_path = root / "model.keras"
    model.save(model_path)
    table = util.feature_table(300, 4, seed=2)
    input_path = util.write_parquet(root / "in.parquet", table, row_group_size=100)
    bundle = root / "bundle"
    code = main(
        [
            *("package", "--model", str(model_path), "--output", str(bundle)),
            *("--feature-columns", ",".join(FEATURES), "--id-column", "id", "--quiet"),
        ]
    )
    assert code == 0
    return model, str(model_path), table, input_path, str(bundle)


def _score(model: str, input_path: str, output, *extra: str) -> int:
    return main(
        [
            *("score", "--model", model, "--input", str(input_path), "--output", str(output)),
            *("--batch-size", "128", "--quiet", *extra),
        ]
    )


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _manifest_of(bundle: str) -> bm.Manifest:
    return bm.Manifest.from_json(Path(bundle, "bundle.json").read_text())


def _copy_tree(src: str, dest) -> str:
    import shutil

    shutil.copytree(src, dest)
    return str(dest)


# --------------------------------------------------------------------------- package


def test_package_writes_the_manifest(job):
    _, model_path, _, _, bundle = job
    manifest = _manifest_of(bundle)
    assert manifest.feature_names == FEATURES
    assert [f.dtype for f in manifest.features] == ["float32"] * 4
    assert manifest.id_columns == ("id",)
    assert manifest.model == "model.keras" and manifest.model_sha256 == _sha(model_path)
    assert manifest.version == f"model.keras@{_sha(model_path)[:12]}"
    assert manifest.files == {"model.keras": _sha(model_path)}
    raw = json.loads(Path(bundle, "bundle.json").read_text())
    assert raw["format"] == "keras-batch-score/bundle@1"


def test_package_copies_spec_files_and_hashes_them(job, tmp_path):
    _, model_path, _, _, _ = job
    names = tmp_path / "names.txt"
    names.write_text("neg\npos\n")
    calibration = tmp_path / "cal.json"
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
    out = tmp_path / "b"
    code = main(
        [
            *("package", "--model", model_path, "--output", str(out), "--quiet"),
            *("--feature-columns", ",".join(FEATURES), "--version", "churn-v7"),
            *("--class-names", str(names), "--calibration", str(calibration)),
        ]
    )
    assert code == 0
    manifest = bm.Manifest.from_json((out / "bundle.json").read_text())
    assert manifest.version == "churn-v7"
    assert manifest.class_names == "class_names.txt" and manifest.calibration == "calibration.json"
    assert (out / "class_names.txt").read_text() == "neg\npos\n"
    for rel in ("class_names.txt", "calibration.json", "model.keras"):
        assert manifest.files[rel] == _sha(out / rel)


def test_package_refuses_columns_that_do_not_fill_the_input(job, tmp_path, capsys):
    _, model_path, _, _, _ = job
    code = main(
        [
            *("package", "--model", model_path, "--output", str(tmp_path / "b")),
            *("--feature-columns", "f0,f1,f2", "--quiet"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "4 values per row" in err
    assert not (tmp_path / "b").exists()


def test_package_needs_a_feature_list_for_a_single_input_model(job, tmp_path, capsys):
    _, model_path, _, _, _ = job
    code = main(["package", "--model", model_path, "--output", str(tmp_path / "b"), "--quiet"])
    assert code == 2 and "--feature-columns" in capsys.readouterr().err


def test_package_refuses_an_output_that_holds_files(job, tmp_path, capsys):
    _, model_path, _, _, _ = job
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    code = main(
        [
            *("package", "--model", model_path, "--output", str(tmp_path / "b")),
            *("--feature-columns", ",".join(FEATURES), "--quiet"),
        ]
    )
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- score a bundle


def test_scoring_a_bundle_uses_its_column_order(job, tmp_path):
    """The file's columns are in another order; the manifest's order feeds the model."""
    model, _, table, _, bundle = job
    shuffled = table.select(["f3", "id", "f1", "f0", "f2"])
    input_path = util.write_parquet(tmp_path / "shuffled.parquet", shuffled, row_group_size=100)
    assert _score(bundle, input_path, tmp_path / "out") == 0  # no --id-column, no features

    got = util.read_predictions(tmp_path / "out")
    expected = util.keras_reference(model, util.stacked(table, FEATURES))[:, 0]
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)
    manifest = _manifest_of(bundle)
    assert set(got["model"].to_pylist()) == {manifest.version}
    summary = util.read_summary(tmp_path / "out")
    assert summary["feature_columns_source"] == "bundle"
    assert summary["feature_columns"] == FEATURES
    assert summary["model"] == manifest.version


def test_the_version_label_is_the_model_column(job, tmp_path):
    _, model_path, _, input_path, _ = job
    bundle = tmp_path / "labelled"
    assert (
        main(
            [
                *("package", "--model", model_path, "--output", str(bundle), "--quiet"),
                *("--feature-columns", ",".join(FEATURES), "--id-column", "id"),
                *("--version", "churn-2026-11"),
            ]
        )
        == 0
    )
    assert _score(str(bundle), input_path, tmp_path / "out") == 0
    got = util.read_predictions(tmp_path / "out")
    assert set(got["model"].to_pylist()) == {"churn-2026-11"}


def test_tampered_model_file_is_refused(job, tmp_path, capsys):
    _, _, _, input_path, bundle = job
    copy = _copy_tree(bundle, tmp_path / "tampered")
    other = util.mlp(4, seed=9)
    other.save(os.path.join(copy, "model.keras"))  # same name, other bytes
    code = _score(copy, input_path, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "model.keras" in err
    assert not (tmp_path / "out").exists()


def test_tampered_spec_file_is_refused(job, tmp_path, capsys):
    _, model_path, _, input_path, _ = job
    names = tmp_path / "names.txt"
    names.write_text("neg\npos\n")
    bundle = tmp_path / "b"
    assert (
        main(
            [
                *("package", "--model", model_path, "--output", str(bundle), "--quiet"),
                *("--feature-columns", ",".join(FEATURES), "--class-names", str(names)),
            ]
        )
        == 0
    )
    (bundle / "class_names.txt").write_text("pos\nneg\n")
    code = _score(str(bundle), input_path, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "class_names.txt" in err and "sha256" in err


def test_input_missing_a_bundle_feature_is_refused(job, tmp_path, capsys):
    _, _, table, _, bundle = job
    input_path = util.write_parquet(tmp_path / "in.parquet", table.drop(["f2"]))
    code = _score(bundle, input_path, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "'f2'" in err


def test_input_with_an_incompatible_dtype_is_refused(job, tmp_path, capsys):
    _, _, table, _, bundle = job
    i = table.schema.get_field_index("f1")
    as_text = table.set_column(i, "f1", table.column("f1").cast(pa.string()))
    input_path = util.write_parquet(tmp_path / "in.parquet", as_text)
    code = _score(bundle, input_path, tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "'f1'" in err and "float32" in err


def test_wider_float_column_of_the_same_kind_is_accepted(job, tmp_path):
    model, _, table, _, bundle = job
    i = table.schema.get_field_index("f0")
    wide = table.set_column(i, "f0", table.column("f0").cast(pa.float64()))
    input_path = util.write_parquet(tmp_path / "in.parquet", wide)
    assert _score(bundle, input_path, tmp_path / "out") == 0
    expected = util.keras_reference(model, util.stacked(table, FEATURES))[:, 0]
    got = util.read_predictions(tmp_path / "out")
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)


def test_flags_override_the_bundle(job, tmp_path, capsys):
    """--feature-columns wins over the manifest's list (and the console says so)."""
    model, _, table, input_path, bundle = job
    order = ["f3", "f2", "f1", "f0"]
    code = main(
        [
            *("score", "--model", bundle, "--input", input_path, "--output", str(tmp_path / "o")),
            *("--feature-columns", ",".join(order)),
        ]
    )
    assert code == 0
    assert "overrides the bundle's feature columns" in capsys.readouterr().out
    expected = util.keras_reference(model, util.stacked(table, order))[:, 0]
    got = util.read_predictions(tmp_path / "o")
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)
    assert util.read_summary(tmp_path / "o")["feature_columns_source"] == "flag"


def test_saved_model_bundle(tmp_path, features3):
    """A SavedModel directory is bundled file by file; every file's hash is checked."""
    model = util.mlp(3, seed=8)
    model.export(str(tmp_path / "sm"))
    table, input_path = features3
    bundle = tmp_path / "b"
    args = ["package", "--model", str(tmp_path / "sm"), "--output", str(bundle), "--quiet"]
    assert main([*args, "--feature-columns", "f1,f2,f0", "--id-column", "id"]) == 0
    manifest = _manifest_of(str(bundle))
    assert "sm/saved_model.pb" in manifest.files and manifest.model == "sm"
    assert _score(str(bundle), input_path, tmp_path / "out") == 0
    expected = util.keras_reference(model, util.stacked(table, ["f1", "f2", "f0"]))[:, 0]
    got = util.read_predictions(tmp_path / "out")
    np.testing.assert_allclose(got["prediction"].to_numpy(), expected, atol=1e-6)

    (bundle / "sm" / "fingerprint.pb").write_bytes(b"changed")
    assert _score(str(bundle), input_path, tmp_path / "out2") == 2


def test_preprocess_bundle_is_self_contained(tmp_path):
    """The spec is copied with its vocab_file inlined; the features come from the spec."""
    model = util.mlp(3, seed=6)
    model.save(tmp_path / "m.keras")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "cities.txt").write_text("paris\nrome\n")
    (tmp_path / "specs" / "spec.yaml").write_text(
        "features:\n"
        "  f0: {type: numeric, standardize: {mean: 0.5, std: 2.0}}\n"
        "  f1: {type: numeric}\n"
        "  city: {type: categorical, vocab_file: cities.txt, num_oov: 1}\n"
    )
    bundle = tmp_path / "b"
    args = ["package", "--model", str(tmp_path / "m.keras"), "--output", str(bundle), "--quiet"]
    spec = str(tmp_path / "specs" / "spec.yaml")
    assert main([*args, "--preprocess", spec, "--id-column", "id"]) == 0
    manifest = _manifest_of(str(bundle))
    assert manifest.feature_names == ["f0", "f1", "city"] and manifest.preprocess
    assert "vocab_file" not in (bundle / "preprocess.yaml").read_text()

    rng = np.random.default_rng(0)
    cities = rng.choice(["paris", "rome", "oslo"], 100)
    table = pa.table(
        {
            "city": pa.array(cities),
            "f1": pa.array(rng.normal(size=100).astype(np.float32)),
            "f0": pa.array(rng.normal(size=100).astype(np.float32)),
            "id": pa.array(np.arange(100)),
        }
    )
    input_path = util.write_parquet(tmp_path / "in.parquet", table)
    assert _score(str(bundle), input_path, tmp_path / "out") == 0
    index = np.select([cities == "paris", cities == "rome"], [1, 2], 0)
    x = np.stack(
        [(table["f0"].to_numpy() - 0.5) / 2.0, table["f1"].to_numpy(), index], axis=1
    ).astype(np.float32)
    got = util.read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(100))
    np.testing.assert_allclose(
        got["prediction"].to_numpy(), util.keras_reference(model, x)[:, 0], atol=1e-6
    )
    summary = util.read_summary(tmp_path / "out")
    assert summary["feature_columns_source"] == "bundle"


# --------------------------------------------------------------------------- --model-sha256


def test_model_sha256_mismatch_is_refused(job, tmp_path, capsys):
    _, model_path, _, input_path, _ = job
    wrong = "0" * 64
    code = _score(model_path, input_path, tmp_path / "out", "--model-sha256", wrong)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:")
    assert "model.keras" in err and _sha(model_path)[:12] in err and "000000000000" in err


def test_model_sha256_match_runs(job, tmp_path):
    _, model_path, _, input_path, _ = job
    pin = ("--model-sha256", _sha(model_path).upper(), "--id-column", "id")
    code = _score(model_path, input_path, tmp_path / "out", *pin)
    assert code == 0
    got = util.read_predictions(tmp_path / "out", sort_by=None)
    assert set(got["model"].to_pylist()) == {f"model.keras@{_sha(model_path)[:12]}"}


def test_model_sha256_must_be_a_hex_digest(job, tmp_path, capsys):
    _, model_path, _, input_path, _ = job
    assert _score(model_path, input_path, tmp_path / "out", "--model-sha256", "abc") == 2
    assert "64 hexadecimal" in capsys.readouterr().err


# --------------------------------------------------------------------------- feature source


def test_file_order_is_said_out_loud(job, tmp_path, capsys):
    _, model_path, _, input_path, _ = job
    code = main(
        [
            *("score", "--model", model_path, "--input", input_path),
            *("--output", str(tmp_path / "out"), "--id-column", "id"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "features (file_order, in model order): f0, f1, f2, f3" in out
    assert "warning: no feature list was declared" in out
    summary = util.read_summary(tmp_path / "out")
    assert summary["feature_columns_source"] == "file_order"
    assert summary["feature_columns"] == FEATURES


def test_flag_source(job, tmp_path):
    _, model_path, _, input_path, _ = job
    extra = ("--id-column", "id", "--feature-columns", ",".join(FEATURES))
    assert _score(model_path, input_path, tmp_path / "out", *extra) == 0
    assert util.read_summary(tmp_path / "out")["feature_columns_source"] == "flag"


# --------------------------------------------------------------------------- manifest (pure)


def _manifest(**changes) -> bm.Manifest:
    sha = "a" * 64
    base = dict(
        version="m@aaa",
        model="model.keras",
        model_sha256=sha,
        features=(bm.Feature("a", "float32", "x"), bm.Feature("b", "float32", "x")),
        files={"model.keras": sha},
        id_columns=("id",),
    )
    return bm.Manifest(**{**base, **changes})


def test_manifest_round_trips():
    m = _manifest(
        calibration="calibration.json",
        files={"model.keras": "a" * 64, "calibration.json": "b" * 64},
    )
    assert bm.Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize("bad", ["../model.keras", "/etc/passwd", "gs://x/y"])
def test_manifest_refuses_paths_outside_the_bundle(bad):
    text = _manifest().to_json().replace('"path": "model.keras"', f'"path": "{bad}"')
    with pytest.raises(ConfigError, match="inside the bundle"):
        bm.Manifest.from_json(text)


def test_check_schema_kinds():
    m = _manifest(features=(bm.Feature("a", "float32", "x"), bm.Feature("n", "int64", "y")))
    ok = pa.schema([("id", pa.int64()), ("a", pa.float64()), ("n", pa.int32())])
    bm.check_schema(m, ok, "b/")
    with pytest.raises(ConfigError, match="'n'"):
        bm.check_schema(
            m, pa.schema([("id", pa.int64()), ("a", pa.float32()), ("n", pa.float32())]), "b/"
        )
    with pytest.raises(ConfigError, match="'id'"):
        bm.check_schema(m, pa.schema([("a", pa.float32()), ("n", pa.int8())]), "b/")


def test_feature_source_names_where_the_list_came_from():
    from types import SimpleNamespace

    from keras_batch_score.pipelines.bundle_options import BundleUse, feature_source
    from keras_batch_score.transforms.model.tensors import TensorInfo

    one = [TensorInfo("x", (3,), "float32")]
    two = [TensorInfo("a", (), "float32"), TensorInfo("b", (), "float32")]

    def config(**kw):
        return SimpleNamespace(**{"preprocess": None, "feature_columns": None, **kw})

    use = BundleUse("b/", _manifest())
    assert feature_source(config(feature_columns=["a"]), use, one, ["a"]) == "bundle"
    overridden = BundleUse("b/", _manifest(), ("feature_columns",))
    assert feature_source(config(feature_columns=["a"]), overridden, one, ["a"]) == "flag"
    assert feature_source(config(preprocess="s.yaml"), None, one, ["a"]) == "preprocess"
    assert feature_source(config(), None, two, ["a", "b"]) == "model_input_names"
    assert feature_source(config(), None, one, ["x"]) == "model_input_names"
    assert feature_source(config(), None, one, ["f0", "f1", "f2"]) == "file_order"
