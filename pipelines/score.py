"""The scoring pipeline: Parquet -> validate -> Keras RunInference -> predictions, errors, summary.

Usage::

    batch-score score --model model.keras --input 'data/*.parquet' --output out/ [beam flags]
    python -m keras_batch_score.pipelines.score ...   # the same

:func:`plan` validates the configuration, the input schema and the model
before any data is read. :func:`build_pipeline` adds the steps to a Beam
pipeline; :func:`run` does both and runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)

from keras_batch_score.pipelines import bundle_options, postprocess_options
from keras_batch_score.pipelines.about import absolute_uri, versions
from keras_batch_score.pipelines.config import ScoreConfig, add_score_arguments, resolve_config
from keras_batch_score.transforms.core.rebatch import Rebatch
from keras_batch_score.transforms.drift.plan import (
    DriftPlan,
    kept_columns,
    plan_drift_from_config,
    with_shadow_targets,
)
from keras_batch_score.transforms.drift.report_files import drift_outcome, report_paths
from keras_batch_score.transforms.drift.transforms import ComputeDrift
from keras_batch_score.transforms.features.layout import FeatureLayout, plan_layout
from keras_batch_score.transforms.features.transforms import ValidateFeatures
from keras_batch_score.transforms.io.files import input_pattern, match_files
from keras_batch_score.transforms.io.output_formats import JsonLayout, prediction_layout
from keras_batch_score.transforms.io.output_tables import predictions_schema
from keras_batch_score.transforms.io.read import ReadInput
from keras_batch_score.transforms.io.schema import (
    LOCATOR_COLUMNS,
    check_locator_names,
    unify_input_schemas,
    with_locator,
)
from keras_batch_score.transforms.io.tfrecord_spec import (
    TFRecordFeature,
    arrow_schema,
    plan_features,
    resolve_input_format,
)
from keras_batch_score.transforms.io.write import (
    ERRORS_PREFIX,
    PREDICTIONS_PREFIX,
    WriteErrors,
    WritePredictions,
)
from keras_batch_score.transforms.model.handler import KerasModelHandler, RunKerasInference
from keras_batch_score.transforms.model.health_check import health_check
from keras_batch_score.transforms.model.load import load
from keras_batch_score.transforms.model.shadow import add_shadow_stats, shadow_keys, shadow_pairs
from keras_batch_score.transforms.model.spec import ModelSpec
from keras_batch_score.transforms.postprocess.insights import (
    AddInsights,
    InsightsPlan,
    add_insight_counts,
    plan_insights,
)
from keras_batch_score.transforms.postprocess.plan import PostprocessPlan
from keras_batch_score.transforms.postprocess.transforms import (
    add_model_counts,
    score_and_postprocess,
)
from keras_batch_score.transforms.preprocess.plan import PreprocessPlan, plan_from_config
from keras_batch_score.transforms.preprocess.transforms import PreprocessFeatures
from keras_batch_score.transforms.run.finalize import CountRows, FinalizeRun
from keras_batch_score.transforms.run.output_checks import check_id_columns, check_score_output
from keras_batch_score.transforms.run.progress import CountFailedRows
from keras_batch_score.transforms.run.publish import discard_staging

_LOG = logging.getLogger("keras_batch_score")

LOCAL_RUNNER = "FnApiRunner"


@dataclasses.dataclass(frozen=True)
class ScoringPlan:
    """Everything the pipeline needs, resolved and checked at construction time."""

    config: ScoreConfig
    input_pattern: str
    input_files: tuple[str, ...]
    input_schema: pa.Schema
    read_columns: tuple[str, ...]
    layout: FeatureLayout
    model_spec: ModelSpec
    model_id: str
    model_format: str
    output_schema: pa.Schema
    output_names: tuple[str, ...]
    run_id: str
    input_format: str = "parquet"
    tfrecord_features: tuple[TFRecordFeature, ...] = ()
    preprocess: PreprocessPlan | None = None
    postprocess: PostprocessPlan | None = None  # ensembles, calibration, A/B, ...
    drift: DriftPlan | None = (
        None  # --reference-profile (keras_batch_score.transforms.drift.transforms)
    )
    # The launcher's loaded model, kept alive so that an in-process worker reuses it
    # (see keras_batch_score.transforms.model.load.load); never pickled into the pipeline.
    loaded_model: Any = dataclasses.field(default=None, compare=False, repr=False)
    row_locator: bool = False  # no id column: outputs carry source_file + row_index
    feature_columns_source: str = "file_order"  # bundle_options.feature_source
    bundle: bundle_options.BundleUse | None = None
    insights: InsightsPlan | None = None  # --explain, --ood-score, --adversarial-check

    @property
    def passthrough_columns(self) -> tuple[str, ...]:
        """Input columns copied to every output row: the id columns, or the row locator."""
        return LOCATOR_COLUMNS if self.row_locator else tuple(self.config.id_columns)

    @property
    def staging_dir(self) -> str:
        return FileSystems.join(self.config.output, f"_staging-{self.run_id}")


def plan(config: ScoreConfig, *, check_output: bool = True) -> ScoringPlan:
    """Resolves input files, schema, feature layout and model; fails fast with ConfigError.

    Reads only Parquet footers and the model file, never data pages. With
    ``check_output`` the output directory is checked too (keras_batch_score.transforms.run.publish).
    """
    config, bundle = bundle_options.apply_bundle(config)  # verifies the bundle's hashes
    files = match_files(config.input)
    if check_output:
        check_score_output(config.output, config.input, overwrite=config.overwrite)
    input_format = resolve_input_format(config.input_format, files)
    tf_features = (
        plan_features(config.tfrecord_features, files) if input_format == "tfrecord" else ()
    )
    inputs = None if tf_features else unify_input_schemas(files)  # footers, unified by name
    schema = arrow_schema(tf_features) if tf_features else inputs.schema
    locator = not config.id_columns  # source_file + row_index join outputs back to inputs
    if locator:
        check_locator_names(schema)
    bundle_options.check_input(bundle, schema)
    spec = postprocess_options.model_spec(config, postprocess_options.primary_path(config))
    spec = bundle_options.pin_model(spec, config, bundle)
    model = load(spec)
    if inputs is not None:
        inputs.require_for_model(
            config.id_columns, config.feature_columns, model.inputs, config.preprocess
        )
    preprocess_plan = plan_from_config(config.preprocess, schema, model.inputs)
    if preprocess_plan is None:
        layout = plan_layout(
            schema,
            model.inputs,
            id_columns=config.id_columns,
            feature_columns=config.feature_columns,
        )
    else:
        layout = preprocess_plan.layout()
    health_check(model, layout.widths())
    read_columns = tuple(dict.fromkeys([*config.id_columns, *layout.columns]))
    out_schema = predictions_schema(
        with_locator(schema) if locator else schema,
        LOCATOR_COLUMNS if locator else config.id_columns,
        model.outputs,
    )
    output_names = tuple(info.name for info in model.outputs)
    post = postprocess_options.plan_postprocess(config, spec, model, layout.widths())
    if post is not None:
        out_schema, output_names = post.output_schema(out_schema), post.output_names(output_names)
    insights = plan_insights(config, spec, model, layout, preprocessed=preprocess_plan is not None)
    if insights is not None:
        out_schema = insights.output_schema(out_schema)
        output_names = insights.output_names(output_names)
    check_id_columns(config.id_columns, out_schema)
    drift_plan = plan_drift_from_config(config, schema, model.outputs, out_schema.names)
    if drift_plan is not None and post is not None and post.shadow is not None:
        drift_plan = with_shadow_targets(drift_plan, shadow_keys(post))
    if drift_plan is not None:
        read_columns = tuple(dict.fromkeys([*read_columns, *drift_plan.feature_columns]))
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    return ScoringPlan(
        config=config,
        input_pattern=input_pattern(files, config.input),
        input_files=tuple(files),
        input_schema=schema,
        read_columns=read_columns,
        layout=layout,
        model_spec=spec,
        model_id=model.model_id,
        model_format=model.format,
        output_schema=out_schema,
        output_names=output_names,
        run_id=run_id,
        input_format=input_format,
        tfrecord_features=tf_features,
        preprocess=preprocess_plan,
        postprocess=post,
        drift=drift_plan,
        loaded_model=model,
        row_locator=locator,
        feature_columns_source=bundle_options.feature_source(
            config, bundle, model.inputs, layout.columns
        ),
        bundle=bundle,
        insights=insights,
    )


def read_input(plan: ScoringPlan, *, with_errors: bool = False) -> ReadInput:
    """The plan's input files as Arrow tables (Parquet row groups or parsed TFRecord batches).

    With ``with_errors`` the step returns ``(tables, errors)``: records that cannot be parsed.
    """
    return ReadInput(
        input_format=plan.input_format,
        files=plan.input_files,
        pattern=plan.input_pattern,
        columns=plan.read_columns,
        tfrecord_features=plan.tfrecord_features,
        batch_rows=plan.config.batch_size,
        schema=plan.input_schema,
        locator=plan.row_locator,
        with_errors=with_errors,
    )


class PrepareBatches(beam.PTransform):
    """Arrow tables -> ScoringBatches of at most ``batch_size`` rows, validated or preprocessed.

    Returns:
        A ``DoOutputsTuple`` with ``batches`` and ``errors`` (errors tables).
    """

    def __init__(self, plan: ScoringPlan, keep_columns: Sequence[str]) -> None:
        super().__init__()
        self._plan = plan
        self._keep = list(keep_columns)

    def expand(self, tables: beam.PCollection):
        plan, config = self._plan, self._plan.config
        sliced = tables | "Shard" >> Rebatch(config.batch_size)
        if config.reshuffle:
            sliced = sliced | "Reshuffle" >> beam.Reshuffle()
        if plan.preprocess is not None:
            return sliced | "Preprocess" >> PreprocessFeatures(plan.preprocess, self._keep)
        return sliced | "Check" >> ValidateFeatures(plan.layout, self._keep)


class ScoreBatches(beam.PTransform):
    """ScoringBatches -> ``(scored batches, errors tables)``.

    One model through ``RunInference`` (step ``Model[<id>]``), or, with a
    post-processing plan, the ensemble members / A-B arms / fallback followed
    by calibration, clipping and labels.
    """

    def __init__(self, plan: ScoringPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, batches: beam.PCollection):
        plan, config = self._plan, self._plan.config
        if plan.postprocess is not None:
            return score_and_postprocess(
                batches,
                plan.postprocess,
                plan.layout.widths(),
                max_batch_rows=config.batch_size,
                min_batch_rows=config.min_batch_size,
            )
        handler = KerasModelHandler(
            plan.model_spec,
            plan.layout.widths(),
            max_batch_rows=config.batch_size,
            min_batch_rows=config.min_batch_size,
        )
        return batches | f"Model[{plan.model_id}]" >> RunKerasInference(handler)


def build_pipeline(
    pipeline: beam.Pipeline,
    plan: ScoringPlan,
    *,
    started_at: float | None = None,
    progress_dir: str | None = None,
) -> beam.PCollection:
    """Adds the scoring steps to ``pipeline``.

    Args:
        pipeline: The pipeline to add to.
        plan: The checked plan.
        started_at: When the run started (epoch seconds; default: now).
        progress_dir: A local directory the workers report scored and failed
            rows to (:mod:`keras_batch_score.transforms.run.progress`); None on remote runners.

    Returns:
        The PCollection holding the run summary dict (written to ``run_summary.json``).
    """
    config = plan.config
    started_at = time.time() if started_at is None else started_at
    tables, read_errors = pipeline | "Read" >> read_input(plan, with_errors=True)
    validated = tables | "Validate" >> PrepareBatches(
        plan, kept_columns(plan.passthrough_columns, plan.drift)
    )
    scored, inference_errors = validated.batches | "Score" >> ScoreBatches(plan)
    if (
        plan.insights is not None
    ):  # attributions, OOD scores, fragility (keras_batch_score.transforms.postprocess.insights)
        scored, insight_errors = scored | "Insights" >> AddInsights(plan.insights)
        inference_errors = (inference_errors, insight_errors) | "InsightErrors" >> beam.Flatten()
    errors = (read_errors, validated.errors, inference_errors) | "AllErrors" >> beam.Flatten()

    staging = plan.staging_dir
    reports = None
    if plan.drift is not None:  # written into staging, published by Finalize with the rest
        reports = (
            scored
            | "Drift"
            >> ComputeDrift(plan.drift, staging, {"run_id": plan.run_id, "model": plan.model_id})
            | "DriftFiles" >> beam.FlatMap(lambda _, d: report_paths(d), staging)
        )
    prediction_files = scored | "WritePredictions" >> WritePredictions(
        FileSystems.join(staging, PREDICTIONS_PREFIX),
        plan.output_schema,
        plan.output_names,
        num_shards=config.num_shards,
        progress_seconds=config.progress_seconds,
        progress_dir=progress_dir,
        output_format=config.output_format,
        layout=json_layout(plan),
    )
    if progress_dir is not None:
        _ = errors | "ProgressFailed" >> beam.ParDo(CountFailedRows(progress_dir))
    error_files = errors | "WriteErrors" >> WriteErrors(FileSystems.join(staging, ERRORS_PREFIX))
    counts = {
        "rows_read": (tables, read_errors),  # counted apart: a Flatten would copy every table
        "rows_scored": scored,
        "rows_failed": errors,
    } | "CountRows" >> CountRows()
    if plan.postprocess is not None:
        fallback = plan.postprocess.fallback
        counts = add_model_counts(counts, scored, fallback.model_id if fallback else None)
        if plan.postprocess.shadow is not None:
            counts = add_shadow_stats(
                counts,
                scored,
                shadow_pairs(plan.postprocess),
                {"model": plan.postprocess.shadow.model_id},
            )
    if plan.insights is not None:
        counts = add_insight_counts(counts, scored, plan.insights)
    summary = {
        "run_id": plan.run_id,
        "model": plan.model_id,
        "model_format": plan.model_format,
        "input_files": len(plan.input_files),
        "feature_columns": plan.layout.columns,
        "feature_columns_source": plan.feature_columns_source,
        "config": config.to_dict(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        **run_facts(plan, pipeline.options),
    }
    noise = plan.postprocess.noise if plan.postprocess is not None else None
    if noise is not None:  # the seed is secret: it would let anyone subtract the noise
        summary["output_noise"] = noise.summary()
        summary["config"] = {**summary["config"], "seed": noise.summary()["seed"]}
    return pipeline | "Finalize" >> FinalizeRun(
        absolute_uri(config.output),  # so run_summary.json lists absolute output files
        staging,
        started_at,
        summary,
        counts=counts,
        predictions=prediction_files,
        errors=error_files,
        reports=reports,
    )


def run_facts(plan: ScoringPlan, options: PipelineOptions) -> dict[str, Any]:
    """The summary's absolute URIs, versions, runner and bundle (see docs/usage.md, Quick start)."""
    from keras_batch_score.pipelines.postprocess_options import parse_members

    facts: dict[str, Any] = {
        "input": absolute_uri(plan.config.input),
        "input_uris": [absolute_uri(f) for f in plan.input_files],
        "output": absolute_uri(plan.config.output),
        "model_uris": [absolute_uri(m.path) for m in parse_members(plan.config.model)],
        "runner": (options.view_as(StandardOptions).runner or LOCAL_RUNNER),
        "versions": versions(),
        "bundle": None,
    }
    if plan.bundle is not None:
        manifest = plan.bundle.manifest
        facts["bundle"] = {
            "uri": absolute_uri(plan.bundle.path),
            "version": manifest.version,
            "manifest": json.loads(manifest.to_json()),
        }
    return facts


def json_layout(plan: ScoringPlan) -> JsonLayout:
    """Which output columns form a JSON line's ``instance`` and ``prediction``."""
    ids = list(plan.passthrough_columns)
    k = len(plan.postprocess.outputs) if plan.postprocess is not None else len(plan.output_names)
    base = [n for n in plan.output_schema.names if n not in ids][:k]
    return prediction_layout(ids, base, plan.output_names[:k])


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the leftover flags; the local default runner is chosen explicitly.

    Without ``--runner`` (or with ``--runner=DirectRunner``) the job runs on
    Beam's FnApi runner, which is the batch engine DirectRunner picks anyway,
    without first trying to download and start the Prism runner.
    """
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "SwitchingDirectRunner"):
        standard.runner = LOCAL_RUNNER
    options.view_as(SetupOptions).save_main_session = False
    return options


def parse_args(argv: Sequence[str] | None) -> tuple[ScoreConfig, list[str], str]:
    """Parses ``argv`` into (config, beam flags, verbosity)."""
    from keras_batch_score.pipelines import cli_help
    from keras_batch_score.pipelines.config import score_defaults

    parser = cli_help.new_parser(
        "score", "Score Parquet or TFRecord data with a Keras model on Apache Beam."
    )
    add_score_arguments(parser)
    console_flags = parser.add_argument_group("console")
    group = console_flags.add_mutually_exclusive_group()
    group.add_argument(
        "--verbose", action="store_true", help="Show every log line (Beam, TensorFlow)."
    )
    group.add_argument("--quiet", action="store_true", help="Show only errors.")
    console_flags.add_argument(
        "--wait",
        action="store_true",
        help="Block until the job ends and print its summary (default: only on local runners).",
    )
    cli_help.polish(parser, score_defaults())
    known, beam_args = cli_help.parse_flags(parser, argv)  # unknown flags first
    verbosity = "verbose" if known.verbose else "quiet" if known.quiet else "normal"
    del known.verbose, known.quiet, known.wait  # run() reads --wait itself
    config = resolve_config(known)
    return config, beam_args, verbosity


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, validates everything, runs the pipeline and waits for it on local runners.

    Returns:
        The run summary (also written to ``<output>/run_summary.json``); on
        Dataflow, Flink or a remote job server without ``--wait``, the submission
        info instead (see :func:`waits_for_job`).

    Raises:
        ConfigError: for any configuration problem, before data is read.
    """
    from keras_batch_score.pipelines import console

    started_at = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    wait = "--wait" in argv
    config, beam_args, verbosity = parse_args(argv)
    console.configure(verbosity)
    options = pipeline_options(beam_args)
    scoring_plan = plan(config)
    console.echo(
        f"scoring {len(scoring_plan.input_files)} file(s) with {scoring_plan.model_id} "
        f"({scoring_plan.model_format}); {len(scoring_plan.layout.columns)} feature column(s) -> {config.output}"
    )
    for note in scoring_plan.bundle.notes() if scoring_plan.bundle else []:
        console.echo(note)
    console.echo(
        bundle_options.describe_features(
            scoring_plan.layout.columns, scoring_plan.feature_columns_source
        )
    )
    pipeline = beam.Pipeline(options=options)
    summary_path = FileSystems.join(config.output, "run_summary.json")
    summary = None
    monitor = _progress_monitor(scoring_plan, options, verbosity)
    try:
        build_pipeline(
            pipeline,
            scoring_plan,
            started_at=started_at,
            progress_dir=monitor.directory if monitor else None,
        )
        result = pipeline.run()  # on local runners this returns when the job is done
        echo_console_url(result, options)
        if not (wait or waits_for_job(options)):
            return _submitted(result, options, scoring_plan, summary_path)
        result.wait_until_finish()
        summary = _read_summary(summary_path)
    except Exception:  # a failed job's staged files (e.g. filling a full disk) go
        discard_staging(scoring_plan.staging_dir)
        raise
    finally:
        if monitor is not None:
            monitor.stop(summary)
    console.echo(
        f"done: {summary['rows_read']:,} rows read, {summary['rows_scored']:,} scored, "
        f"{summary['rows_failed']:,} failed in {summary['elapsed_seconds']:.1f}s "
        f"({summary['rows_per_second'] or 0:,.0f} rows/s); summary: {summary_path}"
    )
    if config.reference_profile:  # raises DriftDetectedError with --fail-on-drift
        summary["drift"] = drift_outcome(config.output, fail_on_drift=config.fail_on_drift)
        console.echo(f"drift: {summary['drift']['message']}; report: {summary['drift']['report']}")
    return summary


def _progress_monitor(scoring_plan: ScoringPlan, options: PipelineOptions, verbosity: str) -> Any:
    """A started :class:`keras_batch_score.pipelines.progress.ProgressMonitor` for local runs (None: no progress).

    Remote workers cannot write to the launcher's disk, so jobs the launcher
    does not run itself (Dataflow, remote job servers) get none.
    """
    from keras_batch_score.pipelines import progress

    runner = (options.view_as(StandardOptions).runner or LOCAL_RUNNER).split(".")[-1]
    local = runner in (LOCAL_RUNNER, "DirectRunner", "BundleBasedDirectRunner") or (
        runner == "PortableRunner" and options.view_as(PortableOptions).job_endpoint == "embed"
    )
    if verbosity == "quiet" or not local:
        return None
    total = progress.input_total(scoring_plan.input_files, scoring_plan.input_format)
    live = verbosity == "normal" and sys.stderr.isatty()
    return progress.ProgressMonitor(total, scoring_plan.config.progress_seconds, live=live).start()


def echo_console_url(result: Any, options: PipelineOptions) -> None:
    """On Dataflow, prints the job's page in the Cloud console."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from keras_batch_score.pipelines import console, progress

    runner = (options.view_as(StandardOptions).runner or "").split(".")[-1]
    job_id = result.job_id() if hasattr(result, "job_id") else None
    if runner in ("DataflowRunner", "TestDataflowRunner") and job_id:
        cloud = options.view_as(GoogleCloudOptions)
        console.echo(f"Dataflow job: {progress.console_url(job_id, cloud.region, cloud.project)}")


def waits_for_job(options: PipelineOptions) -> bool:
    """Whether the launcher should block on the job: yes when the job lives in this process.

    Dataflow (a Flex Template launcher must not block), Flink with
    ``--flink_submit_uber_jar`` and remote portable job servers only submit; the
    job writes ``run_summary.json`` itself. Local runners, an embedded job server
    and Flink through a job server this process starts must be waited for.
    """
    runner = (options.view_as(StandardOptions).runner or LOCAL_RUNNER).split(".")[-1]
    if runner in (LOCAL_RUNNER, "DirectRunner", "BundleBasedDirectRunner"):
        return True
    if runner == "FlinkRunner":
        flink = options.view_as(FlinkRunnerOptions)
        return not flink.flink_submit_uber_jar or flink.flink_master in ("[local]", "[auto]")
    endpoint = options.view_as(PortableOptions).job_endpoint
    return runner == "PortableRunner" and endpoint in (None, "embed")


def _submitted(
    result: Any, options: PipelineOptions, scoring_plan: ScoringPlan, summary_path: str
) -> dict[str, Any]:
    from keras_batch_score.pipelines import console

    job_id = result.job_id() if hasattr(result, "job_id") else None
    info = {
        "submitted": True,
        "runner": options.view_as(StandardOptions).runner,
        "state": str(result.state),
        "job_id": job_id,
        "run_id": scoring_plan.run_id,
        "summary": summary_path,
    }
    console.echo(
        f"submitted to {info['runner']} (job {job_id or 'n/a'}, state {info['state']}); "
        f"the job writes {summary_path} when it finishes (pass --wait to block)"
    )
    return info


def _read_summary(path: str) -> dict[str, Any]:
    import json

    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.score``."""
    from keras_batch_score.pipelines.cli import main as cli_main

    return cli_main(["score", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
