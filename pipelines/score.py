"""The scoring pipeline: Parquet -> validate -> Keras RunInference -> predictions, errors, summary.

Usage::

    batch-score score --model model.keras --input 'data/*.parquet' --output out/ [beam flags]
    python -m keras_batch_score.pipelines.score ...   # the same

:func:`plan` validates the configuration, the input schema and the model
before any data is read (:mod:`keras_batch_score.pipelines.planning`).
:func:`build_pipeline` adds the steps to a Beam pipeline; :func:`run` does
both and runs it (:class:`ScoreCommand`, on the skeleton of
:mod:`keras_batch_score.pipelines.command`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from keras_batch_score.pipelines import bundle_options, cli_help, console
from keras_batch_score.pipelines.about import absolute_uri, versions
from keras_batch_score.pipelines.command import (
    LOCAL_RUNNER,
    Command,
    Job,
    Parsed,
    add_console_flags,
    echo_console_url,
    pipeline_options,
    pop_console_flags,
    runs_locally,
    waits_for_job,
)
from keras_batch_score.pipelines.config import (
    ScoreConfig,
    add_score_arguments,
    resolve_config,
    score_defaults,
)
from keras_batch_score.pipelines.planning.scoring import ScoringPlan, plan_scoring
from keras_batch_score.pipelines.progress import ProgressMonitor
from keras_batch_score.transforms.drift.plan import kept_columns
from keras_batch_score.transforms.drift.report_files import drift_outcome, report_paths
from keras_batch_score.transforms.drift.transforms import ComputeDrift
from keras_batch_score.transforms.io.output_formats import JsonLayout, prediction_layout
from keras_batch_score.transforms.io.read import ReadInput
from keras_batch_score.transforms.io.write import (
    ERRORS_PREFIX,
    PREDICTIONS_PREFIX,
    WriteErrors,
    WritePredictions,
)
from keras_batch_score.transforms.model.shadow import add_shadow_stats, shadow_pairs
from keras_batch_score.transforms.postprocess.insights import AddInsights, add_insight_counts
from keras_batch_score.transforms.postprocess.transforms import add_model_counts
from keras_batch_score.transforms.run.finalize import CountRows, FinalizeRun
from keras_batch_score.transforms.run.progress import CountFailedRows
from keras_batch_score.transforms.run.publish import discard_staging

__all__ = [  # the runner helpers are part of this module's API (tests, templates)
    "LOCAL_RUNNER",
    "ScoreCommand",
    "ScoringPlan",
    "build_pipeline",
    "echo_console_url",
    "json_layout",
    "main",
    "parse_args",
    "pipeline_options",
    "plan",
    "read_input",
    "run",
    "run_facts",
    "waits_for_job",
]

_LOG = logging.getLogger("keras_batch_score")


def plan(config: ScoreConfig, *, check_output: bool = True) -> ScoringPlan:
    """Resolves input files, schema, feature layout and models; fails fast with ConfigError.

    Reads only Parquet footers and the model files, never data pages. With
    ``check_output`` the output directory is checked too (keras_batch_score.transforms.run.publish).
    """
    return plan_scoring(config, check_output=check_output)


def read_input(plan: ScoringPlan, *, with_errors: bool = False) -> ReadInput:
    """The plan's input files as Arrow tables (Parquet row groups or parsed TFRecord batches).

    With ``with_errors`` the step returns ``(tables, errors)``: records that cannot be parsed.
    """
    return plan.read(with_errors=with_errors)


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
    validated = tables | "Validate" >> plan.prepare(
        kept_columns(plan.passthrough_columns, plan.drift)
    )
    scored, inference_errors = validated.batches | "Score" >> plan.score()
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
    if not plan.plain:  # rows per model (ensemble, A/B arms, fallback)
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
    noise = plan.postprocess.noise
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
    facts: dict[str, Any] = {
        "input": absolute_uri(plan.config.input),
        "input_uris": [absolute_uri(f) for f in plan.input_files],
        "output": absolute_uri(plan.config.output),
        "model_uris": [absolute_uri(m.path) for m in plan.models.members],
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
    k = len(plan.postprocess.outputs)
    base = [n for n in plan.output_schema.names if n not in ids][:k]
    return prediction_layout(ids, base, plan.output_names[:k])


def parse_args(argv: Sequence[str] | None) -> tuple[ScoreConfig, list[str], str]:
    """Parses ``argv`` into (config, beam flags, verbosity)."""
    config, beam_args, verbosity, _ = _parse(argv)
    return config, beam_args, verbosity


def _parse(argv: Sequence[str] | None) -> tuple[ScoreConfig, list[str], str, bool]:
    parser = cli_help.new_parser(
        "score", "Score Parquet or TFRecord data with a Keras model on Apache Beam."
    )
    add_score_arguments(parser)
    add_console_flags(parser, wait=True)
    cli_help.polish(parser, score_defaults())
    known, beam_args = cli_help.parse_flags(parser, argv)  # unknown flags first
    verbosity, wait = pop_console_flags(known)
    return resolve_config(known), beam_args, verbosity, wait


class ScoreCommand(Command[ScoreConfig, ScoringPlan]):
    """``batch-score score``: runs the job, waiting for it on local runners."""

    name = "score"

    def parse(self, argv: Sequence[str]) -> Parsed[ScoreConfig]:
        config, beam_args, verbosity, wait = _parse(argv)
        return Parsed(config, tuple(beam_args), verbosity, wait)

    def plan(self, config: ScoreConfig) -> ScoringPlan:
        return plan(config)

    def describe(self, plan: ScoringPlan) -> Iterable[str]:
        yield (
            f"scoring {len(plan.input_files)} file(s) with {plan.model_id} ({plan.model_format}); "
            f"{len(plan.layout.columns)} feature column(s) -> {plan.config.output}"
        )
        yield from plan.bundle.notes() if plan.bundle else []
        yield bundle_options.describe_features(plan.layout.columns, plan.feature_columns_source)

    def execute(self, plan: ScoringPlan, job: Job) -> dict[str, Any] | None:
        """Runs the job; returns its summary, or the submission info when it is not waited for."""
        options = job.options
        pipeline = beam.Pipeline(options=options)
        summary = None
        monitor = _progress_monitor(plan, options, job.verbosity)
        try:
            build_pipeline(
                pipeline,
                plan,
                started_at=job.started,
                progress_dir=monitor.directory if monitor else None,
            )
            result = pipeline.run()  # on local runners this returns when the job is done
            echo_console_url(result, options)
            if not (job.wait or waits_for_job(options)):
                return _submitted(result, options, plan)
            result.wait_until_finish()
            summary = _read_summary(_summary_path(plan))
        except Exception:  # a failed job's staged files (e.g. filling a full disk) go
            discard_staging(plan.staging_dir)
            raise
        finally:
            if monitor is not None:
                monitor.stop(summary)
        return summary

    def report(self, plan: ScoringPlan, job: Job, outcome: dict[str, Any] | None) -> dict[str, Any]:
        summary, config, path = outcome or {}, plan.config, _summary_path(plan)
        if summary.get("submitted"):  # not waited for
            return summary
        console.echo(
            f"done: {summary['rows_read']:,} rows read, {summary['rows_scored']:,} scored, "
            f"{summary['rows_failed']:,} failed in {summary['elapsed_seconds']:.1f}s "
            f"({summary['rows_per_second'] or 0:,.0f} rows/s); summary: {path}"
        )
        if config.reference_profile:  # raises DriftDetectedError with --fail-on-drift
            summary["drift"] = drift_outcome(config.output, fail_on_drift=config.fail_on_drift)
            console.echo(
                f"drift: {summary['drift']['message']}; report: {summary['drift']['report']}"
            )
        return summary


COMMAND = ScoreCommand()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, validates everything, runs the pipeline and waits for it on local runners.

    Returns:
        The run summary (also written to ``<output>/run_summary.json``); on
        Dataflow, Flink or a remote job server without ``--wait``, the submission
        info instead (see :func:`waits_for_job`).

    Raises:
        ConfigError: for any configuration problem, before data is read.
    """
    return COMMAND.run(argv)


def _summary_path(plan: ScoringPlan) -> str:
    return FileSystems.join(plan.config.output, "run_summary.json")


def _progress_monitor(
    plan: ScoringPlan, options: PipelineOptions, verbosity: str
) -> ProgressMonitor | None:
    """A started progress monitor for local runs (None: no progress).

    Remote workers cannot write to the launcher's disk, so jobs the launcher
    does not run itself (Dataflow, remote job servers) get none.
    """
    from keras_batch_score.pipelines import progress

    if verbosity == "quiet" or not runs_locally(options):
        return None
    total = progress.input_total(plan.input_files, plan.input_format)
    live = verbosity == "normal" and sys.stderr.isatty()
    return ProgressMonitor(total, plan.config.progress_seconds, live=live).start()


def _submitted(
    result: PipelineResult, options: PipelineOptions, plan: ScoringPlan
) -> dict[str, Any]:
    job_id = result.job_id() if hasattr(result, "job_id") else None
    summary_path = _summary_path(plan)
    info = {
        "submitted": True,
        "runner": options.view_as(StandardOptions).runner,
        "state": str(result.state),
        "job_id": job_id,
        "run_id": plan.run_id,
        "summary": summary_path,
    }
    console.echo(
        f"submitted to {info['runner']} (job {job_id or 'n/a'}, state {info['state']}); "
        f"the job writes {summary_path} when it finishes (pass --wait to block)"
    )
    return info


def _read_summary(path: str) -> dict[str, Any]:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.score``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
