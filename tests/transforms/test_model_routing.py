"""``ScoreModels`` under TestPipeline: fallback routing of failed rows and A/B routing by id hash.

Expectations are computed apart from the code under test: predictions with
``model(x, training=False)`` on the in-memory Keras models, A/B arms with a
plain-Python splitmix64 over the ids (integers modulo 2**64, no numpy).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.postprocess.plan import MemberRun, PostprocessPlan, output_columns
from keras_batch_score.transforms.postprocess.transforms import ScoreModels
from tests import util
from tests.inference_objects import SENTINEL, RaiseOnSentinel

keras = util.keras
N_ROWS = 60
BAD_IDS = (7, 23, 24, 51)  # rows whose f0 is the sentinel: the primary raises on them
RAISES = ("tests.inference_objects:RaiseOnSentinel",)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(primary that raises on sentinel rows, fallback, A/B arm b) as (keras model, spec)."""
    root = tmp_path_factory.mktemp("routing")
    keras.utils.set_random_seed(1)
    inp = keras.Input((3,), name="x")
    out = keras.layers.Dense(1, activation="sigmoid")(RaiseOnSentinel()(inp))
    primary = keras.Model(inp, out)
    primary.save(root / "primary.keras")
    fallback = util.mlp(3, seed=5)
    fallback.save(root / "fallback.keras")
    arm_b = util.mlp(3, seed=9)
    arm_b.save(root / "b.keras")
    return {
        "primary": (primary, ModelSpec(str(root / "primary.keras"), RAISES, model_id="primary")),
        "fallback": (fallback, ModelSpec(str(root / "fallback.keras"), model_id="fallback")),
        "b": (arm_b, ModelSpec(str(root / "b.keras"), model_id="b")),
    }


def _batches(x: np.ndarray, ids: np.ndarray, sizes: list[int]) -> list[ScoringBatch]:
    out, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        table = pa.table({"id": pa.array(ids[rows], pa.int64())})
        out.append(ScoringBatch(table=table, features={"x": x[rows]}))
        start += size
    assert start == len(ids)
    return out


def _inputs(n: int = N_ROWS, bad=BAD_IDS) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(4).normal(size=(n, 3)).astype(np.float32)
    x[list(bad), 0] = SENTINEL
    return x, np.arange(n, dtype=np.int64)


def _plan(models, members: list[str], **kwargs) -> PostprocessPlan:
    spec = models[members[0]][1]
    return PostprocessPlan(
        members=tuple(MemberRun(name, models[name][1], model_id=name) for name in members),
        outputs=output_columns(load(spec).outputs),
        **kwargs,
    )


def _rows(batch: ScoringBatch):
    """(id, model id, prediction) per row of a scored batch."""
    (values,) = batch.predictions.values()
    ids = batch.table.column("id").to_pylist()
    return [(i, batch.model_id, float(v)) for i, v in zip(ids, np.ravel(values), strict=True)]


def _matches(expected: dict[int, tuple[str, float]]):
    """A matcher: every id once, from the expected model, with its prediction (atol 1e-6)."""

    def check(actual):
        got = {}
        for row_id, model_id, value in actual:
            assert row_id not in got, f"id {row_id} scored twice"
            got[row_id] = (model_id, value)
        assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
        for row_id, (model_id, value) in expected.items():
            assert got[row_id][0] == model_id, (row_id, got[row_id], model_id)
            np.testing.assert_allclose(got[row_id][1], value, atol=1e-6, err_msg=str(row_id))

    return check


def _reference(model, x: np.ndarray) -> np.ndarray:
    return util.keras_reference(model, x)[:, 0]


def _error_ids(table: pa.Table):
    import json

    return [
        (json.loads(row)["id"], stage)
        for row, stage in zip(
            table.column("row").to_pylist(), table.column("stage").to_pylist(), strict=True
        )
    ]


def test_fallback_scores_exactly_the_rows_the_primary_raised_on(models):
    x, ids = _inputs()
    good = np.setdiff1d(ids, BAD_IDS)
    # the primary model's layers without the raising one: what it computes on good rows
    dense = models["primary"][0].layers[-1]
    expected = {
        int(i): ("primary", float(v))
        for i, v in zip(good, np.asarray(dense(x[good]))[:, 0], strict=True)
    }
    fallback = _reference(models["fallback"][0], x[list(BAD_IDS)])
    expected.update({i: ("fallback", float(v)) for i, v in zip(BAD_IDS, fallback, strict=True)})
    plan = _plan(
        models,
        ["primary"],
        fallback=MemberRun("fallback", models["fallback"][1], model_id="fallback"),
    )
    with TestPipeline() as p:
        scored, errors = (
            p
            | beam.Create(_batches(x, ids, [25, 20, 15]))
            | ScoreModels(plan, {"x": 3}, max_batch_rows=16)
        )
        assert_that(scored | "Rows" >> beam.FlatMap(_rows), _matches(expected), label="Scored")
        assert_that(
            errors | "ErrorIds" >> beam.FlatMap(_error_ids),
            lambda got: _empty(got),
            label="NoErrors",
        )


def _empty(got):
    assert list(got) == [], got


def test_without_a_fallback_the_raised_rows_are_inference_errors(models):
    x, ids = _inputs()
    good = np.setdiff1d(ids, BAD_IDS)
    dense = models["primary"][0].layers[-1]
    expected = {
        int(i): ("primary", float(v))
        for i, v in zip(good, np.asarray(dense(x[good]))[:, 0], strict=True)
    }
    plan = _plan(models, ["primary"])
    with TestPipeline() as p:
        scored, errors = (
            p
            | beam.Create(_batches(x, ids, [30, 30]))
            | ScoreModels(plan, {"x": 3}, max_batch_rows=16)
        )
        assert_that(scored | "Rows" >> beam.FlatMap(_rows), _matches(expected), label="Scored")

        def check_errors(got):
            assert sorted(got) == [(i, "inference") for i in BAD_IDS], got

        assert_that(errors | "ErrorIds" >> beam.FlatMap(_error_ids), check_errors, label="Errors")


# --------------------------------------------------------------------------- A/B


MASK = (1 << 64) - 1


def _splitmix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _arm(row_id: int, shares: list[float]) -> int:
    """The documented rule: splitmix64 of the id's int64 bits, top 53 bits as u in [0, 1)."""
    h = _splitmix(((0 * 31) & MASK) ^ _splitmix(row_id & MASK))
    u = (h >> 11) / float(1 << 53)
    edge = 0.0
    for i, share in enumerate(shares):
        edge += share
        if u < edge:
            return i
    return len(shares) - 1


@pytest.mark.parametrize("sizes", [[400], [7, 193, 200]])
def test_ab_split_routes_each_id_to_its_arm_whatever_the_batching(models, sizes):
    shares = [0.3, 0.7]
    x, ids = _inputs(400, bad=())
    arm = np.array([_arm(int(i), shares) for i in ids])
    assert 0.2 < (arm == 0).mean() < 0.4  # the reference itself splits about 30/70
    expected = {}
    for name, index in (("fallback", 0), ("b", 1)):
        rows = ids[arm == index]
        values = _reference(models[name][0], x[rows])
        expected.update({int(i): (name, float(v)) for i, v in zip(rows, values, strict=True)})
    plan = _plan(
        models, ["fallback", "b"], ab_split=(("fallback", 0.3), ("b", 0.7)), id_columns=("id",)
    )
    batches = _batches(x, ids, sizes)
    batches[0].rows_rejected = 5
    with TestPipeline() as p:
        scored, errors = p | beam.Create(batches) | ScoreModels(plan, {"x": 3}, max_batch_rows=64)
        assert_that(scored | "Rows" >> beam.FlatMap(_rows), _matches(expected), label="Scored")
        rejected = (
            scored | "Rejected" >> beam.Map(lambda b: b.rows_rejected) | beam.CombineGlobally(sum)
        )
        assert_that(rejected, lambda got: _equal(got, [5]), label="RejectedKeptOnce")
        assert_that(errors | "ErrorIds" >> beam.FlatMap(_error_ids), _empty, label="NoErrors")


def _equal(got, expected):
    assert list(got) == expected, got
