"""Scoring job configuration: a YAML file plus CLI flags, validated before anything runs.

The settings are defined once, in :mod:`keras_batch_score.pipelines.options`
(pydantic models by section); this module keeps the names the commands and
tests use. Flags override the file. Every key and flag is checked: unknown
keys, missing required values, values of the wrong type and the cross-field
rules are all reported together as one :class:`ConfigError`, before any
model or data is touched. Flags that are not ours are handed to Beam's
``PipelineOptions``; a flag that neither we nor Beam know is an error too
(Beam would silently discard it).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from typing import Any

from keras_batch_score.pipelines import options
from keras_batch_score.pipelines.options import (
    DEFAULT_BATCH_SIZE,
    REQUIRED_SETTINGS,
    ScoreConfig,
    load_yaml,
    suggest,
)
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import short_repr

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "REQUIRED_SETTINGS",
    "ScoreConfig",
    "add_score_arguments",
    "load_yaml",
    "resolve_config",
    "score_defaults",
    "split_beam_args",
]


def add_score_arguments(
    parser: argparse.ArgumentParser, *, command: str = "score", exclude: Collection[str] = ()
) -> None:
    """Adds the scoring flags ``command`` offers to ``parser``, in help groups. Unset flags stay absent.

    Args:
        parser: The command's parser.
        command: ``score`` or ``calibrate`` (the schema says which flags each offers).
        exclude: Further flags (``--top-k``) not to add.
    """
    options.add_arguments(parser, command, exclude=exclude)


def score_defaults() -> dict[str, Any]:
    """``dest -> default`` of the scoring flags, for ``--help`` (their parser default is SUPPRESS)."""
    return options.defaults()


def resolve_config(
    namespace: argparse.Namespace, *, extra_checks: Sequence[options.Check] = ()
) -> ScoreConfig:
    """Merges the YAML file named by ``--config`` with the flags and validates the result.

    Args:
        namespace: The parsed flags (``config`` names the YAML file).
        extra_checks: The command's own rules, reported with the others.

    Raises:
        ConfigError: listing every problem (one line each when there are several).
    """
    return options.resolve(namespace, extra_checks=extra_checks)


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
        hint = suggest(unknown[0], list(ours) if ours is not None else _our_flags())
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
