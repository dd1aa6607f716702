"""``batch-score fit-preprocess``: compute a preprocessing spec's statistics from training data.

Usage::

    batch-score fit-preprocess --input 'train/*.parquet' --spec spec.yaml --output fitted.yaml

Reads Parquet or TFRecord (like ``score``), fills in every statistic the spec
leaves out (``standardize: true``, ``min_max: true``, ``fill_missing: mean``,
vocabularies) with Beam CombineFns, and writes the fitted spec as YAML in the
pipeline's last step. Score with ``--preprocess fitted.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.pipelines import cli_help, console
from keras_batch_score.pipelines.command import (
    Command,
    Job,
    Parsed,
    add_console_flags,
    pop_console_flags,
)
from keras_batch_score.pipelines.planning.inputs import InputPlan, plan_input
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.io.parquet_read import ReadParquetBatches
from keras_batch_score.transforms.io.tfrecord_read import DEFAULT_PARSE_ROWS, ReadTFRecordBatches
from keras_batch_score.transforms.preprocess.fit import FitPreprocessSpec
from keras_batch_score.transforms.preprocess.plan import check_columns
from keras_batch_score.transforms.preprocess.spec import PreprocessSpec, load_spec


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    from keras_batch_score.pipelines.options import add_flag

    parser = cli_help.new_parser(
        "fit-preprocess",
        "Fit a preprocessing spec (means, stds, min/max, vocabularies) on training data.",
    )
    add_flag(parser, "input", required=True, help="Training data: file, directory or glob.")
    parser.add_argument("--spec", required=True, help="Preprocessing spec YAML to fit.")
    add_flag(parser, "output", required=True, help="Where to write the fitted spec (YAML).")
    add_flag(parser, "input_format", default="auto")
    add_flag(
        parser,
        "tfrecord_features",
        help="YAML file with a tfrecord_features list (default: inferred from the first records).",
    )
    add_console_flags(parser)
    cli_help.polish(parser)
    return cli_help.parse_flags(parser, argv)  # unknown flags first


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """The spec to fit, the training data and where the fitted spec goes."""

    spec_path: str
    spec: PreprocessSpec
    input: InputPlan
    output: str


def plan(args: argparse.Namespace) -> FitPlan:
    """Loads the spec and checks its columns against the input; reads no data.

    Raises:
        ConfigError: for a bad spec, missing columns or a spec with nothing to fit.
    """
    spec = load_spec(args.spec)
    source = plan_input(args.input, args.input_format, args.tfrecord_features)
    check_columns(spec, source.schema)
    if not spec.needs_fit():
        raise ConfigError(f"the spec {args.spec} has nothing to fit: every statistic is given")
    return FitPlan(args.spec, spec, source, args.output)


def _write_yaml(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    with FileSystems.create(path) as f:
        f.write(yaml.safe_dump(payload, sort_keys=False).encode("utf-8"))
    return payload


def build_pipeline(pipeline: beam.Pipeline, plan: FitPlan) -> beam.PCollection:
    """Adds read -> fit -> write to ``pipeline``."""
    source, columns = plan.input, plan.spec.columns
    if source.format == "tfrecord":
        read = ReadTFRecordBatches(
            source.pattern, source.tfrecord_features, DEFAULT_PARSE_ROWS, columns
        )
    else:
        read = ReadParquetBatches(list(source.files), columns)
    output = plan.output
    return (
        pipeline
        | "Read" >> read
        | "Fit" >> FitPreprocessSpec(plan.spec)
        | "WriteSpec" >> beam.Map(lambda fitted: _write_yaml(output, fitted))
    )


class FitPreprocessCommand(Command[argparse.Namespace, FitPlan]):
    """``batch-score fit-preprocess``: writes the fitted spec and returns it."""

    name = "fit-preprocess"

    def parse(self, argv: Sequence[str]) -> Parsed[argparse.Namespace]:
        args, beam_args = parse_args(argv)
        verbosity, _ = pop_console_flags(args)
        return Parsed(args, tuple(beam_args), verbosity)

    def plan(self, config: argparse.Namespace) -> FitPlan:
        return plan(config)

    def build(self, pipeline: beam.Pipeline, plan: FitPlan, job: Job) -> None:
        build_pipeline(pipeline, plan)

    def report(self, plan: FitPlan, job: Job, outcome: dict[str, Any] | None) -> dict[str, Any]:
        fitted = read_yaml(plan.output, "fitted spec")
        console.echo(f"fitted spec written to {plan.output} in {job.elapsed:.1f}s")
        return fitted


COMMAND = FitPreprocessCommand()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fits the spec and returns the fitted mapping (also written to ``--output``)."""
    return COMMAND.run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.fit_preprocess``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
