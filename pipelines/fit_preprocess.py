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
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml
from keras_batch_score.transforms.io.files import input_pattern, match_files
from keras_batch_score.transforms.io.parquet_read import ReadParquetBatches, read_parquet_schema
from keras_batch_score.transforms.io.tfrecord_read import DEFAULT_PARSE_ROWS, ReadTFRecordBatches
from keras_batch_score.transforms.io.tfrecord_spec import (
    arrow_schema,
    plan_features,
    resolve_input_format,
)
from keras_batch_score.transforms.preprocess.fit import FitPreprocessSpec
from keras_batch_score.transforms.preprocess.plan import check_columns
from keras_batch_score.transforms.preprocess.spec import load_spec


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    from keras_batch_score.pipelines import cli_help

    parser = cli_help.new_parser(
        "fit-preprocess",
        "Fit a preprocessing spec (means, stds, min/max, vocabularies) on training data.",
    )
    parser.add_argument("--input", required=True, help="Training data: file, directory or glob.")
    parser.add_argument("--spec", required=True, help="Preprocessing spec YAML to fit.")
    parser.add_argument("--output", required=True, help="Where to write the fitted spec (YAML).")
    parser.add_argument(
        "--input-format",
        dest="input_format",
        choices=("auto", "parquet", "tfrecord"),
        default="auto",
        help="Input format (auto: TFRecord for *.tfrecord, *.tfrecord.gz, *.tfr; else Parquet).",
    )
    parser.add_argument(
        "--tfrecord-features",
        dest="tfrecord_features",
        default=None,
        help="YAML file with a tfrecord_features list (default: inferred from the first records).",
    )
    parser.add_argument("--verbose", action="store_true", help="Show every log line.")
    parser.add_argument("--quiet", action="store_true", help="Show only errors.")
    cli_help.polish(parser)
    return cli_help.parse_flags(parser, argv)  # unknown flags first


def _write_yaml(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    with FileSystems.create(path) as f:
        f.write(yaml.safe_dump(payload, sort_keys=False).encode("utf-8"))
    return payload


def build_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace) -> beam.PCollection:
    """Adds read -> fit -> write to ``pipeline``; checks the spec and input columns first."""
    spec = load_spec(args.spec)
    files = match_files(args.input)
    fmt = resolve_input_format(args.input_format, files)
    pattern = input_pattern(files, args.input)
    if fmt == "tfrecord":
        features = plan_features(args.tfrecord_features, files)
        check_columns(spec, arrow_schema(features))
        tables = pipeline | "Read" >> ReadTFRecordBatches(
            pattern, features, DEFAULT_PARSE_ROWS, spec.columns
        )
    else:
        check_columns(spec, read_parquet_schema(files[0]))
        tables = pipeline | "Read" >> ReadParquetBatches(files, spec.columns)
    if not spec.needs_fit():
        raise ConfigError(f"the spec {args.spec} has nothing to fit: every statistic is given")
    output = args.output
    return (
        tables
        | "Fit" >> FitPreprocessSpec(spec)
        | "WriteSpec" >> beam.Map(lambda fitted: _write_yaml(output, fitted))
    )


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fits the spec and returns the fitted mapping (also written to ``--output``)."""
    from keras_batch_score.pipelines import console
    from keras_batch_score.pipelines.score import pipeline_options

    args, beam_args = parse_args(argv)
    console.configure("verbose" if args.verbose else "quiet" if args.quiet else "normal")
    started = time.time()
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    build_pipeline(pipeline, args)
    pipeline.run().wait_until_finish()
    fitted = read_yaml(args.output, "fitted spec")
    console.echo(f"fitted spec written to {args.output} in {time.time() - started:.1f}s")
    return fitted


if __name__ == "__main__":
    from keras_batch_score.pipelines.cli import main as cli_main

    raise SystemExit(cli_main(["fit-preprocess", *__import__("sys").argv[1:]]))
