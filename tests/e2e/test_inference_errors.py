"""Row-precise inference errors, no silent NaN/Inf predictions, checked post-processing parameters."""

from __future__ import annotations

import json
import math
import sys
import traceback

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.pipelines.cli import main
from tests import util
from tests.inference_objects import SENTINEL

keras = util.keras
tf = util.import_tensorflow()

N_FEATURES = 5
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
CUSTOM = ["--custom-object", "tests.inference_objects:RaiseOnSentinel"]


def _table(n: int, *, seed: int = 0, f0: dict[int, float] | None = None, **cols) -> pa.Table:
    table = util.feature_table(n, N_FEATURES, seed=seed)
    for name, changes in {"f0": f0 or {}, **cols}.items():
        values = table[name].to_numpy().copy()
        for row, v in changes.items():
            values[row] = v
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table


def _score(tmp_path, table: pa.Table, model_path: str, *extra: str, name: str = "out") -> int:
    input_path = util.write_parquet(tmp_path / f"{name}-in.parquet", table, row_group_size=400)
    return main(
        [
            "score",
            "--model",
            model_path,
            "--input",
            input_path,
            "--output",
            str(tmp_path / name),
            "--id-column",
            "id",
            "--quiet",
            *extra,
        ]
    )


def _row_id(error: dict) -> int:
    row = error["row"]
    return (json.loads(row) if isinstance(row, str) else row)["id"]


def _x(table: pa.Table) -> np.ndarray:
    return util.stacked(table, FEATURES)


def _picked(n_features: int, column: int, units: int = 1) -> keras.layers.Dense:
    """A bias-free Dense layer whose ``units`` outputs all copy input ``column``."""
    layer = keras.layers.Dense(units, use_bias=False)
    layer.build((None, n_features))
    kernel = np.zeros((n_features, units), dtype=np.float32)
    kernel[column, :] = 1.0
    layer.set_weights([kernel])
    return layer


@pytest.fixture(scope="module")
def sentinel_model(tmp_path_factory):
    from tests.inference_objects import RaiseOnSentinel

    keras.utils.set_random_seed(3)
    inp = keras.Input((N_FEATURES,), name="x")
    hidden = keras.layers.Dense(8, activation="relu")(RaiseOnSentinel()(inp))
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(hidden))
    path = tmp_path_factory.mktemp("m") / "sentinel.keras"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="module")
def exp_model(tmp_path_factory):
    """prediction = exp(f0): Inf for f0 >= 89, about 9e29 for f0 = 69."""
    inp = keras.Input((N_FEATURES,), name="x")
    model = keras.Model(inp, keras.layers.Activation("exponential")(_picked(N_FEATURES, 0)(inp)))
    path = tmp_path_factory.mktemp("m") / "exp.keras"
    model.save(path)
    return model, str(path)


# --------------------------------------------------------------------------- 1. row-precise errors


def test_one_failing_row_in_300_goes_to_errors_alone(tmp_path, sentinel_model):
    model, path = sentinel_model
    bad = [17, 301, 899]
    table = _table(900, seed=1, f0={r: SENTINEL for r in bad})
    assert _score(tmp_path, table, path, *CUSTOM, "--batch-size", "512") == 0
    summary = util.read_summary(tmp_path / "out")
    assert (summary["rows_read"], summary["rows_scored"], summary["rows_failed"]) == (900, 897, 3)
    errors = util.read_errors(tmp_path / "out")
    assert sorted(_row_id(e) for e in errors) == bad
    for e in errors:
        assert e["stage"] == "inference"
        assert e["reason"].startswith("inference failed: InvalidArgumentError: assertion failed:")
        assert "sentinel 999 in f0" in e["reason"]
        assert "\n" not in e["reason"] and len(e["reason"]) <= 300
        assert "Traceback" not in e["reason"] and "{{" not in e["reason"]
    got = util.read_predictions(tmp_path / "out")
    good = np.setdiff1d(np.arange(900), bad)
    np.testing.assert_array_equal(got["id"].to_numpy(), good)
    np.testing.assert_allclose(
        got["prediction"].to_numpy(),
        util.keras_reference(model, _x(table)[good])[:, 0],
        atol=1e-6,
    )


def test_only_the_failing_rows_go_to_the_fallback(tmp_path, sentinel_model):
    model, path = sentinel_model
    fallback = util.mlp(N_FEATURES, seed=5)
    fb_path = str(tmp_path / "fallback.keras")
    fallback.save(fb_path)
    bad = [5, 250, 251]
    table = _table(600, seed=2, f0={r: SENTINEL for r in bad})
    flags = [*CUSTOM, "--fallback-model", fb_path, "--batch-size", "256"]
    assert _score(tmp_path, table, path, *flags) == 0
    summary = util.read_summary(tmp_path / "out")
    assert summary["rows_fallback"] == 3 and summary["rows_failed"] == 0
    got = util.read_predictions(tmp_path / "out")
    from_fallback = np.flatnonzero(
        [m.startswith("fallback.keras@") for m in got["model"].to_pylist()]
    )
    np.testing.assert_array_equal(from_fallback, bad)
    x = _x(table)
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[bad], util.keras_reference(fallback, x[bad])[:, 0], atol=1e-6
    )
    good = np.setdiff1d(np.arange(600), bad)
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[good], util.keras_reference(model, x[good])[:, 0], atol=1e-6
    )


def _beam_dead_letter(exc: BaseException) -> tuple:
    """What Beam's ``with_exception_handling()`` puts next to the failed element."""
    try:
        raise exc
    except type(exc) as e:
        return (type(e), repr(e), traceback.format_exception(*sys.exc_info()))


def test_failure_reason_reads_beams_dead_letter_tuple():
    from keras_batch_score.transforms.model import row_failures as rf

    try:
        tf.debugging.assert_none_equal(tf.constant([1.0, 999.0]), 999.0, message="boom here")
    except tf.errors.InvalidArgumentError as e:
        info = _beam_dead_letter(e)
        direct = rf.failure_reason(e)
    assert info[1] == "InvalidArgumentError()"  # Beam's repr carries no message for TF errors
    reason = rf.failure_reason(info)
    assert reason == direct
    assert reason.startswith("InvalidArgumentError: ") and "boom here" in reason
    assert "\n" not in reason
    long = ValueError("first line " + "x" * 1000 + "\nsecond line")
    assert rf.failure_reason(_beam_dead_letter(long)) == rf.failure_reason(long)
    assert rf.failure_reason(long).startswith("ValueError: first line xxx")
    assert len(rf.failure_reason(long)) <= 240
    assert rf.failure_reason(_beam_dead_letter(KeyError("k"))) == "KeyError: 'k'"
    assert rf.failure_reason(RuntimeError()) == "RuntimeError"


def test_dead_letter_batches_become_one_line_errors():
    from keras_batch_score.transforms.core.batch import ScoringBatch
    from keras_batch_score.transforms.model.handler import dead_letter_rows

    batch = ScoringBatch(table=pa.table({"id": [1, 2]}), features={"x": np.zeros((2, 1))})
    failed = list(dead_letter_rows(([batch, batch], _beam_dead_letter(ValueError("bad\nmore")))))
    assert [f.batch.num_rows for f in failed] == [2, 2]
    assert {r for f in failed for r in f.reasons} == {"inference failed: ValueError: bad"}


def test_beam_dead_letter_output_becomes_one_line_errors_in_a_pipeline():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from keras_batch_score.transforms.core.batch import ScoringBatch
    from keras_batch_score.transforms.model.handler import KerasModelHandler, RunKerasInference

    class Dummy:  # Beam's Shared needs a weak-referenceable model
        pass

    class Broken(KerasModelHandler):
        def load_model(self):
            return Dummy()

        def run_inference(self, batch, model, inference_args=None):
            raise RuntimeError("handler broke\n" + "detail " * 500)

    handler = Broken(None, {}, max_batch_rows=10)  # type: ignore[arg-type]
    batches = [
        ScoringBatch(table=pa.table({"id": np.arange(a, a + 3)}), features={}) for a in (0, 3)
    ]
    with beam.Pipeline() as p:
        scored, errors = p | beam.Create(batches) | RunKerasInference(handler)
        rows = errors | beam.FlatMap(
            lambda t: zip(t["reason"].to_pylist(), t["stage"].to_pylist(), strict=True)
        )
        reason = "inference failed: RuntimeError: handler broke"
        assert_that(
            rows,
            equal_to([(reason, "inference")] * 6),
            label="reasons",
        )
        assert_that(scored, equal_to([]), label="nothing scored")


def _flaky_predict(bad_rows: set[int], calls: list[int]):
    def predict(features):
        ids = features["id"]
        calls.append(len(ids))
        hit = sorted(bad_rows.intersection(ids.tolist()))
        if hit:
            raise ValueError(f"bad row {hit[0]}")
        return {"out": ids.astype(np.float32) * 2}

    return predict


@pytest.mark.parametrize(
    ("n", "bad"), [(1, {0}), (300, {7}), (1000, {0, 1, 999}), (4096, set(range(0, 4096, 300)))]
)
def test_bisection_isolates_exactly_the_failing_rows(n, bad):
    from keras_batch_score.transforms.model import row_failures as rf

    calls: list[int] = []
    features = {"id": np.arange(n)}
    result = rf.predict_rows(_flaky_predict(bad, calls), features, n)
    np.testing.assert_array_equal(result.failed, sorted(bad))
    assert result.reasons == [f"inference failed: ValueError: bad row {r}" for r in sorted(bad)]
    good = np.setdiff1d(np.arange(n), sorted(bad))
    np.testing.assert_array_equal(result.outputs.get("out", np.zeros(0)), good * 2)
    assert len(calls) - 1 <= rf.bisection_budget(n)
    assert rf.bisection_budget(n) <= 2 * math.ceil(math.log2(max(n, 2))) * rf.MAX_FAILING_GROUPS


def test_bisection_is_bounded_when_every_row_fails():
    from keras_batch_score.transforms.model import row_failures as rf

    calls: list[int] = []
    n = 16384
    result = rf.predict_rows(_flaky_predict(set(range(n)), calls), {"id": np.arange(n)}, n)
    assert len(calls) - 1 <= rf.bisection_budget(n) <= 2 * 14 * rf.MAX_FAILING_GROUPS
    np.testing.assert_array_equal(result.failed, np.arange(n))  # every row once, none scored
    assert len(result.reasons) == n and len(result.outputs.get("out", [])) == 0


# --------------------------------------------------------------------------- 2. NaN / Inf outputs


def test_inf_predictions_go_to_errors(tmp_path, exp_model):
    model, path = exp_model
    bad = [3, 404, 777]
    table = _table(800, seed=4, f0={r: 100.0 for r in bad})
    assert _score(tmp_path, table, path) == 0
    summary = util.read_summary(tmp_path / "out")
    assert (summary["rows_scored"], summary["rows_failed"]) == (797, 3)
    errors = util.read_errors(tmp_path / "out")
    assert sorted(_row_id(e) for e in errors) == bad
    assert {(e["stage"], e["reason"]) for e in errors} == {("inference", "model output is Inf")}
    got = util.read_predictions(tmp_path / "out")
    good = np.setdiff1d(np.arange(800), bad)
    np.testing.assert_array_equal(got["id"].to_numpy(), good)
    assert np.isfinite(got["prediction"].to_numpy()).all()
    np.testing.assert_allclose(
        got["prediction"].to_numpy(),
        util.keras_reference(model, _x(table)[good])[:, 0],
        rtol=1e-6,
    )


def test_non_finite_outputs_are_named_on_multi_output_models(tmp_path):
    inp = keras.Input((N_FEATURES,), name="x")
    score = keras.layers.Activation("exponential", name="score")(_picked(N_FEATURES, 0)(inp))
    twin = keras.layers.Activation("exponential")(_picked(N_FEATURES, 1, units=2)(inp))
    diff = keras.layers.Dense(1, use_bias=False, name="aux")
    diff.build((None, 2))
    diff.set_weights([np.array([[1.0], [-1.0]], dtype=np.float32)])
    model = keras.Model(inp, {"score": score, "aux": diff(twin)})  # aux = exp(f1) - exp(f1)
    path = str(tmp_path / "two.keras")
    model.save(path)
    table = _table(500, seed=5, f0={10: 100.0, 20: 100.0}, f1={20: 100.0, 30: 100.0})
    assert _score(tmp_path, table, path) == 0
    errors = {_row_id(e): e["reason"] for e in util.read_errors(tmp_path / "out")}
    from keras_batch_score.transforms.model.load import load
    from keras_batch_score.transforms.model.spec import ModelSpec

    names = [info.name for info in load(ModelSpec(path)).outputs]  # checked in this order
    first = "score" if names.index("score") < names.index("aux") else "aux"
    assert errors == {
        10: "model output 'score' is Inf",
        20: "model output 'score' is Inf" if first == "score" else "model output 'aux' is NaN",
        30: "model output 'aux' is NaN",
    }
    summary = util.read_summary(tmp_path / "out")
    assert (summary["rows_scored"], summary["rows_failed"]) == (497, 3)


def test_inf_rows_of_an_ensemble_member_are_errors_and_fallback_scores_them(tmp_path, exp_model):
    _, path = exp_model
    other = util.mlp(N_FEATURES, seed=9)
    other_path = str(tmp_path / "other.keras")
    other.save(other_path)
    bad = [1, 299, 300]
    table = _table(600, seed=6, f0={r: 100.0 for r in bad})
    members = ["--model", other_path, "--batch-size", "256"]  # ensemble: exp.keras + other.keras
    assert _score(tmp_path, table, path, *members, name="ens") == 0
    errors = util.read_errors(tmp_path / "ens")
    assert sorted(_row_id(e) for e in errors) == bad
    assert {e["reason"] for e in errors} == {"model output is Inf"}
    got = util.read_predictions(tmp_path / "ens")
    assert np.isfinite(got["prediction"].to_numpy()).all() and got.num_rows == 597

    fb_flags = ["--fallback-model", other_path, "--batch-size", "256"]
    assert _score(tmp_path, table, path, *fb_flags, name="fb") == 0
    summary = util.read_summary(tmp_path / "fb")
    assert summary["rows_failed"] == 0 and summary["rows_fallback"] == 3
    got = util.read_predictions(tmp_path / "fb")
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[bad],
        util.keras_reference(other, _x(table)[bad])[:, 0],
        atol=1e-6,
    )


def test_non_finite_post_processed_values_go_to_errors(tmp_path, exp_model):
    _, path = exp_model
    bad = [8, 9]
    table = _table(300, seed=7, f0={r: 69.0 for r in bad})  # exp(69) ~ 9e29: finite
    flags = ["--target-mean", "0", "--target-std", "1e10"]  # 9e29 * 1e10 overflows float32
    assert _score(tmp_path, table, path, *flags) == 0
    errors = util.read_errors(tmp_path / "out")
    assert sorted(_row_id(e) for e in errors) == bad
    assert {(e["stage"], e["reason"]) for e in errors} == {
        ("postprocess", "prediction is Inf after post-processing")
    }
    summary = util.read_summary(tmp_path / "out")
    assert (summary["rows_scored"], summary["rows_failed"]) == (298, 2)
    assert np.isfinite(util.read_predictions(tmp_path / "out")["prediction"].to_numpy()).all()


# --------------------------------------------------------------------------- 3. parameter checks


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--clip-min", "nan"], "--clip-min"),
        (["--clip-max", "inf"], "--clip-max"),
        (["--target-mean", "nan", "--target-std", "1"], "--target-mean"),
        (["--target-mean", "0", "--target-std", "1e39"], "--target-std"),
        (["--target-mean", "0", "--target-std", "1e-50"], "--target-std"),
        (["--target-mean", "1e39", "--target-std", "1"], "--target-mean"),
        (["--ensemble-weights", "a=inf"], "--ensemble-weights"),
        (["--ensemble-weights", "a=0,b=0"], "--ensemble-weights"),
    ],
)
def test_bad_post_processing_parameters_exit_2_naming_the_flag(tmp_path, capsys, flags, flag):
    argv = ["score", "--model", "a=a.keras", "--model", "b=b.keras"]
    argv += ["--input", str(tmp_path / "none.parquet"), "--output", str(tmp_path / "o"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err


@pytest.mark.parametrize(
    "params",
    [
        {"method": "platt", "params": {"a": float("nan"), "b": 0.0}},
        {"method": "platt", "params": {"a": 1.0, "b": float("inf")}},
        {"method": "temperature", "params": {"temperature": float("inf")}},
        {
            "method": "isotonic",
            "params": {"classes": [[[0.0, 0.5, 1.0], [0.0, float("nan"), 1.0]]]},
        },
    ],
)
def test_non_finite_calibration_parameters_exit_2(tmp_path, capsys, exp_model, params):
    _, path = exp_model
    cal = tmp_path / "cal.json"
    cal.write_text(
        json.dumps({"input_kind": "probabilities", "num_classes": 1, **params})
    )  # json writes NaN / Infinity literals
    table = _table(10)
    assert _score(tmp_path, table, path, "--calibration", str(cal)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibration" in err[0] and "finite" in err[0], err
    assert not (tmp_path / "out").exists()


def test_run_inference_output_is_typed_so_beam_never_pickles_batches_to_size_them():
    """Untyped, Beam gave RunInference's output the pickle fallback coder, and its size
    sampling pickled whole scored batches (~250 MB per 20k W2 images)."""
    import apache_beam as beam
    from apache_beam.coders.coders import deserialize_coder

    from keras_batch_score.transforms.core.batch import ScoringBatch
    from keras_batch_score.transforms.core.coders import PredictionResultCoder
    from keras_batch_score.transforms.model.handler import KerasModelHandler, run_model

    p = beam.Pipeline()
    batches = p | beam.Create(
        [ScoringBatch(table=pa.table({"id": [1]}), features={"x": np.ones((1, 1), np.float32)})]
    ).with_output_types(ScoringBatch)
    run_model(batches, KerasModelHandler(None, {"x": 1}, max_batch_rows=64))  # type: ignore[arg-type]
    proto = p.to_runner_api()
    (main_output,) = [
        pc
        for pc in proto.components.pcollections.values()
        if "BeamML_RunInference/" in pc.unique_name and pc.unique_name.endswith(".None")
    ]
    coder = deserialize_coder(proto.components.coders[main_output.coder_id].spec.payload)
    assert isinstance(coder, PredictionResultCoder), type(coder).__name__
