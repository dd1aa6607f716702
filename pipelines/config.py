"""Scoring job configuration: a YAML file plus CLI flags, validated before anything runs.

Flags override the file. Every key and flag is checked: an unknown key, a
missing required value or a value of the wrong type raises
:class:`ConfigError` naming the key, before any model or data is touched.
Flags that are not ours are handed to Beam's ``PipelineOptions``; a flag that
neither we nor Beam know is an error too (Beam would silently discard it).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from collections.abc import Collection, Sequence
from typing import Any

from keras_batch_score.pipelines import (
    bundle_options,
    drift_options,
    explain_options,
    output_options,
    postprocess_options,
)
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml, short_repr
from keras_batch_score.transforms.model.backends import check_backend

DEFAULT_BATCH_SIZE = 16384


@dataclasses.dataclass
class ScoreConfig:
    """Resolved settings of one scoring job (see docs/usage.md, "Configuration reference")."""

    model: list[Any]  # paths, name=path strings or {name, path, weight} (postprocess_options)
    input: str
    output: str
    input_format: str = "auto"
    preprocess: Any = (
        None  # spec file path or mapping (keras_batch_score.transforms.preprocess.spec)
    )
    tfrecord_features: Any = (
        None  # TFRecord feature spec (keras_batch_score.transforms.io.tfrecord); inferred if unset
    )
    id_columns: list[str] = dataclasses.field(default_factory=list)
    feature_columns: list[str] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    min_batch_size: int | None = None
    num_shards: int = 0
    custom_objects: list[str] = dataclasses.field(default_factory=list)
    unsafe_deserialization: bool = False
    signature: str | None = None
    reshuffle: bool = False
    progress_seconds: float = 5.0
    precision: str = "float32"
    backend: str = (
        "keras"  # keras | xla | onnxruntime | litert (keras_batch_score.transforms.model.backends)
    )
    # Drift against a reference profile: see pipelines/drift_options.py and docs/drift.md.
    reference_profile: str | None = None
    fail_on_drift: bool = False
    drift_thresholds: list[str] = dataclasses.field(default_factory=list)
    drift_share: float = 0.5
    # Ensembles, calibration, post-transforms, uncertainty, A/B: see pipelines/postprocess_options.
    ensemble: str = "mean"
    ensemble_weights: dict[str, float] | None = None
    keep_member_predictions: bool = False
    calibration: str | None = None
    clip_min: float | None = None
    clip_max: float | None = None
    target_mean: float | None = None
    target_std: float | None = None
    class_names: str | None = None
    top_k: int | None = None
    mc_dropout_samples: int = 0
    seed: int | None = None
    ab_split: dict[str, float] | None = None
    fallback_model: str | None = None
    model_sha256: str | None = None  # pinned model hash (pipelines/bundle_options.py)
    overwrite: bool = False  # write beside files this tool did not write (keras_batch_score.transforms.run.publish)
    # Explanations, OOD scores, adversarial check: see pipelines/explain_options.py.
    explain: str | None = None
    explain_steps: int = explain_options.DEFAULTS["explain_steps"]
    explain_baseline: str = explain_options.DEFAULTS["explain_baseline"]
    explain_output: str | None = None
    ood_score: bool = False
    ood_threshold: float | None = None
    adversarial_check: bool = False
    adversarial_epsilon: float = explain_options.DEFAULTS["adversarial_epsilon"]
    adversarial_threshold: float = explain_options.DEFAULTS["adversarial_threshold"]
    # Output noise, formats, per-class columns, shadow model: see pipelines/output_options.py.
    output_format: str = "parquet"
    output_noise: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    sensitivity: float | None = None
    probability_columns: bool = False
    multi_label_threshold: float | None = None
    multi_label_thresholds: str | None = None
    shadow_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REQUIRED = ("model", "input", "output")
REQUIRED_SETTINGS = _REQUIRED  # public name (templates, keras_batch_score.pipelines.flex_metadata)
_FIELDS = {f.name: f for f in dataclasses.fields(ScoreConfig)}


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class _OnlyOwnFlags:
    """An argument group that skips the flags a command does not offer."""

    def __init__(self, group: Any, exclude: Collection[str]) -> None:
        self._group = group
        self._exclude = set(exclude)

    def add_argument(self, *names: str, **kwargs: Any) -> Any:
        if self._exclude.intersection(names):
            return None
        return self._group.add_argument(*names, **kwargs)


def add_score_arguments(parser: argparse.ArgumentParser, *, exclude: Collection[str] = ()) -> None:
    """Adds the scoring flags to ``parser``, in help groups. Unset flags stay absent.

    Args:
        parser: The command's parser.
        exclude: Flags (``--top-k``) the command does not offer; they are not added.
    """
    s = argparse.SUPPRESS

    def group(title: str) -> _OnlyOwnFlags:
        return _OnlyOwnFlags(parser.add_argument_group(title), exclude)

    io = group("input and output")
    io.add_argument(
        "--config", default=s, help="YAML file with the settings below (flags override it)."
    )
    io.add_argument(
        "--input",
        default=s,
        help="Input file, directory, glob or gs:// pattern (Parquet or TFRecord).",
    )
    io.add_argument("--output", default=s, help="Output directory (local or gs://).")
    io.add_argument(
        "--input-format",
        dest="input_format",
        choices=("auto", "parquet", "tfrecord"),
        default=s,
        help="Input format (auto: TFRecord for *.tfrecord, *.tfrecord.gz, *.tfr; else Parquet).",
    )
    io.add_argument(
        "--tfrecord-features",
        dest="tfrecord_features",
        default=s,
        help="YAML file with a tfrecord_features spec (default: inferred from the first records).",
    )
    io.add_argument(
        "--id-column",
        dest="id_columns",
        action="append",
        default=s,
        help="Passthrough column copied unchanged to every output (repeatable). "
        "Without one, outputs carry source_file and row_index.",
    )
    io.add_argument(
        "--feature-columns",
        dest="feature_columns",
        type=_csv,
        default=s,
        help="Comma-separated model feature columns, in model order "
        "(default: every numeric column that is not an id column, in file order).",
    )
    io.add_argument(
        "--preprocess",
        default=s,
        help="Preprocessing spec YAML (see docs/preprocessing.md); replaces feature validation.",
    )
    io.add_argument(
        "--num-shards",
        dest="num_shards",
        type=int,
        default=s,
        help="Prediction files (0: runner decides).",
    )
    model = group("model")
    model.add_argument(
        "--model",
        action="append",
        default=s,
        help="Model to score with: a .keras file, an .h5 file, a SavedModel directory, an "
        "architecture .json with its .weights.h5 beside it (or a directory of both), or a bundle "
        "directory written by `batch-score package`. Repeat the flag for an "
        "ensemble or A/B arms, and name members with NAME=PATH "
        "(--model a=a.keras --model b=b.keras).",
    )
    bundle_options.add_bundle_arguments(model)
    model.add_argument(
        "--custom-object",
        dest="custom_objects",
        action="append",
        default=s,
        help="module:attr of a custom Keras class or function the model needs (repeatable).",
    )
    model.add_argument(
        "--unsafe-deserialization",
        dest="unsafe_deserialization",
        action="store_true",
        default=s,
        help="Allow lambda layers and other arbitrary code in .keras files (safe_mode=False).",
    )
    model.add_argument(
        "--signature", default=s, help="SavedModel signature to call (default: serving_default)."
    )
    model.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default=s,
        help="Model compute precision. bfloat16 is opt-in: faster on CPUs with AVX512-BF16 and on GPUs, "
        "results differ from float32 by ~1e-3 (.keras/.h5 models only). float16 needs a GPU.",
    )
    model.add_argument(
        "--backend",
        choices=("keras", "xla", "onnxruntime", "litert"),
        default=s,
        help="What runs the model: keras (its compiled TensorFlow graph), xla (the same graph "
        "with jit_compile=True), onnxruntime or litert (converted once per worker, cached by "
        "the model's hash; pip install 'keras-batch-score[onnx]' or '[litert]'). See docs/models.md, "
        "Backends.",
    )
    run = group("batching and progress")
    run.add_argument(
        "--batch-size", dest="batch_size", type=int, default=s, help="Max rows per model call."
    )
    run.add_argument(
        "--min-batch-size",
        dest="min_batch_size",
        type=int,
        default=s,
        help="Min rows per model call.",
    )
    run.add_argument(
        "--reshuffle",
        action="store_true",
        default=s,
        help="Redistribute batches across workers before inference.",
    )
    run.add_argument(
        "--progress-seconds",
        dest="progress_seconds",
        type=float,
        default=s,
        help="Seconds between progress lines when the output is not a terminal.",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        default=s,
        help="Write into an output directory that holds files this tool did not write. They are "
        "kept, never deleted; the tool replaces only the files its _manifest.json lists.",
    )
    postprocess_options.add_postprocess_arguments(group("ensembles and post-processing"))
    drift_options.add_drift_arguments(group("drift against a reference profile"))
    explain_options.add_explain_arguments(group("explanations and out-of-distribution flags"))
    output_options.add_output_arguments(group("output format, privacy noise and shadow model"))


def score_defaults() -> dict[str, Any]:
    """``dest -> default`` of the scoring flags, for ``--help`` (their parser default is SUPPRESS)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(ScoreConfig):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
    return out


def load_yaml(path: str) -> dict[str, Any]:
    """Reads a YAML config file (size and alias limits: :mod:`keras_batch_score.transforms.core.safe_yaml`)."""
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of settings, got {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _suggest(name: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _coerce(key: str, value: Any, source: str) -> Any:
    """Checks a YAML value against the field type; lists may be given as a scalar or CSV."""
    where = f"{key!r} in {source}"
    if key in ("preprocess", "tfrecord_features"):
        return value  # validated by keras_batch_score.transforms.preprocess.spec / keras_batch_score.transforms.io.tfrecord at plan time
    if key in postprocess_options.FIELDS:
        return postprocess_options.coerce(key, value, where)
    if key in drift_options.FIELDS:
        return drift_options.coerce(key, value, where)
    if key in explain_options.FIELDS:
        return explain_options.coerce(key, value, where)
    if key in output_options.FIELDS:
        return output_options.coerce(key, value, where)
    if key == "model" and isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return postprocess_options.coerce_models(value, where)
    list_fields = {"model", "id_columns", "feature_columns", "custom_objects"}
    if key in list_fields:
        if isinstance(value, str):
            return [value] if key in ("model", "custom_objects") else _csv(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(
            f"{where}: expected a string or a list of strings, got {short_repr(value)}"
        )
    if key in {"batch_size", "min_batch_size", "num_shards"}:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
        return value
    if key == "progress_seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
        return float(value)
    if key in {"unsafe_deserialization", "reshuffle", "overwrite"}:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {short_repr(value)}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {short_repr(value)}")
    return value


def resolve_config(namespace: argparse.Namespace) -> ScoreConfig:
    """Merges the YAML file named by ``--config`` with the flags and validates the result."""
    values: dict[str, Any] = {}
    config_path = getattr(namespace, "config", None)
    if config_path:
        for key, value in load_yaml(config_path).items():
            key = "model" if key == "models" else key  # `models: [{name, path, weight}]`
            if key not in _FIELDS:
                raise ConfigError(
                    f"unknown key {key!r} in {config_path}{_suggest(key, list(_FIELDS))}; "
                    f"known keys: {', '.join(sorted(_FIELDS))}"
                )
            values[key] = _coerce(key, value, config_path)
    for key, value in vars(namespace).items():
        if key in _FIELDS:
            values[key] = value
    missing = [k for k in _REQUIRED if not values.get(k)]
    if missing:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise ConfigError(
            f"missing required setting(s) {', '.join(map(repr, missing))}: pass {flags} or set them in --config"
        )
    config = ScoreConfig(**values)
    _validate(config)
    return config


def _validate(config: ScoreConfig) -> None:
    if config.batch_size < 1:
        raise ConfigError(f"'batch_size' must be >= 1, got {config.batch_size}")
    if config.min_batch_size is not None and not 1 <= config.min_batch_size <= config.batch_size:
        raise ConfigError(
            f"'min_batch_size' must be between 1 and batch_size ({config.batch_size}), got {config.min_batch_size}"
        )
    if config.precision not in ("float32", "bfloat16", "float16"):
        raise ConfigError(
            f"'precision' must be 'float32', 'bfloat16' or 'float16', got {config.precision!r}"
        )
    check_backend(config.backend, config.precision)  # known, installed, float32 when converted
    if config.backend != "keras" and config.mc_dropout_samples:
        raise ConfigError(
            f"--mc-dropout-samples runs its own stochastic Keras passes, not --backend "
            f"{config.backend}: use --backend keras with it"
        )
    if config.num_shards < 0:
        raise ConfigError(f"'num_shards' must be >= 0, got {config.num_shards}")
    postprocess_options.validate(config)  # models (ensemble / A/B), post-processing options
    drift_options.validate(config)  # drift thresholds, --fail-on-drift needs a profile
    bundle_options.validate(config)  # --model-sha256
    explain_options.validate(config)  # --explain, --ood-*, --adversarial-*
    output_options.validate(config)  # noise, output formats, per-class columns, shadow model
    if config.progress_seconds <= 0:
        raise ConfigError(f"'progress_seconds' must be > 0, got {config.progress_seconds}")
    dupes = sorted({c for c in config.id_columns if config.id_columns.count(c) > 1})
    if dupes:
        raise ConfigError(f"'id_columns' lists {dupes} more than once")
    if config.feature_columns is not None:
        if not config.feature_columns:
            raise ConfigError(
                "'feature_columns' is empty: list at least one column or leave it unset"
            )
        overlap = sorted(set(config.feature_columns) & set(config.id_columns))
        if overlap:
            raise ConfigError(f"columns {overlap} are both id (passthrough) and feature columns")


def split_beam_args(
    beam_args: Sequence[str], *, ours: Sequence[str] | None = None, command: str = "<command>"
) -> list[str]:
    """Returns ``beam_args`` after checking that Beam knows every flag in it.

    Beam's flags may be written ``--flag=value`` or ``--flag value``; they are
    parsed with Beam's own option parser, so a value is never mistaken for a
    stray argument. ``ours`` (default: the scoring flags) are the command's own
    flags, offered as "did you mean" suggestions.

    Raises:
        ConfigError: for a flag neither this tool nor Beam defines (a typo would
            otherwise be discarded by Beam with only a log line), then for a
            stray positional argument.
    """
    leftovers = _beam_leftovers(beam_args)
    unknown = [a.split("=", 1)[0] for a in leftovers if a.startswith("-")]
    if unknown:
        hint = _suggest(unknown[0], list(ours) if ours is not None else _our_flags())
        raise ConfigError(
            f"unknown flag(s) {', '.join(unknown)}{hint}; "
            f"run `batch-score {command} --help` for this tool's flags"
        )
    if leftovers:
        shown = ", ".join(short_repr(a) for a in leftovers[:5])
        raise ConfigError(
            f"unexpected argument(s) {shown}: every setting is a --flag "
            "(quote a glob such as --input 'data/*.parquet' so the shell does not expand it)"
        )
    return list(beam_args)


def _beam_leftovers(beam_args: Sequence[str]) -> list[str]:
    """The tokens of ``beam_args`` that no Beam pipeline option consumes."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers: list[argparse.ArgumentParser] = []
    # get_all_options builds the parser of every registered options class and
    # hands it to this hook; parsing with it again tells consumed values apart.
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    _, leftovers = parsers[0].parse_known_args(list(beam_args))
    return leftovers


def _our_flags() -> list[str]:
    parser = argparse.ArgumentParser(add_help=False)
    add_score_arguments(parser)
    return [opt for action in parser._actions for opt in action.option_strings]
