"""Binding a fitted preprocessing spec to the input schema and the model's inputs.

:func:`plan_preprocess` checks every feature's column and the shape of every
model input before any data is read, and gives the :class:`PreprocessPlan`
that :mod:`keras_batch_score.transforms.preprocess.apply` runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError, format_names
from keras_batch_score.transforms.features.layout import FeatureLayout, InputBinding
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.preprocess.spec import PreprocessSpec, load_spec, spec_source


@dataclasses.dataclass(frozen=True)
class ModelInputPlan:
    """Which features (in order) make one model input, and its per-row shape and dtype."""

    name: str
    features: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class PreprocessPlan:
    """A fitted spec bound to the input schema and the model's inputs."""

    spec: PreprocessSpec
    inputs: tuple[ModelInputPlan, ...]

    def layout(self) -> FeatureLayout:
        """The equivalent :class:`FeatureLayout` (source columns and widths per model input)."""
        bindings = []
        for mi in self.inputs:
            feats = [self.spec.feature(f) for f in mi.features]
            bindings.append(
                InputBinding(
                    mi.name,
                    tuple(f.column for f in feats),
                    tuple(f.out_size for f in feats),
                    mi.shape,
                    mi.dtype,
                )
            )
        return FeatureLayout(tuple(bindings))


_ALLOWED_COLUMN_TYPES = {
    "numeric": "numbers or lists of numbers",
    "categorical": "strings, bytes or integers",
    "text": "strings or bytes",
    "image": "bytes (encoded PNG/JPEG) or strings",
}


def _column_ok(ftype: str, t: pa.DataType) -> bool:
    stringy = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
    stringy = stringy or pa.types.is_large_binary(t)
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    if ftype == "numeric":
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            vt = t.value_type
            return pa.types.is_integer(vt) or pa.types.is_floating(vt)
        return numeric or pa.types.is_decimal(t)
    if ftype == "categorical":
        return stringy or pa.types.is_integer(t)
    return stringy


def check_columns(spec: PreprocessSpec, schema: pa.Schema) -> None:
    """Raises ConfigError if a feature's column is missing or has a type the feature cannot read."""
    for f in spec.features:
        if f.column not in schema.names:
            raise ConfigError(
                f"preprocessing feature {f.name!r} reads column {f.column!r}, which is not in the input; "
                f"columns are {format_names(schema.names)}"
            )
        t = schema.field(f.column).type
        if not _column_ok(f.type, t):
            raise ConfigError(
                f"preprocessing feature {f.name!r} ({f.type}) reads column {f.column!r} of type {t}; "
                f"expected {_ALLOWED_COLUMN_TYPES[f.type]}"
            )
        if f.type == "numeric" and pa.types.is_fixed_size_list(t) and t.list_size != f.width:
            raise ConfigError(
                f"preprocessing feature {f.name!r} expects {f.width} values per row (shape "
                f"{list(f.get('shape'))}), but column {f.column!r} holds {t.list_size}"
            )


def plan_preprocess(
    spec: PreprocessSpec, schema: pa.Schema, model_inputs: Sequence[TensorInfo]
) -> PreprocessPlan:
    """Binds ``spec`` to the input columns and the model's inputs; no data is read.

    Raises:
        ConfigError: if the spec still needs fitting, a column is missing or
            has the wrong type, or a model input's shape does not match what
            its features produce.
    """
    unfitted = spec.needs_fit()
    if unfitted:
        listing = "; ".join(f"{name}: {', '.join(m)}" for name, m in unfitted.items())
        raise ConfigError(
            f"the preprocessing spec still needs fitting ({listing}); run "
            "`batch-score fit-preprocess --input <training data> --spec <spec> --output fitted.yaml` "
            "and score with the fitted spec"
        )
    check_columns(spec, schema)
    names = [f.name for f in spec.features]
    if spec.inputs is not None:
        assembly = dict(spec.inputs)
    elif len(model_inputs) == 1:
        assembly = {model_inputs[0].name: tuple(names)}
    else:
        assembly = {info.name: (info.name,) for info in model_inputs}
        missing = [n for n in assembly if n not in names]
        if missing:
            raise ConfigError(
                f"the model has inputs {list(assembly)}; the preprocessing spec has no feature named "
                f"{missing} (name them, or map inputs to features with 'inputs:')"
            )
    model_names = [info.name for info in model_inputs]
    if sorted(assembly) != sorted(model_names):
        raise ConfigError(
            f"the preprocessing spec's inputs {sorted(assembly)} do not match the model's inputs "
            f"{sorted(model_names)}"
        )
    plans = []
    for info in model_inputs:
        if any(d is None for d in info.shape):
            raise ConfigError(
                f"model input {info.name!r} has an unknown dimension in shape {info.shape}; "
                "only fixed-size inputs can be fed"
            )
        shape = tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
        feats = [spec.feature(n) for n in assembly[info.name]]
        given = sum(f.out_size for f in feats)
        expected = int(math.prod(shape)) if shape else 1
        if given != expected:
            parts = ", ".join(f"{f.name} {list(f.out_shape)}" for f in feats)
            raise ConfigError(
                f"model input {info.name!r} expects shape {list(shape)} ({expected} values per row), "
                f"but the preprocessing spec gives {given}: {parts}"
            )
        plans.append(ModelInputPlan(info.name, tuple(f.name for f in feats), shape, info.dtype))
    return PreprocessPlan(spec, tuple(plans))


def plan_from_config(
    value: Any, schema: pa.Schema, model_inputs: Sequence[TensorInfo]
) -> PreprocessPlan | None:
    """The plan for the ``preprocess`` config value, or ``None`` when no spec is configured."""
    source = spec_source(value)
    return None if source is None else plan_preprocess(load_spec(source), schema, model_inputs)
