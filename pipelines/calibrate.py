"""The calibration pipeline: labelled Parquet -> model scores -> fitted calibration + report.

Usage::

    batch-score calibrate --model model.keras --input labelled.parquet --label-column y \\
        --method temperature --output calib.json   # or --output calib/ (a directory)

It takes the same input, column and model flags as ``score`` (an ensemble is
calibrated on its combined output) and reuses its plan and steps
(:func:`keras_batch_score.pipelines.planning.plan_calibration`: the raw scores
of the model or ensemble, validation and ``RunInference``). Predictions and labels are collected with a
``CombineFn`` (fine at validation-set sizes), the parameters are fitted and
written as JSON together with a report (ECE, MCE, Brier, NLL before and
after; "after" cross-fitted over 5 folds) and a self-contained calibration
report with an SVG reliability diagram (``<output stem>.reliability.html``),
all from inside the pipeline. ``--output`` is a
``.json`` path or a directory, which gets ``calibration.json`` and
``calibration.reliability.html``; it is checked before any data is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.pipelines import cli_help, console
from keras_batch_score.pipelines.command import (
    Command,
    Job,
    Parsed,
    add_console_flags,
    pop_console_flags,
)
from keras_batch_score.pipelines.config import (
    ScoreConfig,
    add_score_arguments,
    resolve_config,
    score_defaults,
)
from keras_batch_score.pipelines.options import Check, not_offered
from keras_batch_score.pipelines.planning.scoring import ScoringPlan, plan_calibration
from keras_batch_score.transforms.core.batch import ScoringBatch
from keras_batch_score.transforms.core.errors import DataError
from keras_batch_score.transforms.postprocess import calibration as cal
from keras_batch_score.transforms.run.output_checks import resolve_output_file

CALIBRATION_FILE = "calibration.json"

# Scoring flags calibrate does not offer: it fits on raw model scores (no calibration,
# post-transforms, A/B routing or fallback), writes no predictions and checks no drift.
# Which command offers a flag is part of its schema entry (keras_batch_score.pipelines.options).
NOT_OFFERED = not_offered("calibrate")


@dataclasses.dataclass(frozen=True)
class CalibrateOptions:
    """The calibrate-only settings."""

    label_column: str
    method: str
    output: str
    bins: int = cal.DEFAULT_BINS
    input_kind: str | None = None

    @property
    def stem(self) -> str:
        return self.output[: -len(".json")] if self.output.endswith(".json") else self.output

    @property
    def html(self) -> str:
        return f"{self.stem}.reliability.html"


def parse_args(argv: Sequence[str] | None) -> tuple[ScoreConfig, CalibrateOptions, list[str], str]:
    """Parses flags into (scoring config, calibrate options, Beam flags, verbosity)."""
    parser = cli_help.new_parser(
        "calibrate",
        "Fit probability calibration for a Keras classifier on labelled Parquet or TFRecord data.",
    )
    add_score_arguments(parser, command="calibrate")
    cli_help.set_help(
        parser,
        "--output",
        f"Calibration .json file to write (its <stem>.reliability.html report goes beside it), "
        f"or a directory that gets {CALIBRATION_FILE} and calibration.reliability.html "
        "(local or gs://); checked before any data is read.",
    )
    own = parser.add_argument_group("calibration")
    own.add_argument(
        "--label-column",
        dest="label_column",
        required=True,
        help="Column with the true class index (0/1 for binary models).",
    )
    own.add_argument(
        "--method",
        choices=cal.METHODS,
        default="temperature",
        help="temperature (multiclass or binary), platt (binary), isotonic.",
    )
    own.add_argument(
        "--bins",
        type=int,
        default=cal.DEFAULT_BINS,
        help="Equal-width bins for ECE/MCE and the diagram.",
    )
    own.add_argument(
        "--model-outputs",
        dest="input_kind",
        choices=cal.INPUT_KINDS,
        default=None,
        help="Whether the model outputs probabilities or logits (default: detected).",
    )
    add_console_flags(parser)
    cli_help.polish(parser, score_defaults())
    known, beam_args = cli_help.parse_flags(parser, argv)  # unknown flags first
    verbosity, _ = pop_console_flags(known)
    options = CalibrateOptions(
        known.label_column, known.method, getattr(known, "output", ""), known.bins, known.input_kind
    )
    for name in ("label_column", "method", "bins", "input_kind"):
        delattr(known, name)
    config = resolve_config(known, extra_checks=[_calibrate_check(options)])
    output = resolve_output_file(config.output, CALIBRATION_FILE)
    options = dataclasses.replace(options, output=output)
    # The label rides along as a passthrough column, which also keeps it out of the default features.
    config = dataclasses.replace(config, id_columns=[*config.id_columns, options.label_column])
    return config, options, beam_args, verbosity


def _calibrate_check(options: CalibrateOptions) -> Check:
    """The calibrate-only rules, reported together with the scoring settings' problems."""

    def check(config: ScoreConfig) -> Iterator[str]:
        if options.bins < 1:
            yield f"--bins must be >= 1, got {options.bins}"
        if config.calibration or config.top_k or config.ab_split or config.fallback_model:
            yield (
                "calibrate fits on raw model scores: drop --calibration, --top-k, --ab-split "
                "and --fallback-model"
            )
        if options.label_column in config.id_columns:
            yield f"--label-column {options.label_column!r} is also an --id-column"
        if config.feature_columns and options.label_column in config.feature_columns:
            yield f"--label-column {options.label_column!r} is also a feature column"

    return check


class ConcatScoresFn(beam.CombineFn):
    """Collects (scores, labels) array pairs into two concatenated arrays."""

    def create_accumulator(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return []

    def add_input(self, acc: list, element: tuple[np.ndarray, np.ndarray]) -> list:
        acc.append(element)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        return [pair for acc in accumulators for pair in acc]

    def extract_output(self, acc: list) -> tuple[np.ndarray, np.ndarray]:
        if not acc:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.concatenate([a for a, _ in acc]), np.concatenate([b for _, b in acc])


def scores_and_labels(
    batch: ScoringBatch, key: str, label_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """The batch's model scores and labels, rows with a null label dropped (vectorized)."""
    labels = batch.table.column(label_column)
    valid = np.asarray(labels.is_valid()) if labels.null_count else None
    values = (
        labels.to_numpy(zero_copy_only=False)
        if valid is None
        else labels.drop_null().to_numpy(zero_copy_only=False)
    )
    scores = np.asarray(batch.predictions[key])
    return (scores if valid is None else scores[valid]), values


class FitAndWriteDoFn(beam.DoFn):
    """Fits the calibration and writes the JSON and the HTML report (runs once)."""

    def __init__(self, options: CalibrateOptions, info: dict[str, Any]) -> None:
        self._options = options
        self._info = info

    def process(self, collected: tuple[np.ndarray, np.ndarray], rows_failed: int):
        from keras_batch_score.transforms.postprocess.reliability import reliability_html

        scores, labels = collected
        o = self._options
        try:
            fitted, after = cal.fit_and_evaluate(
                scores, labels, o.method, input_kind=o.input_kind, n_bins=o.bins
            )
        except ValueError as e:
            raise DataError(
                f"cannot fit {o.method} calibration on label column {o.label_column!r}: {e}"
            ) from None
        report = {
            **fitted.report,
            "rows_failed": int(rows_failed),
            **self._info,
            "reliability_html": o.html,
        }
        fitted = dataclasses.replace(fitted, report=report)
        s = cal.as_scores(scores)
        y = cal.check_labels(labels, s)
        before = cal.to_probabilities(s, fitted.input_kind)
        page = reliability_html(before, after, y, report, f"Calibration ({o.method})", o.bins)
        _write(o.html, page.encode("utf-8"))
        _write(o.output, fitted.to_json().encode("utf-8"))
        yield fitted.to_dict()


def _write(path: str, payload: bytes) -> None:
    parent = os.path.dirname(path)
    if parent and FileSystems.get_scheme(path) in (None, "file"):
        os.makedirs(parent, exist_ok=True)
    with FileSystems.create(path) as f:
        f.write(payload)


def _count(element: Any) -> int:
    return int(element.num_rows)


@dataclasses.dataclass(frozen=True)
class CalibrationJob:
    """The settings of one calibrate run: what is scored and how the calibration is fitted."""

    config: ScoreConfig
    options: CalibrateOptions


@dataclasses.dataclass(frozen=True)
class CalibrationPlan:
    """The raw-scores plan (:func:`plan_calibration`) and the fitting settings."""

    scoring: ScoringPlan
    options: CalibrateOptions


def build_pipeline(
    pipeline: beam.Pipeline, plan: ScoringPlan, options: CalibrateOptions
) -> beam.PCollection:
    """Adds read -> validate -> score -> collect -> fit/write steps; returns the fitted dict.

    ``plan`` comes from :func:`keras_batch_score.pipelines.planning.plan_calibration`.
    """
    config = plan.config
    key = plan.postprocess.outputs[0].key
    tables = pipeline | "Read" >> plan.read()
    validated = tables | "Validate" >> plan.prepare(config.id_columns)
    scored, errors = validated.batches | "Score" >> plan.score()
    failed = (
        (validated.errors, errors)
        | "AllErrors" >> beam.Flatten()
        | "CountFailed" >> beam.Map(_count)
        | "SumFailed" >> beam.CombineGlobally(sum)
    )
    collected = (
        scored
        | "ScoresAndLabels" >> beam.Map(scores_and_labels, key, options.label_column)
        | "Collect" >> beam.CombineGlobally(ConcatScoresFn())
    )
    info = {
        "model": plan.postprocess.ensemble_label,
        "input": config.input,
        "label_column": options.label_column,
    }
    return collected | "FitAndWrite" >> beam.ParDo(
        FitAndWriteDoFn(options, info), beam.pvalue.AsSingleton(failed)
    )


class CalibrateCommand(Command[CalibrationJob, CalibrationPlan]):
    """``batch-score calibrate``: fits, writes the calibration and its report, returns the fit."""

    name = "calibrate"

    def parse(self, argv: Sequence[str]) -> Parsed[CalibrationJob]:
        config, options, beam_args, verbosity = parse_args(argv)
        return Parsed(CalibrationJob(config, options), tuple(beam_args), verbosity)

    def plan(self, config: CalibrationJob) -> CalibrationPlan:
        return CalibrationPlan(
            plan_calibration(config.config, config.options.label_column), config.options
        )

    def describe(self, plan: CalibrationPlan) -> Iterable[str]:
        scoring, options = plan.scoring, plan.options
        yield (
            f"calibrating ({options.method}) {scoring.model_id} on "
            f"{len(scoring.input_files)} file(s) -> {options.output}"
        )

    def build(self, pipeline: beam.Pipeline, plan: CalibrationPlan, job: Job) -> None:
        build_pipeline(pipeline, plan.scoring, plan.options)

    def report(
        self, plan: CalibrationPlan, job: Job, outcome: dict[str, Any] | None
    ) -> dict[str, Any]:
        options = plan.options
        with FileSystems.open(options.output) as f:
            result = json.loads(f.read().decode("utf-8"))
        report = result["report"]
        before, after = report["before"], report["after"]
        console.echo(
            f"done in {job.elapsed:.1f}s on {report['rows']:,} rows: "
            f"ECE {before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}, "
            f"Brier {before['brier']:.4f} -> {after['brier']:.4f} "
            f"(after: {report.get('after_evaluation', 'in-sample')}); diagram: {options.html}"
        )
        return result


COMMAND = CalibrateCommand()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, checks everything, runs the calibration pipeline and returns the fitted dict."""
    return COMMAND.run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.calibrate``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
