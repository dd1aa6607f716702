"""The scoring pipeline: Parquet -> validate -> Keras RunInference -> predictions, errors, summary.

Usage::

    batch-score score --model model.keras --input 'data/*.parquet' --output out/ [beam flags]
    python -m pipelines.score ...   # the same

:func:`plan` validates the configuration, the input schema and the model
before any data is read. :func:`build_pipeline` adds the steps to a Beam
pipeline; :func:`run` does both and runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipelines.config import ScoreConfig, add_score_arguments, resolve_config, split_beam_args
from transforms.errors import ConfigError
from transforms.inference import KerasModelHandler, Rebatch, RunKerasInference
from transforms.io import (
    ERRORS_PREFIX,
    PREDICTIONS_PREFIX,
    ReadParquetBatches,
    WriteErrors,
    WritePredictions,
    input_pattern,
    match_files,
    predictions_schema,
    read_parquet_schema,
)
from transforms.keras_model import ModelSpec, health_check, load
from transforms.summary import CountRows, FinalizeRun
from transforms.validate import FeatureLayout, ValidateFeatures, plan_layout

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

    @property
    def staging_dir(self) -> str:
        return FileSystems.join(self.config.output, f"_staging-{self.run_id}")


def plan(config: ScoreConfig) -> ScoringPlan:
    """Resolves input files, schema, feature layout and model; fails fast with ConfigError.

    Reads only Parquet footers and the model file, never data pages.
    """
    files = match_files(config.input)
    schema = read_parquet_schema(files[0])
    for other in files[1:]:
        other_schema = read_parquet_schema(other)
        if not other_schema.equals(schema):
            raise ConfigError(
                f"input files have different schemas: {files[0]} and {other}; all files must share one schema"
            )
    spec = ModelSpec(
        path=config.model[0],
        custom_objects=tuple(config.custom_objects),
        safe_mode=not config.unsafe_deserialization,
        signature=config.signature,
    )
    model = load(spec)
    layout = plan_layout(
        schema, model.inputs, id_columns=config.id_columns, feature_columns=config.feature_columns
    )
    health_check(model, layout.widths())
    read_columns = tuple(dict.fromkeys([*config.id_columns, *layout.columns]))
    out_schema = predictions_schema(schema, config.id_columns, model.outputs)
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
        output_names=tuple(info.name for info in model.outputs),
        run_id=run_id,
    )


def build_pipeline(
    pipeline: beam.Pipeline, plan: ScoringPlan, *, started_at: float | None = None
) -> beam.PCollection:
    """Adds the scoring steps to ``pipeline``.

    Returns:
        The PCollection holding the run summary dict (written to ``run_summary.json``).
    """
    config = plan.config
    started_at = time.time() if started_at is None else started_at
    handler = KerasModelHandler(
        plan.model_spec,
        plan.layout.widths(),
        max_batch_rows=config.batch_size,
        min_batch_rows=config.min_batch_size,
    )

    tables = pipeline | "Read" >> ReadParquetBatches(plan.input_pattern, plan.read_columns)
    sliced = tables | "Shard" >> Rebatch(config.batch_size)
    if config.reshuffle:
        sliced = sliced | "Reshuffle" >> beam.Reshuffle()
    validated = sliced | "Validate" >> ValidateFeatures(plan.layout, config.id_columns)
    scored, inference_errors = validated.batches | f"Model[{plan.model_id}]" >> RunKerasInference(
        handler
    )
    errors = (validated.errors, inference_errors) | "AllErrors" >> beam.Flatten()

    staging = plan.staging_dir
    prediction_files = scored | "WritePredictions" >> WritePredictions(
        FileSystems.join(staging, PREDICTIONS_PREFIX),
        plan.output_schema,
        plan.output_names,
        num_shards=config.num_shards,
        progress_seconds=config.progress_seconds,
    )
    error_files = errors | "WriteErrors" >> WriteErrors(FileSystems.join(staging, ERRORS_PREFIX))
    counts = {
        "rows_read": tables,
        "rows_scored": scored,
        "rows_failed": errors,
    } | "CountRows" >> CountRows()
    summary = {
        "run_id": plan.run_id,
        "model": plan.model_id,
        "model_format": plan.model_format,
        "input_files": len(plan.input_files),
        "config": config.to_dict(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
    }
    return pipeline | "Finalize" >> FinalizeRun(
        config.output,
        staging,
        started_at,
        summary,
        counts=counts,
        predictions=prediction_files,
        errors=error_files,
    )


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
    parser = argparse.ArgumentParser(
        prog="batch-score score",
        description="Score Parquet data with a Keras model on Apache Beam.",
    )
    add_score_arguments(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--verbose", action="store_true", help="Show every log line (Beam, TensorFlow)."
    )
    group.add_argument("--quiet", action="store_true", help="Show only errors.")
    known, rest = parser.parse_known_args(argv)
    verbosity = "verbose" if known.verbose else "quiet" if known.quiet else "normal"
    del known.verbose, known.quiet
    config = resolve_config(known)
    return config, split_beam_args(rest), verbosity


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, validates everything, runs the pipeline and waits for it.

    Returns:
        The run summary (also written to ``<output>/run_summary.json``).

    Raises:
        ConfigError: for any configuration problem, before data is read.
    """
    from pipelines import console

    started_at = time.time()
    config, beam_args, verbosity = parse_args(argv)
    console.configure(verbosity)
    options = pipeline_options(beam_args)
    scoring_plan = plan(config)
    console.echo(
        f"scoring {len(scoring_plan.input_files)} file(s) with {scoring_plan.model_id} "
        f"({scoring_plan.model_format}); {len(scoring_plan.layout.columns)} feature column(s) -> {config.output}"
    )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, scoring_plan, started_at=started_at)
    result = pipeline.run()
    result.wait_until_finish()
    summary_path = FileSystems.join(config.output, "run_summary.json")
    summary = _read_summary(summary_path)
    console.echo(
        f"done: {summary['rows_read']:,} rows read, {summary['rows_scored']:,} scored, "
        f"{summary['rows_failed']:,} failed in {summary['elapsed_seconds']:.1f}s "
        f"({summary['rows_per_second'] or 0:,.0f} rows/s); summary: {summary_path}"
    )
    return summary


def _read_summary(path: str) -> dict[str, Any]:
    import json

    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pipelines.score``."""
    from pipelines.cli import main as cli_main

    return cli_main(["score", *(argv if argv is not None else os.sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
