"""What happens after inference: the post-processing plan, built once and pickled to workers.

Plain dataclasses (pyarrow for the output schema), no Beam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyarrow as pa

from keras_batch_score.transforms.model.output_keys import SHADOW, member_key, std_key
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.model.tensors import TensorInfo
from keras_batch_score.transforms.postprocess.calibration import Calibration
from keras_batch_score.transforms.postprocess.class_outputs import LABELS
from keras_batch_score.transforms.postprocess.privacy import NoiseSpec

TOP_K_LABELS = "top_k_labels"
TOP_K_SCORES = "top_k_scores"


@dataclasses.dataclass(frozen=True)
class MemberRun:
    """A model to run: its name, how to load it, its ensemble weight or A/B share."""

    name: str
    spec: ModelSpec
    weight: float = 1.0
    model_id: str = ""


@dataclasses.dataclass(frozen=True)
class OutputColumn:
    """A model output (internal key) and the base column it is written to."""

    key: str
    column: str
    field: pa.Field


@dataclasses.dataclass(frozen=True)
class PostprocessPlan:
    """What happens after inference; built once at construction time, pickled to workers.

    Attributes:
        members: Models to run (one for a plain run; several for an ensemble or A/B).
        outputs: The model outputs, all members share them.
        method: Ensemble method, used when there are several members and no A/B split.
        keep_member_predictions: Also write ``prediction__<name>`` per member.
        calibration: Fitted calibration applied after the ensemble.
        clip_min: Lower bound of the final prediction.
        clip_max: Upper bound of the final prediction.
        target_mean: Inverse standardization ``y * target_std + target_mean``.
        target_std: See ``target_mean``.
        class_names: One name per class, for top-k labels.
        top_k: Number of labels in ``top_k_labels``.
        mc_samples: MC-dropout passes per batch (0: off).
        seed: Seed for MC dropout.
        ab_split: Per member name, the share of rows it scores (A/B); None: no split.
        id_columns: Columns hashed to route A/B rows.
        fallback: Model that scores batches on which a primary raises.
        ensemble_label: The ``model`` column value of ensemble-scored rows.
        noise: Calibrated noise added to the final predictions (keras_batch_score.transforms.postprocess.privacy).
        noise_key_columns: Columns whose hash keys each row's noise (ids or row locator).
        probability_columns: ``prob_<class>`` column names, one per class (keras_batch_score.transforms.postprocess.class_outputs).
        multi_label_thresholds: Per-class thresholds for the ``labels`` column.
        shadow: Model scored beside the released one (keras_batch_score.transforms.model.shadow).
    """

    members: tuple[MemberRun, ...]
    outputs: tuple[OutputColumn, ...]
    method: str = "mean"
    keep_member_predictions: bool = False
    calibration: Calibration | None = None
    clip_min: float | None = None
    clip_max: float | None = None
    target_mean: float | None = None
    target_std: float | None = None
    class_names: tuple[str, ...] | None = None
    top_k: int | None = None
    mc_samples: int = 0
    seed: int | None = None
    ab_split: tuple[tuple[str, float], ...] | None = None
    id_columns: tuple[str, ...] = ()
    fallback: MemberRun | None = None
    ensemble_label: str = ""
    noise: NoiseSpec | None = None
    noise_key_columns: tuple[str, ...] = ()
    probability_columns: tuple[str, ...] = ()
    multi_label_thresholds: tuple[float, ...] | None = None
    shadow: MemberRun | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1 and self.ab_split is None

    @property
    def emits_std(self) -> bool:
        return self.is_ensemble or self.mc_samples > 0

    def extra_columns(self) -> list[tuple[pa.Field, str]]:
        """Columns added after the base prediction columns: ``(field, internal key)``."""
        extra: list[tuple[pa.Field, str]] = []
        for out in self.outputs:
            if self.emits_std:
                extra.append(
                    (pa.field(f"{out.column}_std", _float_like(out.field.type)), std_key(out.key))
                )
        if self.keep_member_predictions and self.is_ensemble:
            for out in self.outputs:
                for m in self.members:
                    extra.append(
                        (
                            pa.field(f"{out.column}__{m.name}", out.field.type),
                            member_key(out.key, m.name),
                        )
                    )
        if self.top_k:
            extra.append((pa.field(TOP_K_LABELS, pa.list_(pa.string())), TOP_K_LABELS))
            extra.append((pa.field(TOP_K_SCORES, pa.list_(pa.float32())), TOP_K_SCORES))
        extra += [(pa.field(c, pa.float32()), c) for c in self.probability_columns]
        if self.multi_label_thresholds is not None:
            extra.append((pa.field(LABELS, pa.list_(pa.string())), LABELS))
        if self.shadow is not None:
            extra += [
                (pa.field(f"{o.column}_shadow", o.field.type), member_key(o.key, SHADOW))
                for o in self.outputs
            ]
        return extra

    def output_schema(self, base: pa.Schema) -> pa.Schema:
        """``base`` (ids, predictions, model) with the extra columns inserted before ``model``."""
        fields = [f for f in base if f.name != "model"]
        fields += [f for f, _ in self.extra_columns()]
        fields += [f for f in base if f.name == "model"]
        return pa.schema(fields)

    def output_names(self, base: Sequence[str]) -> tuple[str, ...]:
        return (*base, *(key for _, key in self.extra_columns()))


def _float_like(t: pa.DataType) -> pa.DataType:
    return pa.list_(pa.float32()) if pa.types.is_list(t) else pa.float32()


def output_columns(outputs: Sequence[TensorInfo]) -> tuple[OutputColumn, ...]:
    """The base prediction column of each model output (same naming as :mod:`keras_batch_score.transforms.io.output_tables`)."""
    from keras_batch_score.transforms.io.output_tables import output_fields

    return tuple(
        OutputColumn(info.name, field.name, field)
        for info, field in zip(outputs, output_fields(outputs), strict=True)
    )
