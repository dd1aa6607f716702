"""After inference: ensembles, calibration, clipping, labels, uncertainty, A/B routing, fallback.

The numeric work is pure numpy (:mod:`keras_batch_score.transforms.postprocess.ensemble`,
:mod:`keras_batch_score.transforms.postprocess.calibration` and the functions below); the Beam pieces are
thin wrappers:

* :class:`MemberModelHandler` scores one named model and stores its outputs
  under member keys (``<output>__<member>``), optionally with MC-dropout
  mean and std computed inside the handler.
* :class:`ScoreModels` chains one ``RunInference`` per ensemble member over
  the same batches (``Model[name]``; no shuffle, no join), or routes rows to
  the A/B arms, and sends the rows on which a model raised or gave NaN/Inf
  to the fallback model or to the errors output.
* :class:`Postprocess` turns member outputs into the final columns:
  ensemble -> calibrate -> inverse standardization -> clip -> top-k; rows
  whose final prediction is NaN/Inf go to errors (stage ``postprocess``).

Clipping runs after inverse standardization (not before, as a first sketch
had it) so that ``--clip-min 0`` means "no negative predictions" in the
target's own units.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from keras_batch_score.transforms.core.batch import ScoringBatch, drop_rows, take_rows
from keras_batch_score.transforms.core.errors import ModelError
from keras_batch_score.transforms.features.validate import error_table
from keras_batch_score.transforms.model.handler import (
    FailedRows,
    KerasModelHandler,
    failed_rows_to_errors,
    run_model,
)
from keras_batch_score.transforms.model.load import LoadedModel, ModelSpec, TensorInfo
from keras_batch_score.transforms.model.row_failures import nonfinite_rows, output_subjects
from keras_batch_score.transforms.postprocess import ensemble
from keras_batch_score.transforms.postprocess.calibration import Calibration
from keras_batch_score.transforms.postprocess.class_outputs import LABELS, class_matrix, multi_label
from keras_batch_score.transforms.postprocess.privacy import NoiseSpec, add_noise, row_keys

_LOG = logging.getLogger("keras_batch_score")

STD = "std"
SHADOW = "shadow"  # member name of the shadow model (keras_batch_score.transforms.model.shadow)
TOP_K_LABELS = "top_k_labels"
TOP_K_SCORES = "top_k_scores"
_MC_MAX_ROWS_PER_CALL = 65536


def member_key(output: str, member: str | None) -> str:
    """Internal prediction key of a member's output (``output`` itself for no member)."""
    return output if member is None else f"{output}__{member}"


def std_key(output: str) -> str:
    return f"{output}__{STD}"


# --------------------------------------------------------------------------- the plan


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


# --------------------------------------------------------------------------- numeric post-processing


def top_k(probs: np.ndarray, k: int, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely classes of each row, most likely first.

    Args:
        probs: ``(n, c)`` class probabilities, or ``(n,)`` positive-class
            probabilities of a binary model (read as ``[1 - p, p]``).
        k: Number of classes to return (at most ``c``).
        class_names: ``c`` names in output order.

    Returns:
        ``(labels, scores)``, both ``(n, min(k, c))``; ties go to the lower class index.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.shape[1] != len(class_names):
        raise ValueError(
            f"the model outputs {p.shape[1]} classes, the class names file lists {len(class_names)}"
        )
    k = min(k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    names = np.asarray(class_names, dtype=object)
    return names[order], np.take_along_axis(p, order, axis=1)


def _value_transforms(value: np.ndarray, plan: PostprocessPlan) -> np.ndarray:
    """Calibration, inverse standardization and clipping (the shadow model's outputs get these too)."""
    if plan.calibration is not None:
        value = plan.calibration.apply(value).astype(np.float32)
    if plan.target_std is not None:
        value = value * np.float32(plan.target_std) + np.float32(plan.target_mean)
    if plan.clip_min is not None or plan.clip_max is not None:
        value = np.clip(value, plan.clip_min, plan.clip_max)
    return np.asarray(value, dtype=np.float32)


def postprocess_predictions(
    predictions: Mapping[str, np.ndarray],
    plan: PostprocessPlan,
    keys: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Member/raw outputs of one batch -> the final prediction arrays, keyed like the output columns.

    Batches scored by a single model (a plain run, an A/B arm or the
    fallback) have their outputs under the plain keys; ensemble batches under
    member keys. Ensemble rows scored by the fallback get NaN std. With
    ``plan.noise``, ``keys`` (one uint64 per row, :func:`keras_batch_score.transforms.postprocess.privacy.row_keys`)
    seed each row's noise; the noise is added last, then the clip bounds are
    applied again (post-processing, which keeps the privacy guarantee), and
    every column derived from the prediction (top-k, ``prob_``, ``labels``)
    is computed from the noisy value.
    """
    out: dict[str, np.ndarray] = {}
    names = [m.name for m in plan.members]
    weights = [m.weight for m in plan.members]
    for col in plan.outputs:
        member_values = [predictions.get(member_key(col.key, n)) for n in names]
        combined = plan.is_ensemble and all(v is not None for v in member_values)
        if combined:
            value = ensemble.combine(member_values, plan.method, weights)
            member_std = [predictions.get(member_key(std_key(col.key), n)) for n in names]
            std = ensemble.spread(
                member_values,
                weights,
                member_std if all(s is not None for s in member_std) else None,
            )
        else:
            value = np.asarray(predictions[col.key], dtype=np.float32)
            std = predictions.get(std_key(col.key))
            if std is None and plan.emits_std:
                std = np.full(value.shape, np.nan, dtype=np.float32)
        if plan.calibration is not None:
            value = plan.calibration.apply(value).astype(np.float32)
        if plan.target_std is not None:
            value = value * np.float32(plan.target_std) + np.float32(plan.target_mean)
            std = None if std is None else std * np.float32(plan.target_std)
        if plan.clip_min is not None or plan.clip_max is not None:
            value = np.clip(value, plan.clip_min, plan.clip_max)
        if plan.noise is not None:
            if keys is None:
                raise ValueError("output noise needs the rows' keys")
            value = add_noise(value, keys, plan.noise, plan.outputs.index(col))
            if plan.clip_min is not None or plan.clip_max is not None:
                value = np.clip(value, plan.clip_min, plan.clip_max)
        out[col.key] = np.asarray(value, dtype=np.float32)
        shadow = predictions.get(member_key(col.key, SHADOW)) if plan.shadow else None
        if shadow is not None:
            out[member_key(col.key, SHADOW)] = _value_transforms(shadow, plan)
        if plan.emits_std:
            out[std_key(col.key)] = np.asarray(std, dtype=np.float32)
        if plan.keep_member_predictions and plan.is_ensemble:
            for n, v in zip(names, member_values, strict=True):
                fill = v if combined else np.full(value.shape, np.nan, dtype=np.float32)
                out[member_key(col.key, n)] = np.asarray(fill, dtype=np.float32)
    if plan.top_k and plan.class_names:
        labels, scores = top_k(out[plan.outputs[0].key], plan.top_k, plan.class_names)
        out[TOP_K_LABELS] = labels
        out[TOP_K_SCORES] = scores
    if plan.probability_columns:
        probs = class_matrix(out[plan.outputs[0].key])
        for j, column in enumerate(plan.probability_columns):
            out[column] = np.ascontiguousarray(probs[:, j])
    if plan.multi_label_thresholds is not None and plan.class_names:
        out[LABELS] = multi_label(
            out[plan.outputs[0].key], plan.multi_label_thresholds, plan.class_names
        )
    return out


POSTPROCESS_ERRORS = "errors"


def final_subjects(plan: PostprocessPlan) -> dict[str, str]:
    """How post-processing reasons name each final output: ``prediction`` or ``prediction 'col'``."""
    if len(plan.outputs) == 1:
        return {plan.outputs[0].key: "prediction"}
    return {o.key: f"prediction {o.column!r}" for o in plan.outputs}


class PostprocessDoFn(beam.DoFn):
    """Applies :func:`postprocess_predictions` to every batch.

    Rows whose final prediction is NaN or Inf (e.g. an overflow in inverse
    standardization) are sent to the ``errors`` output, stage ``postprocess``.
    """

    def __init__(self, plan: PostprocessPlan) -> None:
        self._plan = plan
        self._subjects = final_subjects(plan)

    def process(self, batch: ScoringBatch) -> Iterable[Any]:
        plan = self._plan
        combined = (
            plan.is_ensemble
            and member_key(plan.outputs[0].key, plan.members[0].name) in batch.predictions
        )
        keys = row_keys(batch.table, plan.noise_key_columns) if plan.noise is not None else None
        with np.errstate(over="ignore", invalid="ignore"):
            predictions = postprocess_predictions(batch.predictions, plan, keys)
        model_id = plan.ensemble_label if combined else batch.model_id
        out = dataclasses.replace(batch, predictions=predictions, model_id=model_id)
        bad, reasons = nonfinite_rows(predictions, self._subjects, " after post-processing")
        if bad.size:
            n = len(bad)
            yield pvalue.TaggedOutput(
                POSTPROCESS_ERRORS,
                error_table(batch.table, bad, "postprocess", [None] * n, reasons),
            )
            out = drop_rows(out, bad)
        yield out


class Postprocess(beam.PTransform):
    """Scored batches -> (batches holding exactly the final prediction columns, errors tables)."""

    def __init__(self, plan: PostprocessPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection):
        results = batches | "EnsembleCalibrateClipLabel" >> beam.ParDo(
            PostprocessDoFn(self._plan)
        ).with_output_types(ScoringBatch).with_outputs(POSTPROCESS_ERRORS, main="scored")
        return results.scored, results[POSTPROCESS_ERRORS]


# --------------------------------------------------------------------------- model handler


def keras_model_of(model: LoadedModel) -> Any:
    """The Keras model behind a loaded ``.keras``/``.h5`` model, or None for a SavedModel."""
    import keras

    inner = getattr(model, "_keepalive", None)
    return inner if isinstance(inner, keras.Model) else None


class MCDropout:
    """T stochastic passes (``training=True``) of a Keras model in compiled calls.

    The batch is tiled ``T`` times along the row axis (in chunks of at most
    65,536 rows per call), so one graph call scores many passes. Batch
    normalization layers are frozen (``trainable=False``), which in Keras 3
    keeps them in inference mode, so only dropout-like layers are stochastic.
    With a seed, every seed generator's state is reset before each batch from
    ``(seed, a checksum of the batch)``: results are reproducible and do not
    depend on the order in which batches reach a worker.
    """

    def __init__(self, model: LoadedModel, samples: int, seed: int | None) -> None:
        import keras
        import tensorflow as tf

        inner = keras_model_of(model)
        if inner is None:
            raise ModelError(
                f"model {model.model_id}: --mc-dropout-samples needs a .keras or .h5 model "
                "(a SavedModel signature cannot run in training mode)"
            )
        for layer in inner._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        self._samples = samples
        self._seed = seed
        self._inputs = list(model.inputs)
        self._output_names = [info.name for info in model.outputs]
        self._seed_vars = [v for v in inner.variables if v.path.endswith("seed_generator_state")]
        sig = {i.name: tf.TensorSpec((None, *i.shape), i.dtype) for i in self._inputs}
        order = [i.name for i in self._inputs]
        if model.input_structure == "single":
            fn = lambda d: inner(d[order[0]], training=True)  # noqa: E731
        elif model.input_structure == "dict":
            fn = lambda d: inner(d, training=True)  # noqa: E731
        else:
            fn = lambda d: inner([d[n] for n in order], training=True)  # noqa: E731
        self._graph = tf.function(fn, input_signature=[sig])

    def _reset_seeds(self, features: Mapping[str, np.ndarray], n: int) -> None:
        if self._seed is None:
            return
        checksum = n
        for name in sorted(features):
            checksum = zlib.crc32(np.ascontiguousarray(features[name][:4]).tobytes(), checksum)
        for i, var in enumerate(self._seed_vars):
            var.assign(np.array([self._seed + 7919 * i, checksum], dtype=var.dtype))

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per output: the mean over T passes and its std (``<output>__std``)."""
        from keras_batch_score.transforms.model.load import name_outputs

        n = len(next(iter(features.values())))
        self._reset_seeds(features, n)
        per_call = max(1, min(self._samples, _MC_MAX_ROWS_PER_CALL // max(n, 1)))
        samples: dict[str, list[np.ndarray]] = {name: [] for name in self._output_names}
        done = 0
        while done < self._samples:
            t = min(per_call, self._samples - done)
            tiled = {k: np.concatenate([np.asarray(v)] * t) for k, v in features.items()}
            raw = name_outputs(self._graph(tiled), self._output_names)
            for name in self._output_names:
                values = np.asarray(raw[name])
                samples[name].append(values.reshape((t, n, *values.shape[1:])))
            done += t
        out: dict[str, np.ndarray] = {}
        for name in self._output_names:
            stack = np.concatenate(samples[name]).astype(np.float64)
            if stack.ndim == 3 and stack.shape[2] == 1:
                stack = stack[:, :, 0]
            out[name] = stack.mean(axis=0).astype(np.float32)
            out[std_key(name)] = stack.std(axis=0).astype(np.float32)
        return out


class MemberModel(LoadedModel):
    """A loaded model whose outputs are renamed to member keys, optionally MC-dropout averaged.

    Outputs are matched to ``output_names`` (the first model's) by position, so
    single-output members whose output layers are named differently line up.
    """

    def __init__(
        self,
        base: LoadedModel,
        member: str | None,
        mc_samples: int = 0,
        seed: int | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        self._base = base
        self._member = member
        self._mc = MCDropout(base, mc_samples, seed) if mc_samples else None
        own = [info.name for info in base.outputs]
        names = list(output_names) if output_names and len(own) == 1 else own
        self._rename = {info.name: name for info, name in zip(base.outputs, names, strict=True)}
        self._rename.update({std_key(a): std_key(b) for a, b in self._rename.items()})
        outputs = []
        self.output_labels: list[tuple[str, str]] = []  # (member key, output name) for reasons
        for info, name in zip(base.outputs, names, strict=True):
            outputs.append(dataclasses.replace(info, name=member_key(name, member)))
            self.output_labels.append((member_key(name, member), name))
            if self._mc is not None:
                outputs.append(dataclasses.replace(info, name=member_key(std_key(name), member)))
                self.output_labels.append((member_key(std_key(name), member), name))
        super().__init__(
            inputs=base.inputs,
            outputs=outputs,
            call=base._call,
            model_id=base.model_id,
            format=base.format,
            weights=base.weights,
            keepalive=base,
        )

    def predict(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self._mc.predict(features) if self._mc is not None else self._base.predict(features)
        return {member_key(self._rename[k], self._member): v for k, v in raw.items()}


class MemberModelHandler(KerasModelHandler):
    """:class:`KerasModelHandler` for one named member (outputs under member keys) with optional MC dropout.

    Args:
        spec: What model to load.
        feature_widths: Values per row per model input (health check).
        member: Member name; None stores outputs under the plain output names.
        mc_samples: MC-dropout passes per batch (0: one deterministic pass).
        seed: MC-dropout seed.
        max_batch_rows: Max rows per model call.
        min_batch_rows: Min rows per model call.
    """

    def __init__(
        self,
        spec: ModelSpec,
        feature_widths: Mapping[str, int],
        *,
        member: str | None = None,
        mc_samples: int = 0,
        seed: int | None = None,
        output_names: Sequence[str] | None = None,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
    ) -> None:
        super().__init__(
            spec, feature_widths, max_batch_rows=max_batch_rows, min_batch_rows=min_batch_rows
        )
        self._member = member
        self._mc_samples = mc_samples
        self._seed = seed
        self._output_names = tuple(output_names) if output_names else None

    def load_model(self) -> LoadedModel:
        base = super().load_model()
        own = tuple(info.name for info in base.outputs)
        same_names = len(own) > 1 or self._output_names in (None, own)
        if self._member is None and not self._mc_samples and same_names:
            return base
        return MemberModel(base, self._member, self._mc_samples, self._seed, self._output_names)

    def output_subjects(self, model: LoadedModel) -> dict[str, str]:
        """NaN/Inf reasons name a member's outputs by the model's output names, not member keys."""
        if isinstance(model, MemberModel):
            return output_subjects(model.output_labels)
        return super().output_subjects(model)


# --------------------------------------------------------------------------- A/B routing


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_column(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per value (same value, same hash, on every run and machine).

    Numbers hash their int64/float64 bit pattern, strings and binaries their
    UTF-8 bytes (through the Arrow buffers: a sum of position-keyed mixes of
    each byte, then mixed with the length); nulls hash to a constant.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    n = len(arr)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        arr = arr.cast(pa.large_binary())
        valid = np.ones(n, dtype=bool) if arr.null_count == 0 else np.asarray(arr.is_valid())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = (
            np.frombuffer(arr.buffers()[2], dtype=np.uint8)
            if arr.buffers()[2] is not None
            else np.zeros(0, np.uint8)
        )
        start, stop = int(offsets[0]), int(offsets[-1])
        lengths = np.diff(offsets)
        row_of_byte = np.repeat(np.arange(n), lengths)
        position = np.arange(stop - start, dtype=np.int64) - (offsets[:-1] - start)[row_of_byte]
        keyed = _mix64(
            data[start:stop].astype(np.uint64) | (position.astype(np.uint64) << np.uint64(8))
        )
        sums = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        if keyed.size:  # segment sums; empty strings have no segment and keep 0
            sums[nonempty] = np.add.reduceat(keyed, (offsets[:-1] - start)[nonempty])
        h = _mix64(sums ^ _mix64(lengths.astype(np.uint64)))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        ints = pc.cast(arr, pa.int64()) if not pa.types.is_temporal(t) else arr.cast(pa.int64())
        valid = np.asarray(ints.is_valid())
        h = _mix64(
            ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        )
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = pc.cast(arr, pa.float64())
        valid = np.asarray(floats.is_valid())
        h = _mix64(
            floats.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64).view(np.uint64)
        )
    else:
        raise ValueError(
            f"id column of type {t} cannot be hashed for --ab-split; use a string or integer id"
        )
    return np.where(valid, h, np.uint64(0x5BD1E995))


def route(table: pa.Table, id_columns: Sequence[str], shares: Sequence[float]) -> np.ndarray:
    """Arm index per row: a hash of the id columns mapped to [0, 1) against cumulative shares.

    Deterministic: the same ids go to the same arm on every run, however the
    rows are batched.
    """
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in id_columns:
            h = _mix64(h * np.uint64(31) ^ hash_column(table.column(name)))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    edges = np.cumsum(np.asarray(shares, dtype=np.float64))
    return np.minimum(np.searchsorted(edges, u, side="right"), len(shares) - 1)


class RouteDoFn(beam.DoFn):
    """Splits each batch into one sub-batch per A/B arm (tagged outputs named after the arms)."""

    def __init__(
        self, names: Sequence[str], shares: Sequence[float], id_columns: Sequence[str]
    ) -> None:
        self._names = list(names)
        self._shares = list(shares)
        self._id_columns = list(id_columns)

    def process(self, batch: ScoringBatch):
        arms = route(batch.table, self._id_columns, self._shares)
        rejected = batch.rows_rejected  # carried once, by the first arm that gets rows
        for i, name in enumerate(self._names):
            rows = np.flatnonzero(arms == i)
            if rows.size:
                sub = take_rows(batch, rows)
                sub.rows_rejected, rejected = rejected, 0
                yield pvalue.TaggedOutput(name, sub)


# --------------------------------------------------------------------------- running the models


class ToFallbackDoFn(beam.DoFn):
    """Failed rows -> batches for the fallback model; logs each distinct reason once per worker."""

    def setup(self) -> None:
        self._seen: set[str] = set()
        self._rows = beam.metrics.Metrics.counter("keras_batch_score", "rows_fallback")

    def process(self, failed: FailedRows) -> Iterable[ScoringBatch]:
        for reason in dict.fromkeys(failed.reasons):  # per failed row only
            if reason not in self._seen:
                self._seen.add(reason)
                _LOG.warning(
                    "primary model failed on some rows, scoring them with the fallback model: %s",
                    reason,
                )
        self._rows.inc(failed.batch.num_rows)
        yield dataclasses.replace(failed.batch, predictions={})


class ScoreModels(beam.PTransform):
    """Validated batches -> (scored batches, errors tables): members, A/B arms and fallback.

    * Ensemble: one ``Model[name]`` RunInference per member, chained.
    * A/B: rows routed by a hash of the id columns, one ``Model[name]`` per arm, flattened.
    * Fallback: rows on which a model raised (isolated by bisection) or gave
      NaN/Inf go to ``Fallback[name]``; without one, or when the fallback
      fails on them too, they become errors (stage ``inference``).
    """

    def __init__(
        self,
        plan: PostprocessPlan,
        feature_widths: Mapping[str, int],
        *,
        max_batch_rows: int,
        min_batch_rows: int | None = None,
    ) -> None:
        super().__init__()
        self._plan = plan
        self._widths = dict(feature_widths)
        self._max = max_batch_rows
        self._min = min_batch_rows

    def _handler(self, run: MemberRun, member: str | None) -> MemberModelHandler:
        return MemberModelHandler(
            run.spec,
            self._widths,
            member=member,
            mc_samples=self._plan.mc_samples,
            seed=self._plan.seed,
            output_names=[o.key for o in self._plan.outputs],
            max_batch_rows=self._max,
            min_batch_rows=self._min,
        )

    def shadow_shapes(self) -> list[tuple[str, list[str]]]:
        """Per shadow key, the released keys whose shape a failed row's NaN output copies."""
        first = self._plan.members[0].name
        return [
            (member_key(o.key, SHADOW), [o.key, member_key(o.key, first)])
            for o in self._plan.outputs
        ]

    def _run(self, batches: beam.PCollection, label: str, handler: MemberModelHandler):
        return run_model(batches, handler, label)

    def expand(self, batches: beam.PCollection):
        plan = self._plan
        scored: list[beam.PCollection] = []
        failed: list[beam.PCollection] = []
        if plan.ab_split is not None:
            names = [n for n, _ in plan.ab_split]
            arms = batches | "RouteAB" >> beam.ParDo(
                RouteDoFn(names, [s for _, s in plan.ab_split], plan.id_columns)
            ).with_outputs(*names)
            by_name = {m.name: m for m in plan.members}
            for name in names:
                ok, bad = self._run(
                    arms[name], f"Model[{name}]", self._handler(by_name[name], None)
                )
                scored.append(ok)
                failed.append(bad)
        else:
            current = batches
            ensemble_members = plan.is_ensemble
            for m in plan.members:
                current, bad = self._run(
                    current,
                    f"Model[{m.name}]",
                    self._handler(m, m.name if ensemble_members else None),
                )
                failed.append(bad)
            scored.append(current)
        all_failed = tuple(failed) | "FailedRows" >> beam.Flatten()
        if plan.fallback is not None:
            retry = all_failed | "ToFallback" >> beam.ParDo(ToFallbackDoFn()).with_output_types(
                ScoringBatch
            )
            ok, bad = self._run(
                retry, f"Fallback[{plan.fallback.name}]", self._handler(plan.fallback, None)
            )
            scored.append(ok)
            all_failed = bad
        if plan.shadow is not None:
            from keras_batch_score.transforms.model import shadow

            released = tuple(scored) | "Released" >> beam.Flatten()
            handler = shadow.ShadowModelHandler(
                plan.shadow.spec,
                self._widths,
                member=SHADOW,
                output_names=[o.key for o in plan.outputs],
                max_batch_rows=self._max,
                min_batch_rows=self._min,
            )
            scored = [shadow.run_shadow(released, handler, self.shadow_shapes())]
        errors = all_failed | "FailedRowsToErrors" >> beam.Map(
            failed_rows_to_errors
        ).with_output_types(pa.Table)
        return tuple(scored) | "AllScored" >> beam.Flatten(), errors


# --------------------------------------------------------------------------- summary counts


def _model_count(batch: ScoringBatch) -> tuple[str, int]:
    return batch.model_id or "", batch.num_rows


class _AddModelCounts(beam.DoFn):
    def process(self, counts: dict[str, int], by_model: Mapping[str, int], fallback_id: str | None):
        out = dict(counts)
        out["rows_by_model"] = dict(sorted(by_model.items()))
        if fallback_id is not None:
            out["rows_fallback"] = int(by_model.get(fallback_id, 0))
        yield out


def add_model_counts(
    counts: beam.PCollection, scored: beam.PCollection, fallback_id: str | None = None
) -> beam.PCollection:
    """Adds ``rows_by_model`` (and ``rows_fallback``) to the run's counts dict."""
    from keras_batch_score.transforms.run.finalize import SumByKeyFn

    by_model = (
        scored
        | "CountByModel" >> beam.Map(_model_count)
        | "SumByModel" >> beam.CombineGlobally(SumByKeyFn(()))
    )
    return counts | "AddModelCounts" >> beam.ParDo(
        _AddModelCounts(), pvalue.AsSingleton(by_model), fallback_id
    )


def output_columns(outputs: Sequence[TensorInfo]) -> tuple[OutputColumn, ...]:
    """The base prediction column of each model output (same naming as :mod:`keras_batch_score.transforms.io.output_tables`)."""
    from keras_batch_score.transforms.io.output_tables import output_fields

    return tuple(
        OutputColumn(info.name, field.name, field)
        for info, field in zip(outputs, output_fields(outputs), strict=True)
    )


def score_and_postprocess(
    batches: beam.PCollection,
    plan: PostprocessPlan,
    feature_widths: Mapping[str, int],
    *,
    max_batch_rows: int,
    min_batch_rows: int | None = None,
) -> tuple[beam.PCollection, beam.PCollection]:
    """Validated batches -> (post-processed scored batches, errors tables)."""
    scored, errors = batches | "Models" >> ScoreModels(
        plan, feature_widths, max_batch_rows=max_batch_rows, min_batch_rows=min_batch_rows
    )
    final, post_errors = scored | "Postprocess" >> Postprocess(plan)
    return final, (errors, post_errors) | "InferenceAndPostprocessErrors" >> beam.Flatten()
