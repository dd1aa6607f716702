"""Feature layout: which input columns feed which model input.

The layout is planned once, at pipeline construction, from the input schema
and the model's inputs; a mismatch is a :class:`ConfigError` before any data
is read. Pure pyarrow, no Beam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError, format_names
from keras_batch_score.transforms.model.tensors import TensorInfo, is_string_dtype, resolve_shape


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


def is_numeric_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds one number per row (integer, float, bool, decimal)."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


def is_numeric_list_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds a list of numbers per row."""
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    ) and is_numeric_type(t.value_type)


def is_text_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds strings or bytes (dictionary-encoded too)."""
    if pa.types.is_dictionary(t):
        return is_text_type(t.value_type)
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
            usable = is_text_type if is_string_dtype(info.dtype) else is_numeric_type
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
            if not is_text_type(t):
                raise ConfigError(
                    f"model input {info.name!r} takes strings, but feature column {col!r} has type {t}; "
                    "feed it a string or binary column"
                )
            widths.append(1)
        elif is_numeric_type(t):
            widths.append(1)
        elif is_numeric_list_type(t):
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
