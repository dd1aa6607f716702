"""Drift planning: the reference profile checked against the input schema and the model.

:func:`plan_drift` loads the profile and gives the :class:`DriftPlan`: one
:class:`Target` per profiled column, binned like the reference, plus the
thresholds. Nothing here reads the scored data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from keras_batch_score.transforms.core.errors import format_names
from keras_batch_score.transforms.drift import metrics as dm
from keras_batch_score.transforms.drift.profile_format import (
    CATEGORICAL,
    NUMERIC,
    ColumnStats,
    NumericStats,
    Profile,
    ProfileError,
    load_profile,
)
from keras_batch_score.transforms.model.tensors import TensorInfo

FEATURE = "feature"


PREDICTION = "prediction"


@dataclasses.dataclass(frozen=True)
class Target:
    """One profiled column and where its values come from in a batch.

    Attributes:
        name: Name in the profile and in the report.
        source: ``feature`` (a table column) or ``prediction`` (a model output).
        column: Table column, or model output name for predictions.
        index: Position in a vector-valued prediction, else None.
        kind: ``numeric`` or ``categorical``.
        edges: Numeric bin edges.
        values: Categorical top values.
        reference: The profile entry it is compared with when that differs from
            ``name`` (a shadow model's prediction is compared with the reference
            prediction, see :func:`with_shadow_targets`).
    """

    name: str
    source: str
    column: str
    index: int | None
    kind: str
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    reference: str = ""

    @property
    def num_slots(self) -> int:
        return len(self.edges) + 1 if self.kind == NUMERIC else len(self.values) + 1


def prediction_columns(outputs: Sequence[TensorInfo]) -> dict[str, tuple[str, int | None]]:
    """Profiled prediction names -> (model output name, position or None).

    Names follow the predictions file: ``prediction`` for a single output,
    ``prediction_<output>`` for several; a vector output of width k gives
    ``<name>[0]`` ... ``<name>[k-1]``. Outputs that are not 1-D are skipped.
    """
    out: dict[str, tuple[str, int | None]] = {}
    for info in outputs:
        base = "prediction" if len(outputs) == 1 else f"prediction_{info.name}"
        width = info.width
        if width == 1:
            out[base] = (info.name, None)
        elif width is not None:
            for j in range(width):
                out[f"{base}[{j}]"] = (info.name, j)
    return out


def target_for(
    name: str, source: str, column: str, index: int | None, stats: ColumnStats
) -> Target:
    """The :class:`Target` binning ``column`` like ``stats``."""
    if isinstance(stats, NumericStats):
        return Target(name, source, column, index, NUMERIC, edges=stats.edges)
    return Target(name, source, column, index, CATEGORICAL, values=stats.values)


@dataclasses.dataclass(frozen=True)
class DriftPlan:
    """A loaded, checked reference profile and what to accumulate while scoring."""

    profile: Profile
    profile_path: str
    targets: tuple[Target, ...]
    thresholds: dm.Thresholds

    @property
    def feature_columns(self) -> list[str]:
        """Input columns the drift step reads (they must reach the scored batches)."""
        return [t.column for t in self.targets if t.source == FEATURE]


def plan_drift(
    profile_path: str,
    schema: pa.Schema,
    outputs: Sequence[TensorInfo],
    *,
    thresholds: Sequence[str] = (),
    drift_share: float = dm.DEFAULT_DRIFT_SHARE,
    reserved: Sequence[str] = (),
) -> DriftPlan:
    """Loads the profile and checks it against the input schema and the model outputs.

    Args:
        profile_path: The profile JSON.
        schema: Input schema of the scoring job.
        outputs: The model's outputs.
        thresholds: ``metric=value`` / ``feature:metric=value`` overrides.
        drift_share: Dataset-level drift share.
        reserved: Output column names an input column must not shadow.

    Raises:
        ProfileError: if the profile is missing, invalid, or names a column the
            input does not have (or has with an incompatible type).
    """
    profile = load_profile(profile_path)
    parsed = dm.parse_thresholds(thresholds, drift_share)
    targets: list[Target] = []
    for name, stats in profile.features.items():
        if name not in schema.names:
            raise ProfileError(
                f"reference profile {profile_path} describes column {name!r}, which is not in the input "
                f"(columns: {format_names(schema.names)}); profile the same kind of data you score"
            )
        if name in reserved:
            raise ProfileError(
                f"profiled column {name!r} has the name of an output column; rename it in the input"
            )
        t = schema.field(name).type
        numeric_ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        if isinstance(stats, NumericStats) and not numeric_ok:
            raise ProfileError(
                f"reference profile {profile_path}: column {name!r} is numeric in the profile but has type {t} in the input"
            )
        targets.append(target_for(name, FEATURE, name, None, stats))
    available = prediction_columns(outputs)
    for name, stats in profile.predictions.items():
        if name not in available:
            raise ProfileError(
                f"reference profile {profile_path} describes prediction {name!r}, but this model's prediction "
                f"columns are {format_names(sorted(available))}; profile with the same model (batch-score profile --model)"
            )
        output, index = available[name]
        targets.append(target_for(name, PREDICTION, output, index, stats))
    unknown = sorted(set(parsed.per_feature) - {t.name for t in targets})
    if unknown:
        raise ProfileError(
            f"drift thresholds name {unknown}, which the reference profile does not describe"
        )
    return DriftPlan(profile, profile_path, tuple(targets), parsed)


def with_shadow_targets(plan: DriftPlan, shadow_key: Mapping[str, str]) -> DriftPlan:
    """``plan`` plus, per profiled prediction, the shadow model's same output on the same bins.

    ``prediction`` gives ``prediction_shadow`` (``prediction[1]`` gives
    ``prediction_shadow[1]``), compared with the reference's ``prediction``
    and reported under ``shadow_predictions`` in ``drift.json`` (not counted
    in ``prediction_drift_detected``).

    Args:
        plan: The drift plan.
        shadow_key: Model output name -> the key of the shadow model's output in the batches.
    """
    extra = []
    for t in plan.targets:
        if t.source != PREDICTION or t.column not in shadow_key:
            continue
        base, bracket, rest = t.name.partition("[")
        name = f"{base}_shadow{bracket}{rest}"
        extra.append(
            dataclasses.replace(t, name=name, column=shadow_key[t.column], reference=t.name)
        )
    return dataclasses.replace(plan, targets=(*plan.targets, *extra))


def plan_drift_from_config(
    config: Any, schema: pa.Schema, outputs: Sequence[TensorInfo], output_columns: Sequence[str]
) -> DriftPlan | None:
    """The scoring job's drift plan, or None without ``reference_profile`` (checked at plan time)."""
    if not getattr(config, "reference_profile", None):
        return None
    return plan_drift(
        config.reference_profile,
        schema,
        outputs,
        thresholds=config.drift_thresholds,
        drift_share=config.drift_share,
        reserved=[c for c in output_columns if c not in config.id_columns],
    )


def kept_columns(id_columns: Sequence[str], plan: DriftPlan | None) -> list[str]:
    """Columns the scored batches keep: the id columns plus the profiled input columns."""
    extra = plan.feature_columns if plan is not None else []
    return list(dict.fromkeys([*id_columns, *extra]))
