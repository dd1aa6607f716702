"""``ValidateFeatures`` under TestPipeline: scorable rows become batches, the rest error records.

The expected split is computed from the input with plain numpy (a row is
scorable when every feature value is present and finite, and a list feature
has the model's width), not from the validator.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from keras_batch_score.transforms.features.layout import plan_layout
from keras_batch_score.transforms.features.transforms import ValidateFeatures
from keras_batch_score.transforms.model.tensors import TensorInfo

N = 50


def _tables() -> list[pa.Table]:
    """Two input slices of ``id, a, b, v`` with nulls, NaN, Inf and short lists planted."""
    rng = np.random.default_rng(11)
    a = rng.normal(size=N).astype(np.float64)
    b = rng.normal(size=N).astype(np.float32)
    a[[3, 30]] = np.nan
    b[[8]] = np.inf
    a_null = np.zeros(N, bool)
    a_null[[12, 41]] = True
    v = [[float(i), float(-i)] for i in range(N)]
    v[20] = [1.0]  # wrong length
    v[44] = None  # null list
    v[8] = [0.0, 0.0]  # row 8 is already bad through b
    table = pa.table(
        {
            "id": pa.array(np.arange(N), pa.int64()),
            "a": pa.array(a, mask=a_null),
            "b": pa.array(b),
            "v": pa.array(v, pa.list_(pa.float64())),
        }
    )
    return [table.slice(0, 27), table.slice(27)]


def _expected(tables: list[pa.Table]) -> tuple[dict[int, np.ndarray], dict[int, set[str]]]:
    """Per good id its feature row ``[a, b, v[0], v[1]]``; per bad id the columns at fault."""
    good, bad = {}, {}
    for t in tables:
        for row in t.to_pylist():
            faults = {c for c in ("a", "b") if row[c] is None or not np.isfinite(row[c])}
            if row["v"] is None or len(row["v"]) != 2 or not np.all(np.isfinite(row["v"])):
                faults.add("v")
            if faults:
                bad[row["id"]] = faults
            else:
                good[row["id"]] = np.array([row["a"], row["b"], *row["v"]], np.float32)
    return good, bad


def test_bad_rows_are_split_off_with_a_reason_per_column_and_good_rows_keep_their_values():
    tables = _tables()
    good, bad = _expected(tables)
    assert sorted(bad) == [3, 8, 12, 20, 30, 41, 44]  # the planted faults, nothing else
    schema = tables[0].schema
    layout = plan_layout(
        schema,
        [
            TensorInfo("a", (1,), "float32"),
            TensorInfo("b", (), "float32"),
            TensorInfo("v", (2,), "float32"),
        ],
        id_columns=["id"],
    )
    assert [b.columns for b in layout.bindings] == [("a",), ("b",), ("v",)]

    def rows(batch):
        ids = batch.table.column("id").to_pylist()
        assert batch.table.column_names == ["id"]
        x = np.concatenate([batch.features[c].reshape(len(ids), -1) for c in ("a", "b", "v")], 1)
        return [(i, x[k].tolist()) for k, i in enumerate(ids)]

    def check_rows(got):
        assert sorted(i for i, _ in got) == sorted(good)
        for i, values in got:
            np.testing.assert_allclose(values, good[i], rtol=1e-6)

    def errors(table):
        return [
            (json.loads(r)["id"], stage, reason)
            for r, stage, reason in zip(
                table.column("row").to_pylist(),
                table.column("stage").to_pylist(),
                table.column("reason").to_pylist(),
                strict=True,
            )
        ]

    def check_errors(got):
        assert sorted(i for i, _, _ in got) == sorted(bad)
        for i, stage, reason in got:
            assert stage == "validate"
            named = {c for c in ("a", "b", "v") if f"'{c}'" in reason}
            assert named == bad[i], (i, reason)

    with TestPipeline() as p:
        out = p | beam.Create(tables) | ValidateFeatures(layout, ["id"])
        assert_that(out.batches | "Rows" >> beam.FlatMap(rows), check_rows, label="Good")
        assert_that(out.errors | "Errors" >> beam.FlatMap(errors), check_errors, label="Bad")
        rejected = out.batches | beam.Map(lambda b: b.rows_rejected) | beam.CombineGlobally(sum)
        assert_that(rejected, lambda got: _equal(list(got), [len(bad)]), label="Rejected")


def _equal(got, expected):
    assert got == expected, got
