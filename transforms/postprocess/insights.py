"""Per-row insights after inference: attributions, OOD scores and the FGSM fragility flag.

:func:`plan_insights` decides, at construction time, which columns are added
(``attr_<feature>``, ``ood_score``, ``ood_max_abs_z``, ``ood``, ``fragile``)
and checks the model (float inputs, gradients that reach every input) before
any data is read. :class:`AddInsights` is the Beam step: one DoFn that loads
the model once per worker (shared with the inference step in-process) and
adds the columns to every scored batch; rows whose attributions are NaN/Inf
go to the errors output (stage ``explain``). :func:`add_insight_counts` puts
``rows_ood`` and ``rows_fragile`` into the run's counts.

Attribution columns follow the feature layout: one ``attr_<column>`` per
feature column, ``float32`` for a column that gives one value per row, and
``list<float32>`` for a list column (or a preprocessed feature that gives
several model-input values, e.g. a one-hot). A multi-input model reads each
input from the column of the same name, so its columns are ``attr_<input>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from keras_batch_score.transforms.core.batch import ScoringBatch, drop_rows
from keras_batch_score.transforms.core.errors import ConfigError, error_table
from keras_batch_score.transforms.drift.profile_format import NumericStats, Profile, load_profile
from keras_batch_score.transforms.features.layout import FeatureLayout
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.postprocess import explain, ood

ATTR_PREFIX = "attr_"
FRAGILE = "fragile"
ROWS_OOD = "rows_ood"
ROWS_FRAGILE = "rows_fragile"
EXPLAIN_ERRORS = "errors"
_KEY = "insight:"  # internal prediction keys: never clash with model output names


@dataclasses.dataclass(frozen=True)
class AttrColumn:
    """One attribution column: values ``[start, start + width)`` of a model input's flattened row."""

    name: str
    input: str
    start: int
    width: int


@dataclasses.dataclass(frozen=True)
class InsightsPlan:
    """What the insights step adds; built at construction time and pickled to the workers.

    Attributes:
        spec: The model to differentiate (None when only OOD scores are added).
        shapes: Per model input, its per-row shape.
        target: The explained / checked model output.
        method: Attribution method, or None.
        steps: Integrated gradients' intervals.
        baseline: Per model input, one baseline row.
        attr_columns: The attribution columns, in layout order.
        ood: The reference for OOD scores, or None.
        ood_threshold: ``ood`` column threshold, or None.
        adversarial_step: Per model input, the FGSM step per value (one row), or None.
        adversarial_threshold: Prediction change that flags a row as fragile.
    """

    spec: ModelSpec | None = None
    shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    target: explain.OutputTarget | None = None
    method: str | None = None
    steps: int = explain.DEFAULT_STEPS
    baseline: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    attr_columns: tuple[AttrColumn, ...] = ()
    ood: ood.OodReference | None = None
    ood_threshold: float | None = None
    adversarial_step: Mapping[str, np.ndarray] | None = None
    adversarial_threshold: float = 0.1

    @property
    def count_keys(self) -> tuple[str, ...]:
        keys = (ROWS_OOD,) if self.ood_threshold is not None else ()
        return keys + ((ROWS_FRAGILE,) if self.adversarial_step is not None else ())

    def extra_columns(self) -> list[tuple[pa.Field, str]]:
        """The added columns: ``(field, internal prediction key)``."""
        extra = []
        for c in self.attr_columns:
            t = pa.float32() if c.width == 1 else pa.list_(pa.float32())
            extra.append((pa.field(c.name, t), _KEY + c.name))
        if self.ood is not None:
            extra.append((pa.field(ood.OOD_SCORE, pa.float32()), _KEY + ood.OOD_SCORE))
            extra.append((pa.field(ood.OOD_MAX_ABS_Z, pa.float32()), _KEY + ood.OOD_MAX_ABS_Z))
            if self.ood_threshold is not None:
                extra.append((pa.field(ood.OOD, pa.bool_()), _KEY + ood.OOD))
        if self.adversarial_step is not None:
            extra.append((pa.field(FRAGILE, pa.bool_()), _KEY + FRAGILE))
        return extra

    def output_schema(self, base: pa.Schema) -> pa.Schema:
        """``base`` with the added columns inserted before ``model``."""
        fields = [f for f in base if f.name != "model"]
        fields += [f for f, _ in self.extra_columns()]
        fields += [f for f in base if f.name == "model"]
        return pa.schema(fields)

    def output_names(self, base: Sequence[str]) -> tuple[str, ...]:
        return (*base, *(key for _, key in self.extra_columns()))


# --------------------------------------------------------------------------- planning


def attr_columns(layout: FeatureLayout) -> tuple[AttrColumn, ...]:
    """One attribution column per feature column of the layout (``attr_<column>``)."""
    cols: list[AttrColumn] = []
    taken: set[str] = set()
    for b in layout.bindings:
        start = 0
        for column, width in zip(b.columns, b.widths, strict=True):
            name = ATTR_PREFIX + column
            if name in taken:  # the same column feeds two inputs (preprocessing)
                name = f"{ATTR_PREFIX}{b.name}.{column}"
            taken.add(name)
            cols.append(AttrColumn(name, b.name, start, width))
            start += width
    return tuple(cols)


def _mean_baseline(layout: FeatureLayout, profile: Profile, path: str) -> dict[str, np.ndarray]:
    out = {}
    for b in layout.bindings:
        values = []
        for column, width in zip(b.columns, b.widths, strict=True):
            stats = profile.features.get(column)
            if width != 1 or not isinstance(stats, NumericStats):
                why = "is a list column" if width != 1 else "is not a numeric feature of it"
                raise ConfigError(
                    f"--explain-baseline reference-mean: feature column {column!r} {why} "
                    f"(reference profile {path}); use --explain-baseline zeros"
                )
            values.append(stats.mean)
        out[b.name] = np.asarray(values, dtype=np.float64).reshape((1, *b.shape))
    return out


def _fgsm_step(
    layout: FeatureLayout, profile: Profile | None, epsilon: float, preprocessed: bool
) -> dict[str, np.ndarray]:
    """``epsilon`` reference stds per value (1 model-input unit where the profile has no std)."""
    out = {}
    for b in layout.bindings:
        values: list[np.ndarray] = []
        for column, width in zip(b.columns, b.widths, strict=True):
            stats = None if profile is None or preprocessed else profile.features.get(column)
            std = stats.std if isinstance(stats, NumericStats) and width == 1 else 0.0
            values.append(np.full(width, epsilon * (std if std > 0 else 1.0)))
        out[b.name] = np.concatenate(values).astype(np.float32).reshape((1, *b.shape))
    return out


def plan_insights(
    config: Any,
    spec: ModelSpec,
    model: LoadedModel,
    layout: FeatureLayout,
    *,
    preprocessed: bool,
) -> InsightsPlan | None:
    """The insights plan of a scoring job, or None when no insight is asked for.

    Raises:
        ConfigError: for a model that cannot be differentiated (integer or string
            inputs, gradients that do not reach an input), an ensemble, A/B split
            or fallback with ``--explain``/``--adversarial-check``, or a
            reference-mean baseline the profile cannot give.
    """
    gradients = bool(config.explain) or bool(config.adversarial_check)
    if not (gradients or config.ood_score):
        return None
    profile = load_profile(config.reference_profile) if config.reference_profile else None
    plan = InsightsPlan()
    if config.ood_score and profile is not None:
        plan = dataclasses.replace(
            plan,
            ood=ood.reference_from_profile(profile),
            ood_threshold=config.ood_threshold,
        )
    if not gradients:
        return plan
    if len(config.model) > 1 or config.fallback_model:
        raise ConfigError(
            "--explain and --adversarial-check differentiate one model: drop the other --model "
            "entries (ensemble, A/B) and --fallback-model"
        )
    explain.check_differentiable_inputs(model.inputs)
    target = explain.parse_output_target(config.explain_output, model.outputs)
    shapes = {b.name: tuple(b.shape) for b in layout.bindings}
    attributor = explain.Attributor(model, target, shapes)
    zeros = {b.name: np.zeros((2, *b.shape), dtype=b.dtype) for b in layout.bindings}
    explain.check_gradients(attributor, zeros)
    plan = dataclasses.replace(plan, spec=spec, shapes=shapes, target=target)
    if config.explain:
        if config.explain_baseline == explain.REFERENCE_MEAN:
            if preprocessed:
                raise ConfigError(
                    "--explain-baseline reference-mean: the profile's means are of the input "
                    "columns, not of the preprocessed model inputs; use --explain-baseline zeros"
                )
            baseline = _mean_baseline(layout, profile, config.reference_profile)
        else:
            baseline = {b.name: np.zeros((1, *b.shape)) for b in layout.bindings}
        plan = dataclasses.replace(
            plan,
            method=config.explain,
            steps=config.explain_steps,
            baseline=baseline,
            attr_columns=attr_columns(layout),
        )
    if config.adversarial_check:
        plan = dataclasses.replace(
            plan,
            adversarial_step=_fgsm_step(layout, profile, config.adversarial_epsilon, preprocessed),
            adversarial_threshold=config.adversarial_threshold,
        )
    return plan


# --------------------------------------------------------------------------- computing


def insight_columns(
    batch: ScoringBatch, plan: InsightsPlan, attributor: explain.Attributor | None
) -> dict[str, np.ndarray]:
    """The added columns of one batch, under their internal prediction keys."""
    out: dict[str, np.ndarray] = {}
    n = batch.num_rows
    if plan.method is not None and attributor is not None:
        attrs = attributor.attributions(batch.features, plan.baseline, plan.method, plan.steps)
        flat = {k: v.reshape(n, -1) for k, v in attrs.items()}
        for c in plan.attr_columns:
            values = flat[c.input][:, c.start : c.start + c.width]
            out[_KEY + c.name] = values[:, 0] if c.width == 1 else values
    if plan.ood is not None:
        score, max_z = ood.ood_scores(batch.table, plan.ood)
        out[_KEY + ood.OOD_SCORE] = score
        out[_KEY + ood.OOD_MAX_ABS_Z] = max_z
        if plan.ood_threshold is not None:
            out[_KEY + ood.OOD] = score > plan.ood_threshold
    if plan.adversarial_step is not None and attributor is not None:
        delta = attributor.sensitivity(batch.features, plan.adversarial_step)
        out[_KEY + FRAGILE] = ~(delta <= plan.adversarial_threshold)  # NaN: fragile
    return out


def nonfinite_attributions(columns: Mapping[str, np.ndarray], plan: InsightsPlan) -> np.ndarray:
    """Rows (indices) with a NaN/Inf attribution."""
    bad = None
    for c in plan.attr_columns:
        v = columns[_KEY + c.name]
        rows = ~np.isfinite(v.reshape(len(v), -1)).all(axis=1)
        bad = rows if bad is None else bad | rows
    return np.zeros(0, np.int64) if bad is None else np.flatnonzero(bad)


class InsightsDoFn(beam.DoFn):
    """Adds the insight columns to every scored batch; NaN/Inf attributions go to ``errors``."""

    def __init__(self, plan: InsightsPlan) -> None:
        self._plan = plan

    def setup(self) -> None:
        self._attributor = None
        if self._plan.spec is not None:
            model = load(self._plan.spec)
            self._attributor = explain.Attributor(model, self._plan.target, self._plan.shapes)

    def process(self, batch: ScoringBatch) -> Iterable[Any]:
        plan = self._plan
        columns = insight_columns(batch, plan, self._attributor)
        out = dataclasses.replace(batch, predictions={**batch.predictions, **columns})
        bad = nonfinite_attributions(columns, plan)
        if bad.size:
            reason = f"attributions of {plan.target.describe()} are NaN or Inf"
            yield pvalue.TaggedOutput(
                EXPLAIN_ERRORS,
                error_table(batch.table, bad, "explain", [None] * len(bad), [reason] * len(bad)),
            )
            out = drop_rows(out, bad)
        yield out


class AddInsights(beam.PTransform):
    """Scored batches -> (batches with the insight columns, errors tables)."""

    def __init__(self, plan: InsightsPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection):
        results = batches | "ExplainOodFragile" >> beam.ParDo(
            InsightsDoFn(self._plan)
        ).with_output_types(ScoringBatch).with_outputs(EXPLAIN_ERRORS, main="scored")
        return results.scored, results[EXPLAIN_ERRORS]


# --------------------------------------------------------------------------- summary counts


def flagged_counts(batch: ScoringBatch) -> Iterable[tuple[str, int]]:
    """``(rows_ood, n)`` and ``(rows_fragile, n)`` of one batch (only the keys it has columns for)."""
    for key, column in ((ROWS_OOD, ood.OOD), (ROWS_FRAGILE, FRAGILE)):
        values = batch.predictions.get(_KEY + column)
        if values is not None:
            yield key, int(np.count_nonzero(values))


class _AddCounts(beam.DoFn):
    def process(self, counts: dict[str, int], flagged: Mapping[str, int]):
        yield {**counts, **flagged}


def add_insight_counts(
    counts: beam.PCollection, scored: beam.PCollection, plan: InsightsPlan
) -> beam.PCollection:
    """Adds ``rows_ood`` / ``rows_fragile`` (zeros for an empty run) to the run's counts dict."""
    from keras_batch_score.transforms.run.finalize import SumByKeyFn

    if not plan.count_keys:
        return counts
    flagged = (
        scored
        | "CountFlagged" >> beam.FlatMap(flagged_counts)
        | "SumFlagged" >> beam.CombineGlobally(SumByKeyFn(plan.count_keys))
    )
    return counts | "AddFlaggedCounts" >> beam.ParDo(_AddCounts(), pvalue.AsSingleton(flagged))
