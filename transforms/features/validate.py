"""Feature layout and vectorized per-row validation.

The layout (which columns feed which model input) is planned once, at
pipeline construction, from the input schema and the model's inputs; a
mismatch is a :class:`ConfigError` before any data is read.

:func:`assemble_features` then turns an Arrow table into model inputs with
numpy/pyarrow calls on whole columns, and splits off the rows that cannot be
scored (null, NaN/Inf, wrong list length) with a reason naming the column.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import ConfigError, format_names
from keras_batch_score.transforms.model.load import TensorInfo, is_string_dtype, resolve_shape

ERRORS_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("row", pa.string()),
    ]
)


@dataclasses.dataclass(frozen=True)
class InputBinding:
    """Which input columns feed one model input.

    Attributes:
        name: Model input name.
        columns: Source columns, concatenated along the feature axis in this order.
        widths: Values per row each column contributes (1 for a scalar column).
        shape: Per-row shape of the model input (batch axis removed).
        dtype: numpy dtype name of the model input.
    """

    name: str
    columns: tuple[str, ...]
    widths: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: str

    @property
    def width(self) -> int:
        return sum(self.widths)


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """The bindings of every model input, in model order."""

    bindings: tuple[InputBinding, ...]

    @property
    def columns(self) -> list[str]:
        return [c for b in self.bindings for c in b.columns]

    def widths(self) -> dict[str, int]:
        return {b.name: b.width for b in self.bindings}


def _is_numeric(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


def _is_numeric_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    ) and _is_numeric(t.value_type)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def plan_layout(
    schema: pa.Schema,
    model_inputs: Sequence[TensorInfo],
    *,
    id_columns: Sequence[str] = (),
    feature_columns: Sequence[str] | None = None,
) -> FeatureLayout:
    """Decides which columns feed which model input.

    * One model input: the feature columns (default: every numeric column that
      is not an id column, in file order) are stacked side by side; list
      columns contribute their length. If the input's name is itself a column
      and no feature columns are given, that column is used.
    * Several (named) inputs: each input reads the column of the same name.

    Raises:
        ConfigError: naming the missing column, its wrong type, or the width
            that does not match the model's input shape.
    """
    names = schema.names
    for col in id_columns:
        if col not in names:
            raise ConfigError(
                f"id column {col!r} is not in the input schema; columns are {format_names(names)}"
            )
    if len(model_inputs) == 1:
        info = model_inputs[0]
        if feature_columns is None and info.name in names and info.name not in id_columns:
            columns = [info.name]
        elif feature_columns is not None:
            columns = list(feature_columns)
        else:
            usable = _is_text if is_string_dtype(info.dtype) else _is_numeric
            kind = "string" if is_string_dtype(info.dtype) else "numeric"
            columns = [n for n in names if n not in id_columns and usable(schema.field(n).type)]
            if not columns:
                raise ConfigError(
                    f"the input has no {kind} columns besides the id columns {list(id_columns)}; "
                    "pass --feature-columns"
                )
        return FeatureLayout((_bind(schema, info, columns),))
    if feature_columns is not None:
        unknown = sorted(set(feature_columns) - {i.name for i in model_inputs})
        if unknown:
            raise ConfigError(
                f"the model has named inputs {[i.name for i in model_inputs]}, each read from the column of the "
                f"same name; --feature-columns {unknown} match no input"
            )
    return FeatureLayout(tuple(_bind(schema, info, [info.name]) for info in model_inputs))


def _bind(schema: pa.Schema, info: TensorInfo, columns: Sequence[str]) -> InputBinding:
    """Binds columns to one model input of any fixed per-row shape.

    The columns' values are stacked side by side, ``(n, width)``, and reshaped to
    ``(n, *shape)``: a list column of ``T * F`` (or ``T``) values feeds an input of
    shape ``(T, F)`` (or ``(T, 1)``). String columns feed string inputs.
    """
    size = info.size
    if sum(d is None for d in info.shape) > 1:
        raise ConfigError(
            f"model input {info.name!r} has per-row shape {info.shape} with several unknown "
            "dimensions; only inputs with at most one unknown dimension can be fed from columns"
        )
    strings = is_string_dtype(info.dtype)
    widths: list[int] = []
    for col in columns:
        if col not in schema.names:
            raise ConfigError(
                f"feature column {col!r} (model input {info.name!r}) is not in the input schema; columns are {format_names(schema.names)}"
            )
        t = schema.field(col).type
        if strings:
            if not _is_text(t):
                raise ConfigError(
                    f"model input {info.name!r} takes strings, but feature column {col!r} has type {t}; "
                    "feed it a string or binary column"
                )
            widths.append(1)
        elif _is_numeric(t):
            widths.append(1)
        elif _is_numeric_list(t):
            if pa.types.is_fixed_size_list(t):
                widths.append(t.list_size)
            elif size is None:
                raise ConfigError(
                    f"model input {info.name!r} has per-row shape {info.shape} with an unknown length, "
                    f"and feature column {col!r} is a variable-length list: store it as a fixed-size "
                    "list (pa.list_(type, n)) or save the model with a fixed input length"
                )
            elif len(columns) == 1:
                widths.append(size)
            else:
                raise ConfigError(
                    f"feature column {col!r} is a variable-length list; it can only feed a model input on its own"
                )
        else:
            raise ConfigError(
                f"feature column {col!r} has type {t}; features must be numeric or lists of numbers, "
                "or strings for a model input of dtype string "
                "(or use a preprocessing spec for strings, categories and images)"
            )
    total = sum(widths)
    if size is None:
        shape = resolve_shape(info.shape, total)
        if shape is None:
            raise ConfigError(
                f"model input {info.name!r} (shape {info.shape}) cannot take the {total} values per row "
                f"of the feature columns {_cut(columns)}"
            )
    elif total != size:
        raise ConfigError(
            f"model input {info.name!r} (shape {info.shape}) expects {size} values per row, but the feature "
            f"columns give {total}: {_cut(columns)}; set --feature-columns to the model's features in training order"
        )
    else:
        shape = tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
    return InputBinding(info.name, tuple(columns), tuple(widths), shape, info.dtype)


def _cut(values: Sequence[str], limit: int = 20) -> str:
    shown = list(values[:limit])
    more = len(values) - len(shown)
    return f"{shown}" + (f" … and {more} more" if more > 0 else "")


@dataclasses.dataclass
class Assembled:
    """Result of :func:`assemble_features` on one table."""

    features: dict[str, np.ndarray]
    good: np.ndarray | None  # boolean row mask, None when every row is good
    problems: dict[str, tuple[np.ndarray, np.ndarray]]  # column -> (bad row indices, reasons)

    @property
    def num_bad(self) -> int:
        return 0 if self.good is None else int((~self.good).sum())


def assemble_features(table: pa.Table, layout: FeatureLayout) -> Assembled:
    """Builds the model inputs of ``table`` and flags rows that cannot be scored.

    Every check is a whole-column operation; Python loops run only over
    columns, and over rejected rows when their reasons are formatted.
    """
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    problems: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def flag(column: str, mask: np.ndarray, reasons: np.ndarray | str) -> None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        bad[idx] = True
        texts = (
            np.full(idx.size, reasons, dtype=object) if isinstance(reasons, str) else reasons[idx]
        )
        problems.setdefault(column, []).append((idx, texts))

    features: dict[str, np.ndarray] = {}
    for binding in layout.bindings:
        if is_string_dtype(binding.dtype):
            out = _string_values(table, binding, n, flag)
            features[binding.name] = out.reshape((n, *binding.shape))
            continue
        integer = np.dtype(binding.dtype).kind in "iu"
        out = np.empty((n, binding.width), dtype=binding.dtype)
        offset = 0
        for column, width in zip(binding.columns, binding.widths, strict=True):
            arr = table.column(column)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if _is_numeric(arr.type):
                if arr.null_count:
                    flag(column, np.asarray(arr.is_null()), f"feature {column!r} is null")
                    arr = arr.fill_null(0)
                if pa.types.is_decimal(arr.type):
                    arr = arr.cast(pa.float64())
                block = arr.to_numpy(zero_copy_only=False).reshape(n, 1)
            else:
                block = _list_values(arr, column, width, flag)
            if integer:
                block = _integral_values(block, column, binding, flag)
            out[:, offset : offset + width] = block
            offset += width
        if out.dtype.kind == "f":
            nonfinite = ~np.isfinite(out)
            rows = nonfinite.any(axis=1)
            if rows.any():
                offset = 0
                for column, width in zip(binding.columns, binding.widths, strict=True):
                    segment = nonfinite[:, offset : offset + width].any(axis=1)
                    if segment.any():
                        flag(
                            column,
                            segment,
                            _nonfinite_reasons(column, out[:, offset : offset + width], width),
                        )
                    offset += width
        features[binding.name] = out.reshape((n, *binding.shape))

    merged = {
        c: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
        for c, ps in problems.items()
    }
    if not bad.any():
        return Assembled(features, None, merged)
    good = ~bad
    return Assembled({k: v[good] for k, v in features.items()}, good, merged)


def _string_values(table: pa.Table, binding: InputBinding, n: int, flag: Any) -> np.ndarray:
    """``(n, width)`` object array of str/bytes for a string model input; nulls are row errors."""
    out = np.empty((n, binding.width), dtype=object)
    for offset, column in enumerate(binding.columns):
        arr = table.column(column)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if arr.null_count:
            flag(column, np.asarray(arr.is_null()), f"feature {column!r} is null")
            arr = arr.fill_null(
                "" if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else b""
            )
        out[:, offset] = arr.to_numpy(zero_copy_only=False)
    return out


def _list_values(arr: pa.Array, column: str, width: int, flag: Any) -> np.ndarray:
    """``(n, width)`` values of a list column: int64 for integer lists without nulls, else float64."""
    n = len(arr)
    lengths = pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False)
    wrong = lengths != width
    if wrong.any():
        reasons = np.empty(n, dtype=object)
        for i in np.flatnonzero(wrong):
            length = int(lengths[i])
            reasons[i] = (
                f"feature {column!r} is null"
                if length < 0
                else f"feature {column!r} has {length} values, expected {width}"
            )
        flag(column, wrong, reasons)
    ok = ~wrong
    if not ok.any():
        return np.zeros((n, width), dtype=np.float64)
    good_lists = arr.filter(pa.array(ok)) if wrong.any() else arr
    flat = good_lists.flatten()
    if flat.null_count or not (pa.types.is_integer(flat.type) or pa.types.is_boolean(flat.type)):
        flat = flat.cast(pa.float64()).fill_null(np.nan)
    good = flat.to_numpy(zero_copy_only=False).reshape(-1, width)
    if not wrong.any():
        return good
    values = np.zeros((n, width), dtype=good.dtype)
    values[ok] = good
    return values


def _integral_values(
    block: np.ndarray, column: str, binding: InputBinding, flag: Any
) -> np.ndarray:
    """Checks that values fed to an integer model input are integers in the dtype's range.

    Rows holding a fraction, NaN or an out-of-range value are flagged (a float
    would otherwise be truncated, and NaN become the dtype's minimum, silently);
    their cells are zeroed so that the cast is clean.
    """
    if block.dtype.kind == "b":
        return block
    limits = np.iinfo(np.dtype(binding.dtype))
    if block.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            fraction = ~np.isfinite(block) | (block != np.floor(block))
            outside = ~fraction & ((block < limits.min) | (block > limits.max))
    else:
        fraction = np.zeros(block.shape, dtype=bool)
        outside = (block < limits.min) | (block > limits.max)
    bad = fraction | outside
    rows = bad.any(axis=1)
    if not rows.any():
        return block
    reasons = np.empty(len(block), dtype=object)
    width = block.shape[1]
    for i in np.flatnonzero(rows):
        j = int(np.flatnonzero(bad[i])[0])
        value = _number_text(block[i, j])
        where = "" if width == 1 else f" at position {j}"
        if fraction[i, j]:
            reasons[i] = (
                f"column {column!r} value {value}{where} is not an integer "
                f"(model input {binding.name!r} is {binding.dtype})"
            )
        else:
            reasons[i] = (
                f"column {column!r} value {value}{where} is out of range for model input "
                f"{binding.name!r} ({binding.dtype}: {limits.min}..{limits.max})"
            )
    flag(column, rows, reasons)
    return np.where(bad, 0, block)


def _number_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return str(int(v)) if v.is_integer() else repr(v)
    return str(int(value))


def _nonfinite_reasons(column: str, block: np.ndarray, width: int) -> np.ndarray:
    reasons = np.empty(len(block), dtype=object)
    for i in np.flatnonzero(~np.isfinite(block).all(axis=1)):
        row = block[i]
        if width == 1:
            v = row[0]
            what = "NaN or null" if math.isnan(v) else ("Inf" if v > 0 else "-Inf")
            reasons[i] = f"feature {column!r} is {what}"
        else:
            reasons[i] = (
                f"feature {column!r} contains NaN, null or Inf at position {int(np.flatnonzero(~np.isfinite(row))[0])}"
            )
    return reasons


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 64 else f"<{len(value)} bytes>"
    return value


def error_table(
    table: pa.Table,
    rows: np.ndarray,
    stage: str,
    columns: Sequence[str | None],
    reasons: Sequence[str],
) -> pa.Table:
    """The errors-output records for ``rows`` of ``table``: stage, column, reason and the row as JSON.

    Per-row Python here only touches rejected rows.
    """
    records = table.take(pa.array(rows, type=pa.int64())).to_pylist() if len(rows) else []
    row_json = [json.dumps(_jsonable(r), default=str, sort_keys=False) for r in records]
    return pa.table(
        {
            "stage": pa.array([stage] * len(rows), pa.string()),
            "column": pa.array(list(columns), pa.string()),
            "reason": pa.array(list(reasons), pa.string()),
            "row": pa.array(row_json, pa.string()),
        },
        schema=ERRORS_SCHEMA,
    )


def rejected_rows_table(
    table: pa.Table, problems: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> pa.Table:
    """One error record per rejected row; a row with several problems lists them all."""
    per_row: dict[int, list[tuple[str, str]]] = {}
    for column, (idx, texts) in problems.items():
        for i, text in zip(idx.tolist(), texts.tolist(), strict=True):
            per_row.setdefault(i, []).append((column, text))
    rows = np.array(sorted(per_row), dtype=np.int64)
    first_columns = [per_row[i][0][0] for i in rows.tolist()]
    reasons = ["; ".join(t for _, t in per_row[i]) for i in rows.tolist()]
    return error_table(table, rows, "validate", first_columns, reasons)


class ValidateDoFn(beam.DoFn):
    """Arrow table -> :class:`ScoringBatch` of the good rows, plus an errors table on ``errors``."""

    ERRORS = "errors"

    def __init__(self, layout: FeatureLayout, keep_columns: Sequence[str]) -> None:
        self._layout = layout
        self._keep = list(keep_columns)

    def setup(self) -> None:
        self._rejected = beam.metrics.Metrics.counter("keras_batch_score", "rows_rejected")

    def process(self, table: pa.Table):
        assembled = assemble_features(table, self._layout)
        kept = table.select(self._keep)
        if assembled.good is not None:
            self._rejected.inc(assembled.num_bad)
            yield pvalue.TaggedOutput(self.ERRORS, rejected_rows_table(table, assembled.problems))
            kept = kept.filter(pa.array(assembled.good))
        yield ScoringBatch(table=kept, features=assembled.features, rows_rejected=assembled.num_bad)


class ValidateFeatures(beam.PTransform):
    """Arrow tables -> (ScoringBatch of scorable rows, errors tables).

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors``.
    """

    def __init__(self, layout: FeatureLayout, keep_columns: Sequence[str]) -> None:
        super().__init__()
        if not layout.bindings:
            raise ValueError("layout has no model inputs")
        self._layout = layout
        self._keep = list(keep_columns)

    def expand(self, tables: beam.PCollection) -> pvalue.DoOutputsTuple:
        return tables | "AssembleAndCheck" >> beam.ParDo(
            ValidateDoFn(self._layout, self._keep)
        ).with_output_types(ScoringBatch, errors=pa.Table).with_outputs(
            ValidateDoFn.ERRORS, main="batches"
        )
