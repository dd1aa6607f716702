"""Planning (keras_batch_score.pipelines.planning): models parsed once, frozen plans, one scoring path."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from keras_batch_score.pipelines import planning
from keras_batch_score.pipelines.config import ScoreConfig
from keras_batch_score.pipelines.planning import models as planning_models
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model.score import ScoreBatches
from tests import util

N_FEATURES = 3
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("planning")
    table = util.feature_table(40, N_FEATURES, seed=3)
    table = table.append_column("y", pa.array(np.arange(40) % 2))
    table = table.append_column("name", pa.array([f"n{i}" for i in range(40)]))
    data = util.write_parquet(root / "in" / "d.parquet", table)
    paths = {}
    for name, seed in (("a", 1), ("b", 2), ("fb", 3)):
        model = util.mlp(N_FEATURES, seed=seed)
        paths[name] = str(root / f"{name}.keras")
        model.save(paths[name])
    return {"root": root, "data": data, "table": table, "models": paths}


def _config(job, **overrides) -> ScoreConfig:
    values = {
        "model": [job["models"]["a"]],
        "input": job["data"],
        "output": str(job["root"] / "out"),
        "id_columns": ["id"],
        "feature_columns": FEATURES,
    }
    return ScoreConfig(**{**values, **overrides})


def _ab_config(job) -> ScoreConfig:
    return _config(
        job,
        model=[f"a={job['models']['a']}", f"b={job['models']['b']}"],
        ab_split={"a": 0.7, "b": 0.3},
        fallback_model=job["models"]["fb"],
    )


@pytest.fixture
def parse_calls(monkeypatch):
    """Counts parse_members calls, wherever planning looks the function up."""
    calls = []
    original = planning_models.parse_members

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(planning_models, "parse_members", counting)
    monkeypatch.setattr(planning, "parse_members", counting)
    return calls


# --------------------------------------------------------------------------- models


def test_members_ab_arms_and_fallback_are_parsed_once(job, parse_calls):
    models = planning.plan_models(_ab_config(job))
    assert len(parse_calls) == 1
    assert [m.name for m in models.members] == ["a", "b"]
    assert models.ab_split == (("a", 0.7), ("b", 0.3))
    assert models.fallback == job["models"]["fb"]
    assert models.spec.path == job["models"]["a"]


def test_scoring_plan_parses_the_models_once(job, parse_calls):
    plan = planning.plan_scoring(_ab_config(job), check_output=False)
    assert len(parse_calls) == 1
    post = plan.postprocess
    assert [m.name for m in post.members] == ["a", "b"]
    assert post.ab_split == (("a", 0.7), ("b", 0.3))
    assert post.fallback is not None and post.fallback.spec.path == job["models"]["fb"]
    assert not plan.plain


def test_plans_are_frozen(job):
    plan = planning.plan_scoring(_config(job), check_output=False)
    for obj, field in (
        (plan, "run_id"),
        (plan.models, "members"),
        (plan.input, "files"),
        (plan.models.members[0], "path"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, None)


def test_weights_naming_no_member_fail_at_plan_time(job):
    with pytest.raises(ConfigError, match=r"ensemble_weights name\(s\) \['z'\] match no model"):
        planning.plan_models(_config(job, ensemble_weights={"z": 1.0}))


# --------------------------------------------------------------------------- input


def test_plan_input_reads_the_schema_and_names_a_missing_column(job):
    source = planning.plan_input(job["data"])
    assert source.format == "parquet"
    assert source.files == (job["data"],)
    assert source.schema.names == job["table"].schema.names
    with pytest.raises(ConfigError, match="column 'nope' is not in the input schema"):
        source.check_columns(["id", "nope"])


def test_plan_input_runs_the_output_check_before_reading_footers(job, tmp_path):
    seen = []

    def check() -> None:
        seen.append("checked")
        raise ConfigError("output refused")

    with pytest.raises(ConfigError, match="output refused"):
        planning.plan_input(job["data"], before_reading=check)
    assert seen == ["checked"]


# --------------------------------------------------------------------------- one scoring path


def test_a_plain_run_is_a_trivial_postprocess_plan(job):
    plan = planning.plan_scoring(_config(job), check_output=False)
    post = plan.postprocess
    assert plan.plain
    assert len(post.members) == 1 and post.members[0].model_id == plan.model_id
    assert not post.is_ensemble and not post.emits_std and post.extra_columns() == []
    assert plan.output_schema.names == ["id", "prediction", "model"]
    assert post.ensemble_label == plan.model_id


def test_score_batches_on_the_trivial_plan_gives_the_models_predictions(job):
    plan = planning.plan_scoring(_config(job), check_output=False)
    table = job["table"]
    x = util.stacked(table, FEATURES)
    batch = ScoringBatch(table=table.select(["id"]), features={plan.layout.bindings[0].name: x})
    expected = util.keras_reference(util.keras.models.load_model(job["models"]["a"]), x)

    key, model_id = plan.output_names[0], plan.model_id  # the plan holds the loaded model

    def check(scored):
        assert len(scored) == 1
        got = np.asarray(scored[0].predictions[key]).reshape(-1)
        np.testing.assert_allclose(got, expected.reshape(-1), rtol=1e-5)
        assert scored[0].model_id == model_id

    with TestPipeline() as p:
        scored, _ = (
            p
            | beam.Create([batch])
            | ScoreBatches(plan.postprocess, plan.layout.widths(), max_batch_rows=64)
        )
        assert_that(scored, check)


# --------------------------------------------------------------------------- calibrate


def test_raw_scores_keeps_the_models_and_drops_every_transform(job):
    plan = planning.plan_scoring(
        _config(job, clip_min=0.1, clip_max=0.9, mc_dropout_samples=2, seed=5),
        check_output=False,
    )
    post = plan.postprocess
    raw = planning.raw_scores(post)
    assert (raw.clip_min, raw.clip_max) == (None, None)
    assert (raw.members, raw.outputs, raw.mc_samples, raw.seed) == (
        post.members,
        post.outputs,
        2,
        5,
    )
    assert (post.clip_min, post.clip_max) == (0.1, 0.9)  # the original plan is unchanged


def test_calibration_plan_is_derived_from_the_scoring_plan(job):
    config = _config(job, id_columns=["id", "y"], target_mean=1.0, target_std=2.0)
    plan = planning.plan_calibration(config, "y")
    assert plan.postprocess.target_std is None and plan.postprocess.target_mean is None
    assert plan.postprocess == planning.raw_scores(plan.postprocess)
    assert plan.read_columns[:2] == ("id", "y")


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("nope", "--label-column 'nope' is not in the input"),
        ("name", "--label-column 'name' has type string; expected integer class indices"),
    ],
)
def test_calibration_plan_checks_the_label_column(job, label, message):
    config = _config(job)  # calibrate adds the label to the id columns; checked here too
    with pytest.raises(ConfigError, match=message):
        planning.plan_calibration(config, label)


def test_calibration_plan_refuses_a_model_with_two_outputs(job, tmp_path):
    inp = util.keras.Input((N_FEATURES,), name="x")
    two = util.keras.Model(
        inp, [util.keras.layers.Dense(1, name="p")(inp), util.keras.layers.Dense(1, name="q")(inp)]
    )
    two.save(tmp_path / "two.keras")
    config = _config(job, model=[str(tmp_path / "two.keras")], id_columns=["id", "y"])
    with pytest.raises(ConfigError, match="calibrate needs a model with one output"):
        planning.plan_calibration(config, "y")
