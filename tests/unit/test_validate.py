"""Feature layout planning and vectorized validation (pure functions, no Beam)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from keras_batch_score.transforms.core.aligned import is_aligned
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.features.layout import plan_layout
from keras_batch_score.transforms.features.validate import (
    assemble_features,
    interleave,
    rejected_rows_table,
)
from keras_batch_score.transforms.model.tensors import TensorInfo


def _schema(**types: pa.DataType) -> pa.Schema:
    return pa.schema(list(types.items()))


def test_default_features_are_numeric_non_id_columns_in_file_order():
    schema = _schema(id=pa.int64(), b=pa.float32(), name=pa.string(), a=pa.int32())
    layout = plan_layout(schema, [TensorInfo("x", (2,), "float32")], id_columns=["id"])
    assert layout.columns == ["b", "a"]
    assert layout.widths() == {"x": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_columns": ["a", "zz"]}, r"feature column 'zz' .* not in the input schema"),
        ({"feature_columns": ["a"]}, r"expects 2 values per row, but the feature columns give 1"),
        ({"feature_columns": ["a", "name"]}, r"'name' has type string"),
        ({"id_columns": ["nope"]}, r"id column 'nope' is not in the input schema"),
    ],
)
def test_layout_errors_name_the_problem(kwargs, message):
    schema = _schema(id=pa.int64(), a=pa.float32(), b=pa.float32(), name=pa.string())
    with pytest.raises(ConfigError, match=message):
        plan_layout(schema, [TensorInfo("x", (2,), "float32")], **kwargs)


def test_named_inputs_bind_columns_by_name_including_list_columns():
    schema = _schema(id=pa.int64(), a=pa.float64(), emb=pa.list_(pa.float32()))
    layout = plan_layout(
        schema, [TensorInfo("a", (1,), "float32"), TensorInfo("emb", (3,), "float32")]
    )
    table = pa.table(
        {
            "id": [1, 2],
            "a": [0.5, 1.5],
            "emb": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.float32())),
        }
    )
    got = assemble_features(table, layout)
    assert got.good is None
    np.testing.assert_array_equal(got.features["a"], np.array([[0.5], [1.5]], np.float32))
    np.testing.assert_array_equal(got.features["emb"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_bad_rows_are_split_off_with_reasons():
    table = pa.table(
        {
            "id": [10, 11, 12, 13, 14],
            "a": pa.array([1.0, None, 3.0, np.nan, 5.0], pa.float64()),
            "b": pa.array([1.0, 2.0, np.inf, 4.0, -np.inf], pa.float32()),
        }
    )
    layout = plan_layout(table.schema, [TensorInfo("x", (2,), "float32")], id_columns=["id"])
    got = assemble_features(table, layout)
    np.testing.assert_array_equal(got.good, [True, False, False, False, False])
    np.testing.assert_array_equal(got.features["x"], np.array([[1.0, 1.0]], np.float32))
    errors = rejected_rows_table(table, got.problems).to_pylist()
    by_id = {json.loads(e["row"])["id"]: e for e in errors}
    assert sorted(by_id) == [11, 12, 13, 14]
    assert by_id[11]["column"] == "a" and by_id[11]["reason"] == "feature 'a' is null"
    assert by_id[12]["column"] == "b" and by_id[12]["reason"] == "feature 'b' is Inf"
    assert by_id[13]["reason"] == "feature 'a' is NaN or null"
    assert by_id[14]["reason"] == "feature 'b' is -Inf"
    assert json.loads(by_id[12]["row"]) == {"id": 12, "a": 3.0, "b": "Infinity"}
    assert all(e["stage"] == "validate" for e in errors)


def test_wrong_length_and_null_lists_are_rejected():
    table = pa.table(
        {"emb": pa.array([[1.0, 2.0], [1.0], None, [3.0, None]], pa.list_(pa.float32()))}
    )
    layout = plan_layout(table.schema, [TensorInfo("emb", (2,), "float32")])
    got = assemble_features(table, layout)
    np.testing.assert_array_equal(got.good, [True, False, False, False])
    reasons = {int(i): r for i, r in zip(*got.problems["emb"], strict=True)}
    assert reasons[1] == "feature 'emb' has 1 values, expected 2"
    assert reasons[2] == "feature 'emb' is null"
    assert reasons[3].startswith("feature 'emb' contains NaN, null or Inf at position 1")


def test_row_with_several_problems_lists_them_all():
    table = pa.table({"a": pa.array([None], pa.float32()), "b": pa.array([np.nan], pa.float32())})
    layout = plan_layout(table.schema, [TensorInfo("x", (2,), "float32")])
    (error,) = rejected_rows_table(table, assemble_features(table, layout).problems).to_pylist()
    assert error["column"] == "a"
    assert error["reason"] == "feature 'a' is null; feature 'b' is NaN or null"


@pytest.mark.parametrize("rows", [0, 1, 4095, 4096, 4097, 10_000])
@pytest.mark.parametrize("widths", [[1, 1, 1], [1, 3, 1, 2], [5]])
def test_interleave_matches_writing_each_block_into_its_columns(rows, widths):
    rng = np.random.default_rng(rows + len(widths))
    blocks = [rng.normal(size=(rows, w)) for w in widths]  # float64, cast into float32
    expected = np.empty((rows, sum(widths)), np.float32)
    offset = 0
    for block in blocks:
        expected[:, offset : offset + block.shape[1]] = block
        offset += block.shape[1]
    got = interleave(blocks, rows, np.dtype(np.float32))
    assert got.dtype == np.float32 and is_aligned(got)  # the model takes it without a copy
    np.testing.assert_array_equal(got, expected)


def test_wide_inputs_flag_every_nonfinite_row_even_when_the_sum_overflows():
    n, names = 9000, [f"c{i}" for i in range(6)]
    columns = {c: np.full(n, 3e38, np.float32) for c in names}  # finite, but they sum to inf
    columns["c4"][[0, 4096, 8999]] = [np.nan, np.inf, -np.inf]
    table = pa.table(columns)
    layout = plan_layout(table.schema, [TensorInfo("x", (6,), "float32")])
    got = assemble_features(table, layout)
    assert np.flatnonzero(~got.good).tolist() == [0, 4096, 8999]
    assert list(got.problems) == ["c4"]
    assert np.isfinite(got.features["x"]).all() and got.features["x"].shape == (n - 3, 6)
    clean = assemble_features(table.set_column(4, "c4", pa.array(np.ones(n, np.float32))), layout)
    assert clean.good is None  # an overflowing sum alone rejects nothing


def _raw_strings(values: list[bytes | None], large: bool = False) -> pa.Array:
    """A string array of exactly these bytes (pyarrow checks none of them)."""
    offsets = np.cumsum([0, *(len(v or b"") for v in values)]).astype(
        np.int64 if large else np.int32
    )
    valid = pa.array([v is not None for v in values]).buffers()[1]
    buffers = [valid, pa.py_buffer(offsets), pa.py_buffer(b"".join(v or b"" for v in values))]
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(values), buffers)


@pytest.mark.parametrize("large", [False, True])
def test_text_that_is_not_utf8_is_found_row_by_row_and_shown_escaped(large):
    from keras_batch_score.transforms.core.arrow import invalid_utf8, readable_text

    arr = _raw_strings([b"ok", None, b"caf\xe9", "h\u00e9".encode(), b"\xff\xfe", b""], large)
    np.testing.assert_array_equal(invalid_utf8(arr), [False, False, True, False, True, False])
    assert readable_text(arr).to_pylist() == ["ok", None, "caf\\xe9", "h\u00e9", "\\xff\\xfe", ""]
    assert readable_text(arr).type == arr.type
    # a slice is looked at from its own offset
    np.testing.assert_array_equal(invalid_utf8(arr.slice(3, 2)), [False, True])
    valid = arr.slice(0, 2)
    assert invalid_utf8(valid) is None and readable_text(valid) is valid
    assert invalid_utf8(pa.array([b"\xff"], pa.binary())) is None  # bytes need not be text
