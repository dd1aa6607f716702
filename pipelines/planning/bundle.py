"""The features of a model bundle (``batch-score package``), checked against the model's inputs."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.model import bundle as bm
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.preprocess.plan import plan_preprocess
from keras_batch_score.transforms.preprocess.spec import PreprocessSpec


def plan_bundle_features(
    model: LoadedModel,
    feature_columns: Sequence[str] | None,
    id_columns: Sequence[str],
    preprocess_spec: PreprocessSpec | None = None,
) -> tuple[bm.Feature, ...]:
    """The bundle's features in model order, checked against the model's inputs.

    Raises:
        ConfigError: for columns that do not fill the model's input width, a
            single-input model without a declared feature list, or overlaps.
    """
    if feature_columns is not None:
        dupes = sorted({c for c in feature_columns if list(feature_columns).count(c) > 1})
        if dupes:
            raise ConfigError(f"--feature-columns lists {bm.cut(dupes)} more than once")
        overlap = sorted(set(feature_columns) & set(id_columns))
        if overlap:
            raise ConfigError(f"columns {bm.cut(overlap)} are both id and feature columns")
    if preprocess_spec is not None:
        if feature_columns is not None:
            raise ConfigError(
                "--preprocess defines the features (its columns, in its order); drop --feature-columns"
            )
        return _preprocess_features(model, preprocess_spec)
    if len(model.inputs) == 1:
        info = model.inputs[0]
        if feature_columns is None:
            raise ConfigError(
                f"the model has one input ({info.name!r}, {info.width or info.shape} values per row), "
                "which cannot tell which column is which: pass --feature-columns in training order"
            )
        if info.width is None:
            raise ConfigError(
                f"model input {info.name!r} has per-row shape {info.shape}: feed it through --preprocess"
            )
        n = len(feature_columns)
        if n == info.width:
            return tuple(bm.Feature(c, info.dtype, info.name, 1) for c in feature_columns)
        if n == 1:  # one list column holds the whole input
            return (bm.Feature(feature_columns[0], info.dtype, info.name, info.width),)
        raise ConfigError(
            f"model input {info.name!r} takes {info.width} values per row, but --feature-columns "
            f"lists {n}: {bm.cut(list(feature_columns))}; list the model's features in training order"
        )
    names = [info.name for info in model.inputs]
    if feature_columns is not None and sorted(feature_columns) != sorted(names):
        raise ConfigError(
            f"the model has named inputs {bm.cut(names)}, each read from the column of the same name; "
            f"--feature-columns {bm.cut(list(feature_columns))} must list exactly those (or leave it out)"
        )
    features = []
    for info in model.inputs:
        if info.width is None:
            raise ConfigError(
                f"model input {info.name!r} has per-row shape {info.shape}: feed it through --preprocess"
            )
        features.append(bm.Feature(info.name, info.dtype, info.name, info.width))
    return tuple(features)


def _preprocess_features(model: LoadedModel, spec: PreprocessSpec) -> tuple[bm.Feature, ...]:
    """Columns a preprocessing spec reads, checked against the model on a schema the spec implies."""
    fields = []
    for f in spec.features:
        if f.type == "numeric":
            t = pa.float64() if f.width == 1 else pa.list_(pa.float64(), f.width)
        else:
            t = pa.binary() if f.type == "image" else pa.string()
        fields.append(pa.field(f.column, t))
    schema = pa.schema(list({fl.name: fl for fl in fields}.values()))
    plan = plan_preprocess(spec, schema, model.inputs)
    out: dict[str, bm.Feature] = {}
    for mi in plan.inputs:
        for name in mi.features:
            f = spec.feature(name)
            out.setdefault(f.column, bm.Feature(f.column, None, mi.name, f.width))
    return tuple(out.values())
