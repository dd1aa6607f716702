"""The profile pipeline: reference data -> a versioned JSON profile for drift checks.

Usage::

    batch-score profile --input 'train/*.parquet' --output profile.json \\
        [--feature-columns a,b,c] [--id-column id] [--model model.keras] [beam flags]

``--output`` is a ``.json`` path or a directory (then ``profile.json`` is
written inside); it is checked before any data is read.

Without ``--model`` every column that is not an id column is profiled
(numbers, strings, booleans; list columns are skipped), or only
``--feature-columns``. With ``--model`` the model's feature columns are
profiled on the rows it can score, together with its predictions: the
baseline that ``batch-score score --reference-profile`` compares against.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from keras_batch_score.pipelines import cli_help, console
from keras_batch_score.pipelines.command import (
    Command,
    Job,
    Parsed,
    add_console_flags,
    pop_console_flags,
)
from keras_batch_score.pipelines.config import ScoreConfig
from keras_batch_score.pipelines.planning.inputs import InputPlan, plan_input
from keras_batch_score.pipelines.planning.scoring import ScoringPlan, plan_scoring
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.rebatch import Rebatch
from keras_batch_score.transforms.drift.profile_build import Candidate, ProfileSettings
from keras_batch_score.transforms.drift.profile_format import (
    DEFAULT_CATEGORICAL_MAX_DISTINCT,
    DEFAULT_NUM_BINS,
    DEFAULT_TOP_K,
    KindRule,
    ProfileError,
    type_kind,
)
from keras_batch_score.transforms.drift.profiling import BuildProfile
from keras_batch_score.transforms.preprocess.plan import check_columns
from keras_batch_score.transforms.preprocess.spec import load_spec
from keras_batch_score.transforms.run.output_checks import resolve_output_file

DEFAULT_BATCH_ROWS = 16384
PROFILE_FILE = "profile.json"


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """Settings of one profile run (see ``batch-score profile --help``)."""

    input: str
    output: str
    input_format: str = "auto"
    id_columns: tuple[str, ...] = ()
    feature_columns: tuple[str, ...] | None = None
    model: str | None = None
    preprocess: str | None = None
    tfrecord_features: str | None = None
    custom_objects: tuple[str, ...] = ()
    unsafe_deserialization: bool = False
    signature: str | None = None
    batch_size: int = DEFAULT_BATCH_ROWS
    num_bins: int = DEFAULT_NUM_BINS
    top_k: int = DEFAULT_TOP_K
    categorical_max_distinct: int = DEFAULT_CATEGORICAL_MAX_DISTINCT
    categorical_columns: tuple[str, ...] = ()
    numeric_columns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProfilePlan:
    """What the profile pipeline reads and computes, checked before any data is read."""

    config: ProfileConfig
    input: InputPlan
    read_columns: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    skipped: dict[str, str]
    settings: ProfileSettings
    scoring: ScoringPlan | None = None  # with --model

    @property
    def input_files(self) -> tuple[str, ...]:
        return self.input.files


def parse_args(argv: Sequence[str] | None) -> tuple[ProfileConfig, list[str], str]:
    """Parses ``argv`` into (config, Beam flags, verbosity)."""
    from keras_batch_score.pipelines.options import add_flag

    p = cli_help.new_parser(
        "profile", "Profile reference data (and a model's predictions on it) for drift checks."
    )
    add_flag(p, "input", required=True, help="Input file, directory or glob (Parquet or TFRecord).")
    add_flag(
        p,
        "output",
        required=True,
        help=f"Profile .json file to write, or a directory to write {PROFILE_FILE} into "
        "(local or gs://).",
    )
    add_flag(p, "input_format", default="auto")
    add_flag(p, "id_columns", help="Passthrough column, not profiled (repeatable).")
    add_flag(
        p,
        "feature_columns",
        help="Comma-separated columns to profile (default: every non-id column; with --model, "
        "the model's feature columns, as in `score`).",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="Also profile this model's predictions: a .keras or .h5 file, a SavedModel "
        "directory or a bundle directory.",
    )
    add_flag(
        p,
        "preprocess",
        help="Preprocessing spec YAML, as in `score`: with --model the model is fed through it; "
        "the raw columns it reads are profiled (default features without --feature-columns).",
    )
    add_flag(p, "tfrecord_features")
    add_flag(
        p,
        "custom_objects",
        help="module:attr of a custom Keras class or function the --model needs (repeatable).",
    )
    add_flag(
        p,
        "unsafe_deserialization",
        help="Allow lambda layers and other arbitrary code in a .keras --model (safe_mode=False).",
    )
    add_flag(
        p,
        "signature",
        help="SavedModel signature the --model is called through (default: serving_default).",
    )
    add_flag(
        p,
        "batch_size",
        default=DEFAULT_BATCH_ROWS,
        help="Max rows per batch (and per model call with --model).",
    )
    p.add_argument(
        "--num-bins",
        dest="num_bins",
        type=int,
        default=DEFAULT_NUM_BINS,
        help=f"Quantile bins per numeric column (default {DEFAULT_NUM_BINS}).",
    )
    p.add_argument(
        "--top-k",
        dest="top_k",
        type=int,
        default=DEFAULT_TOP_K,
        help=f"Categories kept per categorical column; the rest is 'other' (default {DEFAULT_TOP_K}).",
    )
    p.add_argument(
        "--categorical-max-distinct",
        dest="categorical_max_distinct",
        type=int,
        default=DEFAULT_CATEGORICAL_MAX_DISTINCT,
        help="An integer column with at most this many distinct values is categorical "
        f"(default {DEFAULT_CATEGORICAL_MAX_DISTINCT}; 0: integers are always numeric).",
    )
    p.add_argument(
        "--categorical-columns",
        dest="categorical_columns",
        type=_csv,
        default=[],
        help="Comma-separated columns to profile as categories (category frequencies), "
        "whatever their type.",
    )
    p.add_argument(
        "--numeric-columns",
        dest="numeric_columns",
        type=_csv,
        default=[],
        help="Comma-separated integer columns to profile as numbers (quantile bins), "
        "even with few distinct values.",
    )
    add_console_flags(p)
    cli_help.polish(p)
    known, beam_args = cli_help.parse_flags(p, argv)  # unknown flags first
    verbosity, _ = pop_console_flags(known)
    values = vars(known)
    for key in ("id_columns", "custom_objects", "categorical_columns", "numeric_columns"):
        values[key] = tuple(values[key])
    if values["feature_columns"] is not None:
        values["feature_columns"] = tuple(values["feature_columns"])
    config = ProfileConfig(**values)
    _validate(config)
    config = dataclasses.replace(config, output=resolve_output_file(config.output, PROFILE_FILE))
    return config, beam_args, verbosity


def _validate(config: ProfileConfig) -> None:
    """Checks the settings; every problem is reported at once."""
    from keras_batch_score.pipelines.options import report

    problems = [
        f"'{key}' must be >= 1, got {getattr(config, key)}"
        for key in ("num_bins", "top_k", "batch_size")
        if getattr(config, key) < 1
    ]
    if config.categorical_max_distinct < 0:
        problems.append("'categorical_max_distinct' must be >= 0")
    both = sorted(set(config.categorical_columns) & set(config.numeric_columns))
    if both:
        problems.append(f"columns {both} are listed as both categorical and numeric")
    if config.feature_columns is not None and not config.feature_columns:
        problems.append("'feature_columns' is empty: list at least one column or leave it unset")
    if problems:
        raise report(problems)


def _score_config(config: ProfileConfig) -> ScoreConfig:
    """The scoring settings of ``--model``: the model is fed as ``score`` would feed it."""
    return ScoreConfig(
        model=[config.model],
        input=config.input,
        input_format=config.input_format,
        preprocess=config.preprocess,
        tfrecord_features=config.tfrecord_features,
        output=posixpath.dirname(config.output) or ".",
        id_columns=list(config.id_columns),
        feature_columns=None if config.feature_columns is None else list(config.feature_columns),
        batch_size=config.batch_size,
        custom_objects=list(config.custom_objects),
        unsafe_deserialization=config.unsafe_deserialization,
        signature=config.signature,
    )


def _wanted(config: ProfileConfig, source: InputPlan) -> list[str]:
    """The columns to profile without ``--model``: named, read by the spec, or every non-id one."""
    source.require([*config.id_columns, *(config.feature_columns or ()),
                    *config.categorical_columns, *config.numeric_columns])  # fmt: skip
    if config.feature_columns is not None:
        return list(config.feature_columns)
    if config.preprocess is not None:
        spec = load_spec(config.preprocess)
        check_columns(spec, source.schema)
        return list(spec.columns)
    return [n for n in source.schema.names if n not in config.id_columns]


def plan(config: ProfileConfig) -> ProfilePlan:
    """Resolves files, schema, columns and (with ``--model``) the scoring plan; reads no data."""
    rule = KindRule(
        max_distinct=config.categorical_max_distinct,
        categorical=frozenset(config.categorical_columns),
        numeric=frozenset(config.numeric_columns),
    )
    scoring = None
    if config.model:  # the profile path was checked by parse_args
        scoring = plan_scoring(_score_config(config), check_output=False)
        source, wanted = scoring.input, list(scoring.layout.columns)
    else:
        source = plan_input(config.input, config.input_format, config.tfrecord_features)
        wanted = _wanted(config, source)
    explicit = config.feature_columns is not None or config.preprocess is not None
    source.check_columns(
        [*config.id_columns, *wanted, *config.categorical_columns, *config.numeric_columns]
    )
    candidates, skipped = [], {}
    for name in wanted:
        kind = type_kind(source.schema.field(name), rule)
        if kind is None:
            reason = f"type {source.schema.field(name).type} is neither numeric nor categorical"
            if explicit and scoring is None:
                raise ConfigError(f"column {name!r} cannot be profiled: {reason}")
            skipped[name] = reason
            continue
        candidates.append(Candidate(name, "feature", name, None, kind))
    if not candidates and scoring is None:
        raise ConfigError(
            f"no column to profile: {sorted(skipped) or 'every column is an id column'}; pass --feature-columns"
        )
    read = scoring.read_columns if scoring is not None else tuple(c.column for c in candidates)
    settings = ProfileSettings(config.num_bins, config.top_k, rule)
    return ProfilePlan(config, source, tuple(read), tuple(candidates), skipped, settings, scoring)


def build_pipeline(pipeline: beam.Pipeline, plan: ProfilePlan) -> beam.PCollection:
    """Adds the profile steps to ``pipeline``; returns the PCollection of the profile dict."""
    config = plan.config
    metadata: dict[str, Any] = {
        "input": config.input,
        "input_files": len(plan.input.files),
        "skipped_columns": plan.skipped,
    }
    tables = pipeline | "Read" >> plan.input.read(plan.read_columns, config.batch_size)
    output_names: tuple[str, ...] = ()
    if plan.scoring is None:
        batches = tables | "Shard" >> Rebatch(config.batch_size)
    else:
        sp = plan.scoring
        metadata["model"] = sp.model_id
        output_names = sp.output_names
        validated = tables | "Validate" >> sp.prepare([c.column for c in plan.candidates])
        batches, _ = validated.batches | "Score" >> sp.score()
    return batches | "Profile" >> BuildProfile(
        plan.candidates, config.output, plan.settings, output_names, metadata
    )


class ProfileCommand(Command[ProfileConfig, ProfilePlan]):
    """``batch-score profile``: writes the profile JSON and returns it."""

    name = "profile"

    def parse(self, argv: Sequence[str]) -> Parsed[ProfileConfig]:
        config, beam_args, verbosity = parse_args(argv)
        return Parsed(config, tuple(beam_args), verbosity)

    def plan(self, config: ProfileConfig) -> ProfilePlan:
        return plan(config)

    def describe(self, plan: ProfilePlan) -> Iterable[str]:
        yield (
            f"profiling {len(plan.candidates)} column(s) of {len(plan.input.files)} file(s)"
            + (f" with predictions of {plan.scoring.model_id}" if plan.scoring else "")
            + f" -> {plan.config.output}"
        )

    def build(self, pipeline: beam.Pipeline, plan: ProfilePlan, job: Job) -> None:
        build_pipeline(pipeline, plan)

    def report(self, plan: ProfilePlan, job: Job, outcome: dict[str, Any] | None) -> dict[str, Any]:
        output = plan.config.output
        try:
            with FileSystems.open(output) as f:
                profile = json.loads(f.read().decode("utf-8"))
        except Exception as e:
            raise ProfileError(f"the profile {output} was not written: {e}") from None
        console.echo(
            f"done: {profile['rows']:,} rows, {len(profile['features'])} feature(s), "
            f"{len(profile['predictions'])} prediction column(s) in {job.elapsed:.1f}s -> {output}"
        )
        return profile


COMMAND = ProfileCommand()


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, plans, runs the pipeline and returns the written profile (as a dict).

    Raises:
        ConfigError: for any configuration problem, before data is read.
    """
    return COMMAND.run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m keras_batch_score.pipelines.profile``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
