"""The scoring plan of ``score``, ``profile --model`` and ``calibrate``.

:func:`plan_scoring` plans the models (:func:`~keras_batch_score.pipelines.planning.models.plan_models`),
the input (:func:`~keras_batch_score.pipelines.planning.inputs.plan_input`), the
feature layout and the post-processing, loading and health-checking every
model. Post-processing is always planned: a plain run is a trivial plan, so
there is one scoring path (:class:`keras_batch_score.transforms.model.score.ScoreBatches`).
:func:`plan_calibration` derives ``calibrate``'s plan from it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.pipelines import bundle_options, startup_gc
from keras_batch_score.pipelines.planning.inputs import InputPlan, plan_input
from keras_batch_score.pipelines.planning.models import ModelsPlan, plan_models
from keras_batch_score.pipelines.planning.postprocess import is_plain, plan_postprocess
from keras_batch_score.transforms.core.errors import ConfigError, format_names
from keras_batch_score.transforms.core.tf_quiet import import_tensorflow
from keras_batch_score.transforms.drift.plan import (
    DriftPlan,
    plan_drift_from_config,
    with_shadow_targets,
)
from keras_batch_score.transforms.features.layout import FeatureLayout, plan_layout
from keras_batch_score.transforms.io.output_tables import predictions_schema
from keras_batch_score.transforms.io.read import ReadInput
from keras_batch_score.transforms.io.schema import (
    LOCATOR_COLUMNS,
    check_locator_names,
    with_locator,
)
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.loaded_model import LoadedModel
from keras_batch_score.transforms.model.score import ScoreBatches
from keras_batch_score.transforms.model.shadow import shadow_keys
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.postprocess.insights import InsightsPlan, plan_insights
from keras_batch_score.transforms.postprocess.plan import PostprocessPlan
from keras_batch_score.transforms.preprocess.plan import PreprocessPlan, plan_from_config
from keras_batch_score.transforms.preprocess.prepare import PrepareBatches
from keras_batch_score.transforms.run.output_checks import check_id_columns, check_score_output

if TYPE_CHECKING:
    from keras_batch_score.pipelines.config import ScoreConfig


@dataclasses.dataclass(frozen=True)
class ScoringPlan:
    """Everything a scoring pipeline needs, resolved and checked at construction time.

    ``postprocess`` is always set: a plain run is a trivial plan (one member,
    nothing else), and ``plain`` says so (its summary has no per-model counts).
    """

    config: ScoreConfig
    input: InputPlan
    read_columns: tuple[str, ...]
    layout: FeatureLayout
    models: ModelsPlan
    model_id: str
    model_format: str
    output_schema: pa.Schema
    output_names: tuple[str, ...]
    run_id: str
    postprocess: PostprocessPlan
    plain: bool = True
    preprocess: PreprocessPlan | None = None
    drift: DriftPlan | None = None  # --reference-profile
    insights: InsightsPlan | None = None  # --explain, --ood-score, --adversarial-check
    # The launcher's loaded model, kept alive so that an in-process worker reuses it
    # (see keras_batch_score.transforms.model.load.load); never pickled into the pipeline.
    loaded_model: LoadedModel | None = dataclasses.field(default=None, compare=False, repr=False)
    row_locator: bool = False  # no id column: outputs carry source_file + row_index
    feature_columns_source: str = "file_order"  # bundle_options.feature_source

    @property
    def model_spec(self) -> ModelSpec:
        return self.models.spec

    @property
    def bundle(self) -> bundle_options.BundleUse | None:
        return self.models.bundle

    @property
    def input_files(self) -> tuple[str, ...]:
        return self.input.files

    @property
    def input_schema(self) -> pa.Schema:
        return self.input.schema

    @property
    def input_format(self) -> str:
        return self.input.format

    def read(self, *, with_errors: bool = False) -> ReadInput:
        """The step reading the planned columns (and the row locator) as Arrow tables."""
        return self.input.read(
            self.read_columns,
            self.config.batch_size,
            locator=self.row_locator,
            with_errors=with_errors,
        )

    def prepare(self, keep_columns: Sequence[str]) -> PrepareBatches:
        """The step slicing tables into batches, validated or preprocessed, keeping ``keep_columns``."""
        return PrepareBatches(
            self.layout,
            keep_columns,
            batch_rows=self.config.batch_size,
            preprocess=self.preprocess,
            reshuffle=self.config.reshuffle,
        )

    def score(self) -> ScoreBatches:
        """The step scoring batches with the plan's models and post-processing."""
        return ScoreBatches(
            self.postprocess,
            self.layout.widths(),
            max_batch_rows=self.config.batch_size,
            min_batch_rows=self.config.min_batch_size,
        )

    @property
    def passthrough_columns(self) -> tuple[str, ...]:
        """Input columns copied to every output row: the id columns, or the row locator."""
        return LOCATOR_COLUMNS if self.row_locator else tuple(self.config.id_columns)

    @property
    def staging_dir(self) -> str:
        return FileSystems.join(self.config.output, f"_staging-{self.run_id}")


def plan_scoring(config: ScoreConfig, *, check_output: bool = True) -> ScoringPlan:
    """Resolves models, input files, schema and feature layout; fails fast with ConfigError.

    Reads only Parquet footers and the model files, never data pages. With
    ``check_output`` the output directory is checked too (before any footer is read).
    """
    models = plan_models(config)
    config = models.config
    source = plan_input(
        config.input,
        config.input_format,
        config.tfrecord_features,
        before_reading=(
            (lambda: check_score_output(config.output, config.input, overwrite=config.overwrite))
            if check_output
            else None
        ),
    )
    schema = source.schema
    locator = not config.id_columns  # source_file + row_index join outputs back to inputs
    if locator:
        check_locator_names(schema)
    bundle_options.check_input(models.bundle, schema)
    import_tensorflow()
    startup_gc.checkpoint()  # TensorFlow's and Keras's modules are loaded
    model = load(models.spec)
    if source.unified is not None:
        source.unified.require_for_model(
            config.id_columns, config.feature_columns, model.inputs, config.preprocess
        )
    preprocess = plan_from_config(config.preprocess, schema, model.inputs)
    layout = (
        preprocess.layout()
        if preprocess is not None
        else plan_layout(
            schema,
            model.inputs,
            id_columns=config.id_columns,
            feature_columns=config.feature_columns,
        )
    )
    health_check(model, layout.widths())
    read_columns = tuple(dict.fromkeys([*config.id_columns, *layout.columns]))
    out_schema = predictions_schema(
        with_locator(schema) if locator else schema,
        LOCATOR_COLUMNS if locator else config.id_columns,
        model.outputs,
    )
    post = plan_postprocess(models, model, layout.widths())
    out_schema = post.output_schema(out_schema)
    output_names = post.output_names(tuple(info.name for info in model.outputs))
    insights = plan_insights(
        config, models.spec, model, layout, preprocessed=preprocess is not None
    )
    if insights is not None:
        out_schema = insights.output_schema(out_schema)
        output_names = insights.output_names(output_names)
    check_id_columns(config.id_columns, out_schema)
    drift = plan_drift_from_config(config, schema, model.outputs, out_schema.names)
    if drift is not None and post.shadow is not None:
        drift = with_shadow_targets(drift, shadow_keys(post))
    if drift is not None:
        read_columns = tuple(dict.fromkeys([*read_columns, *drift.feature_columns]))
    return ScoringPlan(
        config=config,
        input=source,
        read_columns=read_columns,
        layout=layout,
        models=models,
        model_id=model.model_id,
        model_format=model.format,
        output_schema=out_schema,
        output_names=output_names,
        run_id=time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        postprocess=post,
        plain=is_plain(models),
        preprocess=preprocess,
        drift=drift,
        insights=insights,
        loaded_model=model,
        row_locator=locator,
        feature_columns_source=bundle_options.feature_source(
            config, models.bundle, model.inputs, layout.columns
        ),
    )


# --------------------------------------------------------------------------- calibrate


def raw_scores(post: PostprocessPlan) -> PostprocessPlan:
    """The plan of the raw (ensembled, MC-averaged) model scores that calibration is fitted on.

    Keeps the members and how they are combined; drops every transform that
    follows (calibration, standardization, clipping, labels, noise, extra columns).
    """
    return PostprocessPlan(
        members=post.members,
        outputs=post.outputs,
        method=post.method,
        keep_member_predictions=post.keep_member_predictions,
        mc_samples=post.mc_samples,
        seed=post.seed,
        id_columns=post.id_columns,
        ensemble_label=post.ensemble_label,
    )


def plan_calibration(config: ScoreConfig, label_column: str) -> ScoringPlan:
    """The scoring plan of ``calibrate``: raw scores of a one-output model, plus a label column.

    Raises:
        ConfigError: for a label column missing from the input or not holding
            class indices, or a model with no or several outputs.
    """
    plan = plan_scoring(config, check_output=False)  # calibrate checks its own output
    schema = plan.input_schema
    if label_column not in schema.names:
        raise ConfigError(
            f"--label-column {label_column!r} is not in the input; columns are {format_names(schema.names)}"
        )
    label_type = schema.field(label_column).type
    if not (
        pa.types.is_integer(label_type)
        or pa.types.is_boolean(label_type)
        or pa.types.is_floating(label_type)
    ):
        raise ConfigError(
            f"--label-column {label_column!r} has type {label_type}; expected integer class indices"
        )
    if not plan.output_names or not any(
        n.startswith("prediction") for n in plan.output_schema.names
    ):
        raise ConfigError("the model has no outputs to calibrate")
    if len(plan.postprocess.outputs) != 1:
        raise ConfigError("calibrate needs a model with one output (class probabilities or logits)")
    return dataclasses.replace(plan, postprocess=raw_scores(plan.postprocess))
