"""Model loading and the compiled call, without Beam: every format equals model(x, training=False)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.keras_format import resolve_custom_objects
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.spec import ModelSpec
from tests import util

keras = util.keras
tf = util.import_tensorflow()


@keras.saving.register_keras_serializable(package="kbs_test")
class Scale(keras.layers.Layer):
    """A custom layer: multiplies by a trainable scalar."""

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

    def call(self, x):
        return x * self.factor * 2.0


def _x(n: int = 64, k: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_and_h5_match_keras_call(tmp_path, fmt):
    model = util.mlp(5, outputs=3)
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    loaded = load(ModelSpec(str(path)))
    x = _x()
    got = loaded.predict({loaded.inputs[0].name: x})
    assert list(got) == [loaded.outputs[0].name]
    np.testing.assert_allclose(next(iter(got.values())), util.keras_reference(model, x), atol=1e-6)
    assert loaded.model_id.startswith(f"m.{fmt}@") and len(loaded.model_id.split("@")[1]) == 12


@pytest.mark.parametrize("how", ["export", "tf_saved_model"])
def test_saved_model_matches_keras_call(tmp_path, how):
    model = util.mlp(5)
    path = tmp_path / "sm"
    if how == "export":
        model.export(str(path))
    else:
        tf.saved_model.save(model, str(path))
    loaded = load(ModelSpec(str(path)))
    assert loaded.format == "saved_model[serving_default]"
    x = _x()
    got = loaded.predict({loaded.inputs[0].name: x})
    (values,) = got.values()
    np.testing.assert_allclose(values, util.keras_reference(model, x)[:, 0], atol=1e-6)


def test_saved_model_unknown_signature_lists_choices(tmp_path):
    model = util.mlp(5)
    model.export(str(tmp_path / "sm"))
    with pytest.raises(ModelError, match=r"no signature 'nope'.*serving_default"):
        load(ModelSpec(str(tmp_path / "sm"), signature="nope"))


def test_named_multi_input_and_multi_output(tmp_path):
    keras.utils.set_random_seed(3)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    score = keras.layers.Dense(1, name="score")(h)
    probs = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    model = keras.Model({"a": a, "b": b}, {"score": score, "probs": probs})
    model.save(tmp_path / "mi.keras")
    loaded = load(ModelSpec(str(tmp_path / "mi.keras")))
    assert sorted(i.name for i in loaded.inputs) == ["a", "b"]
    xa, xb = _x(k=3), _x(k=2, seed=2)
    got = loaded.predict({"a": xa, "b": xb})
    ref = util.keras_reference(model, {"a": xa, "b": xb})
    np.testing.assert_allclose(got["score"], ref["score"][:, 0], atol=1e-6)
    np.testing.assert_allclose(got["probs"], ref["probs"], atol=1e-6)


def test_custom_layer_needs_custom_object(tmp_path):
    keras.utils.set_random_seed(4)
    inp = keras.Input((5,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1)(Scale()(inp)))
    path = tmp_path / "custom.keras"
    model.save(path)
    # Unregister so that loading has to find the class through --custom-object.
    registered = keras.saving.get_registered_name(Scale)
    keras.saving.get_custom_objects().pop(registered)
    try:
        with pytest.raises(
            ModelError, match=r"custom class .*Scale.*--custom-object <module>:Scale"
        ):
            load(ModelSpec(str(path)))
        loaded = load(ModelSpec(str(path), custom_objects=("tests.unit.test_keras_model:Scale",)))
    finally:
        keras.saving.get_custom_objects()[registered] = Scale
    x = _x()
    np.testing.assert_allclose(
        loaded.predict({"x": x})[loaded.outputs[0].name],
        util.keras_reference(model, x)[:, 0],
        atol=1e-6,
    )


def test_bad_custom_object_reference_is_explained():
    with pytest.raises(ModelError, match="expected module:attr"):
        resolve_custom_objects(["no_colon"])
    with pytest.raises(ModelError, match="has no attribute 'Nope'"):
        resolve_custom_objects(["tests.unit.test_keras_model:Nope"])


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load(ModelSpec(str(tmp_path / "absent.keras")))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown format"):
        load(ModelSpec(str(tmp_path / "m.onnx")))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ModelError, match=r"no saved_model\.pb"):
        load(ModelSpec(str(tmp_path / "empty_dir")))


def test_health_check_rejects_nan_weights_and_wrong_width(tmp_path):
    model = util.mlp(5)
    loaded_ok_path = tmp_path / "ok.keras"
    model.save(loaded_ok_path)
    loaded = load(ModelSpec(str(loaded_ok_path)))
    with pytest.raises(ModelError, match="expects 5 values per row, the pipeline feeds 4"):
        health_check(loaded, {loaded.inputs[0].name: 4})
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    model.save(tmp_path / "nan.keras")
    bad = load(ModelSpec(str(tmp_path / "nan.keras")))
    with pytest.raises(ModelError, match="contains NaN or Inf"):
        health_check(bad, {bad.inputs[0].name: 5})


def test_bfloat16_precision_is_close_to_float32_and_opt_in(tmp_path):
    model = util.mlp(5, outputs=3)
    model.save(tmp_path / "m.keras")
    x = _x(n=256)
    exact = load(ModelSpec(str(tmp_path / "m.keras")))
    fast = load(ModelSpec(str(tmp_path / "m.keras"), precision="bfloat16"))
    assert exact.format == "keras" and fast.format == "keras+bfloat16"
    ref = util.keras_reference(model, x)
    got_exact = exact.predict({"x": x})[exact.outputs[0].name]
    got_fast = fast.predict({"x": x})[fast.outputs[0].name]
    np.testing.assert_allclose(got_exact, ref, atol=1e-6)
    assert got_fast.dtype == np.float32
    np.testing.assert_allclose(got_fast, ref, atol=2e-2)
    assert np.abs(got_fast - ref).max() > 0, "bfloat16 should not be bit-identical to float32"
    model.export(str(tmp_path / "sm"))
    with pytest.raises(ModelError, match=r"--precision bfloat16 needs a \.keras or \.h5 model"):
        load(ModelSpec(str(tmp_path / "sm"), precision="bfloat16"))
