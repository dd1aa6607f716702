"""``--backend keras|xla|onnxruntime|litert`` and ``--precision float16``.

Every backend's predictions are compared with ``model(x, training=False)``
(computed here by Keras, not by the code under test) on a subset of the model
zoo: functional MLP, Sequential, multi-input/multi-output (dict), LSTM,
Embedding, an adapted Normalization layer, and a SavedModel export.
"""

from __future__ import annotations

import gc
import os
import re

import numpy as np
import pytest

from keras_batch_score.pipelines.cli import main as cli_main
from keras_batch_score.pipelines.config import add_score_arguments, resolve_config
from keras_batch_score.transforms.core.errors import ConfigError, ModelError
from keras_batch_score.transforms.model import backends
from keras_batch_score.transforms.model.backends import litert as litert_backend
from keras_batch_score.transforms.model.backends import onnx as onnx_backend
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.spec import ModelSpec
from tests import util
from tests.e2e import test_model_zoo as zoo

keras = util.keras
tf = util.import_tensorflow()

# Stated tolerances (docs/models.md, Backends): max abs difference from Keras, float32 models.
TOLERANCE = {"xla": 1e-5, "onnxruntime": 1e-5, "litert": 1e-5}
KINDS = [
    "functional",
    "sequential_input",
    "multi_io",
    "lstm_tf",
    "embedding",
    "normalization",
    "string_lookup",
]
# (kind, backend) pairs the converter refuses; tested below for a message naming the layer.
REFUSED = {("lstm_tf", "litert"), ("string_lookup", "onnxruntime"), ("string_lookup", "xla")}
N = 120


def _needs(backend: str) -> None:
    for module in backends.missing_modules(backend):
        pytest.skip(f"{backend} needs {module} (pip install 'keras-batch-score[...]')")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """kind -> (saved .keras path, Keras model, reference inputs as named features)."""
    root = tmp_path_factory.mktemp("backends")
    previous = os.environ.get(backends_cache_env())
    os.environ[backends_cache_env()] = str(root / "cache")  # converted files stay in tmp
    table = zoo._zoo_table().slice(0, N)
    out = {}
    for kind in KINDS:
        keras.utils.set_random_seed(sum(map(ord, kind)))
        build, inputs, _ = zoo.KINDS[kind]
        model = build(table)
        x = inputs(table)
        path = str(root / f"{kind}.keras")
        model.save(path)
        out[kind] = (path, model, x)
    yield out
    if previous is None:
        os.environ.pop(backends_cache_env(), None)
    else:
        os.environ[backends_cache_env()] = previous


def backends_cache_env() -> str:
    from keras_batch_score.transforms.io.model_cache import CACHE_ENV

    return CACHE_ENV


def _features(loaded, x) -> dict[str, np.ndarray]:
    return dict(x) if isinstance(x, dict) else {loaded.inputs[0].name: x}


def _assert_close(loaded, model, x, atol: float) -> float:
    ref = util.keras_reference(model, x)  # independent: Keras eager call
    got = loaded.predict(_features(loaded, x))
    if isinstance(ref, dict):
        pairs = [(got[k], v) for k, v in ref.items()]
    else:
        pairs = [(got[loaded.outputs[0].name], ref)]
    worst = 0.0
    for values, want in pairs:
        want = np.asarray(want).reshape(values.shape)
        np.testing.assert_allclose(values, want, atol=atol, rtol=0)
        worst = max(worst, float(np.abs(values - want).max()))
    return worst


@pytest.mark.parametrize("backend", ["xla", "onnxruntime", "litert"])
@pytest.mark.parametrize("kind", KINDS)
def test_backend_matches_keras_within_tolerance(saved, kind, backend):
    _needs(backend)
    if (kind, backend) in REFUSED:
        pytest.skip("refused by the converter: see the refusal tests")
    path, model, x = saved[kind]
    loaded = load(ModelSpec(path, backend=backend))
    assert loaded.format.endswith(f"+{backend}" if backend != "xla" else "+xla")
    _assert_close(loaded, model, x, TOLERANCE[backend])
    if backend != "xla":
        assert loaded.converted_file and os.path.exists(loaded.converted_file)


@pytest.mark.parametrize("backend", ["xla", "onnxruntime", "litert"])
def test_backend_runs_a_savedmodel_export(saved, tmp_path, backend):
    _needs(backend)
    _, model, x = saved["multi_io"]
    model.export(str(tmp_path / "sm"), verbose=False)
    loaded = load(ModelSpec(str(tmp_path / "sm"), backend=backend))
    assert loaded.format.startswith("saved_model[serving_default]+")
    _assert_close(loaded, model, x, TOLERANCE[backend])


def _layer_name(model, kind: str) -> str:
    """The name of ``model``'s first ``kind`` layer (Keras numbers auto names per process)."""
    return next(lay.name for lay in model.layers if type(lay).__name__ == kind)


def test_litert_refuses_lstm_and_names_the_layer(saved):
    _needs("litert")
    path, model, _ = saved["lstm_tf"]
    layer = _layer_name(model, "LSTM")
    with pytest.raises(
        ModelError, match=rf"--backend litert cannot convert layer '{re.escape(layer)}' \(LSTM\)"
    ):
        load(ModelSpec(path, backend="litert"))


def test_onnxruntime_refuses_string_lookup_and_names_the_layer(saved):
    _needs("onnxruntime")
    path, model, _ = saved["string_lookup"]
    layer = _layer_name(model, "StringLookup")
    with pytest.raises(
        ModelError,
        match=rf"--backend onnxruntime cannot convert layer '{layer}' \(StringLookup\).*"
        r"score it with --backend keras",
    ):
        load(ModelSpec(path, backend="onnxruntime"))


def test_xla_refuses_string_inputs_instead_of_aborting(saved):
    path, *_ = saved["string_lookup"]
    with pytest.raises(ModelError, match=r"--backend xla cannot compile string inputs \['word'\]"):
        load(ModelSpec(path, backend="xla"))


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_converted_file_is_cached_by_content_hash_and_reused(saved, tmp_path, backend, monkeypatch):
    _needs(backend)
    monkeypatch.setenv(backends_cache_env(), str(tmp_path / "cache"))
    _, model, x = saved["functional"]
    copy = str(tmp_path / "m.keras")
    model.save(copy)
    first = load(ModelSpec(copy, backend=backend))
    converted = first.converted_file
    assert converted.startswith(str(tmp_path / "cache"))
    mtime = os.stat(converted).st_mtime_ns
    del first
    gc.collect()  # the process-wide model share holds weak references only

    # A second load (as another worker process would do) must not convert again.
    module = onnx_backend if backend == "onnxruntime" else litert_backend

    def refuse(*args, **kwargs):
        raise AssertionError("converted again instead of reusing the cached file")

    monkeypatch.setattr(module, "convert", refuse)
    second = load(ModelSpec(copy, backend=backend))
    assert second.converted_file == converted
    assert os.stat(converted).st_mtime_ns == mtime
    _assert_close(second, model, x, TOLERANCE[backend])

    # Other weights, same path: another content hash, another converted file.
    monkeypatch.undo()
    monkeypatch.setenv(backends_cache_env(), str(tmp_path / "cache"))
    other = keras.models.clone_model(model)
    other.set_weights([w * 0.5 for w in model.get_weights()])
    other.save(copy)
    third = load(ModelSpec(copy, backend=backend))
    assert third.converted_file != converted
    _assert_close(third, other, x, TOLERANCE[backend])


def test_health_check_runs_on_the_converted_backend(saved):
    _needs("onnxruntime")
    path, model, x = saved["functional"]
    loaded = load(ModelSpec(path, backend="onnxruntime"))
    health_check(loaded, {"x": 4})  # smoke prediction through ONNX Runtime: raises on failure
    _assert_close(loaded, model, x, 1e-5)


def test_float16_is_refused_without_a_gpu(saved):
    path, model, x = saved["functional"]
    if tf.config.list_physical_devices("GPU"):
        loaded = load(ModelSpec(path, precision="float16"))
        assert loaded.format == "keras+float16"
        _assert_close(loaded, model, x, 1e-2)
        return
    with pytest.raises(ModelError, match=r"--precision float16 needs a GPU"):
        load(ModelSpec(path, precision="float16"))


# ------------------------------------------------------------------ CLI and config


def _parse(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    return resolve_config(
        parser.parse_args(["--model", "m", "--input", "i", "--output", "o", *argv])
    )


def test_backend_flag_and_yaml_key(tmp_path):
    assert _parse().backend == "keras"
    assert _parse("--backend", "xla").backend == "xla"
    config = tmp_path / "c.yaml"
    config.write_text("backend: xla\nprecision: bfloat16\n")
    parsed = _parse("--config", str(config))
    assert (parsed.backend, parsed.precision) == ("xla", "bfloat16")
    config.write_text("backend: tensorrt\n")
    with pytest.raises(ConfigError, match=r"'backend' must be one of keras, xla"):
        _parse("--config", str(config))
    config.write_text("backend: [xla]\n")
    with pytest.raises(ConfigError, match=r"'backend' in .*expected a string"):
        _parse("--config", str(config))


def test_converted_backends_refuse_reduced_precision():
    with pytest.raises(ConfigError, match=r"--backend onnxruntime runs a float32 model"):
        _parse("--backend", "onnxruntime", "--precision", "bfloat16")


def test_mc_dropout_is_not_silently_run_by_keras_under_another_backend():
    with pytest.raises(ConfigError, match=r"--mc-dropout-samples .* use --backend keras"):
        _parse("--backend", "xla", "--mc-dropout-samples", "4")


def test_missing_backend_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'keras-batch-score\[litert\]'"):
        _parse("--backend", "litert")


def _score(tmp_path, model_path: str, *extra: str) -> int:
    table = util.feature_table(N, 4)
    data = util.write_parquet(tmp_path / "in" / "d.parquet", table, row_group_size=50)
    return cli_main(
        [
            "score",
            "--model",
            model_path,
            "--input",
            data,
            "--output",
            str(tmp_path / "out"),
            "--id-column",
            "id",
            "--feature-columns",
            "f0,f1,f2,f3",
            "--batch-size",
            "64",
            "--quiet",
            *extra,
        ]
    )


@pytest.mark.parametrize("backend", ["xla", "onnxruntime", "litert"])
def test_cli_scores_with_each_backend(saved, tmp_path, backend):
    _needs(backend)
    path, model, _ = saved["functional"]
    assert _score(tmp_path, path, "--backend", backend) == 0
    out = util.read_predictions(tmp_path / "out")
    x = util.stacked(util.feature_table(N, 4), ["f0", "f1", "f2", "f3"])
    ref = np.asarray(model(x, training=False)).reshape(-1)
    np.testing.assert_allclose(out.column("prediction").to_numpy(), ref, atol=1e-5, rtol=0)


def test_cli_refuses_an_unconvertible_model_before_reading_data(saved, tmp_path, capsys):
    _needs("litert")
    path, model, _ = saved["lstm_tf"]
    table = zoo._zoo_table().slice(0, 20)
    data = util.write_parquet(tmp_path / "in" / "z.parquet", table)
    code = cli_main(
        [
            *("score", "--model", path, "--input", data, "--output", str(tmp_path / "out")),
            *("--id-column", "id", "--backend", "litert", "--quiet"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert f"layer '{_layer_name(model, 'LSTM')}' (LSTM)" in err[0]
    assert not os.path.exists(tmp_path / "out" / "run_summary.json")


def test_cli_refuses_float16_on_cpu(saved, tmp_path, capsys):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    path, *_ = saved["functional"]
    assert _score(tmp_path, path, "--precision", "float16") == 2
    err = capsys.readouterr().err
    assert "--precision float16 needs a GPU" in err


def test_bench_backend_table_reports_speed_and_difference(tmp_path, monkeypatch):
    from benchmarks import bench

    monkeypatch.setenv(backends_cache_env(), str(tmp_path / "cache"))
    _, model_path = bench.prepare_w1(tmp_path, 1000)
    table = bench.backend_table(model_path, rows=1024, batches=(256, 1024))
    assert list(table) == list(backends.BACKENDS)
    for backend, row in table.items():
        if backends.missing_modules(backend):
            assert "not installed" in row["skipped"]
            continue
        assert set(row["rows_per_second_by_batch"]) == {256, 1024}
        assert row["max_abs_diff_vs_keras"] <= TOLERANCE.get(backend, 1e-5)
    text = bench.format_backend_table(table)
    assert "| keras |" in text and "max abs diff" in text
