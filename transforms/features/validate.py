"""Vectorized per-row validation: model inputs from an Arrow table, and the rows that cannot be scored.

:func:`assemble_features` turns an Arrow table into model inputs with
numpy/pyarrow calls on whole columns, and splits off the rows that cannot be
scored (null, NaN/Inf, wrong list length) with a reason naming the column.
Pure numpy and pyarrow; the Beam wiring is in
:mod:`keras_batch_score.transforms.features.transforms`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keras_batch_score.transforms.core.aligned import aligned_empty
from keras_batch_score.transforms.core.arrow import invalid_utf8, one_array, readable_text
from keras_batch_score.transforms.core.errors import error_table
from keras_batch_score.transforms.features.layout import (
    FeatureLayout,
    InputBinding,
    is_numeric_type,
)
from keras_batch_score.transforms.model.tensors import is_string_dtype


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
        blocks: list[np.ndarray] = []
        for column, width in zip(binding.columns, binding.widths, strict=True):
            arr = one_array(table.column(column))
            if is_numeric_type(arr.type):
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
            blocks.append(block)
        out = interleave(blocks, n, np.dtype(binding.dtype))
        if out.dtype.kind == "f" and not _all_finite(out):
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


INTERLEAVE_ROWS = 4096
"""Rows per step of :func:`interleave`: a step's columns and rows stay in the CPU cache."""


def interleave(blocks: list[np.ndarray], n: int, dtype: np.dtype) -> np.ndarray:
    """``(n, sum of widths)`` C-ordered ``dtype`` array of ``(n, width)`` column blocks, side by side.

    Same values as writing each block into its columns, but several times
    faster on wide inputs: writing one column of a row-major array touches every
    row's cache line, so the rows are filled ``INTERLEAVE_ROWS`` at a time, and
    single columns go through a small transposed buffer. The result is
    cache-line aligned, so the model takes it without a copy.
    """
    widths = [b.shape[1] for b in blocks]
    out = aligned_empty((n, sum(widths)), dtype)
    step = max(1, min(INTERLEAVE_ROWS, n))
    if all(w == 1 for w in widths):
        buffer = np.empty((len(blocks), step), dtype=dtype)
        for start in range(0, n, step):
            stop = min(start + step, n)
            part = buffer[:, : stop - start]
            for i, block in enumerate(blocks):
                part[i] = block[start:stop, 0]
            out[start:stop] = part.T
        return out
    offsets = np.cumsum([0, *widths])
    for start in range(0, n, step):
        rows = out[start : start + step]
        for block, lo, hi in zip(blocks, offsets[:-1], offsets[1:], strict=True):
            rows[:, lo:hi] = block[start : start + step]
    return out


def _all_finite(values: np.ndarray) -> bool:
    """True when every value is finite; one summing pass, so a False needs a closer look.

    A NaN or infinity makes the sum non-finite; a sum that overflows only
    sends the caller to its exact per-row check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(values, axis=None)))


def _string_values(table: pa.Table, binding: InputBinding, n: int, flag: Any) -> np.ndarray:
    """``(n, width)`` object array of str/bytes for a string model input.

    Nulls and text that is not UTF-8 are row errors.
    """
    out = np.empty((n, binding.width), dtype=object)
    for offset, column in enumerate(binding.columns):
        arr = one_array(table.column(column))
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if arr.null_count:
            flag(column, np.asarray(arr.is_null()), f"feature {column!r} is null")
            arr = arr.fill_null(
                "" if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else b""
            )
        not_utf8 = invalid_utf8(arr)
        if not_utf8 is not None:
            flag(column, not_utf8, f"feature {column!r} is not UTF-8 text")
            arr = readable_text(arr)
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
