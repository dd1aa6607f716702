"""YAML file + flags -> a validated :class:`~.flat.ScoreConfig`, with every problem reported at once.

The YAML file may be flat (``batch_size: 512``, as the flags) or nested by
section (``run: {batch_size: 512}``); flags override it. Unknown keys, values
of the wrong type, missing required settings and the cross-field rules of
:mod:`.checks` are all collected, then raised together as one
:class:`~keras_batch_score.transforms.core.errors.ConfigError` (one problem
per line) before any model or data is read.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from keras_batch_score.pipelines.options import checks
from keras_batch_score.pipelines.options.flat import flatten
from keras_batch_score.pipelines.options.schema import (
    REQUIRED_SETTINGS,
    SECTIONS,
    SETTINGS,
    ScoreOptions,
)
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import read_yaml, short_repr

ALIASES = {"models": "model"}  # `models: [{name, path, weight}]`
_EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
}


def suggest(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def report(problems: Sequence[str]) -> ConfigError:
    """One ConfigError for all ``problems``: the message itself for one, else one line each."""
    if len(problems) == 1:
        return ConfigError(problems[0])
    lines = [f"{len(problems)} problems in the settings (fix them all, then run again):"]
    return ConfigError("\n".join([*lines, *(f"  - {p}" for p in problems)]))


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


def _unknown(key: str, where: str, known: Iterable[str]) -> str:
    known = sorted(known)
    return f"unknown key {key!r} in {where}{suggest(key, known)}; known keys: {', '.join(known)}"


def yaml_settings(data: Mapping[str, Any], path: str) -> tuple[dict[str, Any], list[str]]:
    """The flat ``key -> value`` settings of a YAML file's mapping, and its unknown keys.

    A key naming a section (``drift``, ``run``) with a mapping value holds that
    section's settings.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in data.items():
        key = ALIASES.get(key, key)
        if key in SECTIONS and isinstance(value, Mapping):
            known = SECTIONS[key].model_fields
            for inner, inner_value in value.items():
                inner = ALIASES.get(str(inner).replace("-", "_"), str(inner).replace("-", "_"))
                if inner in known:
                    values[inner] = inner_value
                else:
                    problems.append(_unknown(inner, f"section {key!r} of {path}", known))
        elif key in SETTINGS:
            values[key] = value
        else:
            problems.append(_unknown(key, path, SETTINGS))
    return values, problems


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    expected = _EXPECTED.get(error["type"], error["msg"])
    return f"{expected}, got {short_repr(error['input'])}"


def _nested(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        out.setdefault(SETTINGS[key].section, {})[key] = value
    return out


def typed_settings(
    values: Mapping[str, Any], sources: Mapping[str, str]
) -> tuple[ScoreOptions, list[str]]:
    """Validates every value's type; bad values are reported and left at their default.

    Args:
        values: Flat ``key -> value``.
        sources: ``key -> where it was set`` (the YAML file), for the message.
    """
    try:
        return ScoreOptions.model_validate(_nested(values)), []
    except ValidationError as e:
        errors = e.errors()
    problems: list[str] = []
    bad: set[str] = set()
    for error in errors:
        key = str(error["loc"][1]) if len(error["loc"]) > 1 else str(error["loc"][0])
        if key in bad:
            continue
        bad.add(key)
        where = sources.get(key) or SETTINGS[key].flag.flag if key in SETTINGS else "settings"
        problems.append(f"{key!r} in {where}: {_message(error)}")
    good = {k: v for k, v in values.items() if k not in bad}
    return ScoreOptions.model_validate(_nested(good)), problems


def resolve(namespace: argparse.Namespace, *, extra_checks: Sequence[checks.Check] = ()) -> Any:
    """Merges the YAML file named by ``--config`` with the flags and validates the result.

    Args:
        namespace: The parsed flags (``config`` names the YAML file).
        extra_checks: The command's own cross-field rules, run after the scoring ones.

    Returns:
        The :class:`~.flat.ScoreConfig`.

    Raises:
        ConfigError: listing every problem found (one per line when several).
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    config_path = getattr(namespace, "config", None)
    if config_path:
        values, problems = yaml_settings(load_yaml(config_path), config_path)
        sources = dict.fromkeys(values, config_path)
    for key, value in vars(namespace).items():
        if key in SETTINGS:
            values[key] = value
            sources.pop(key, None)
    missing = [k for k in REQUIRED_SETTINGS if not values.get(k)]
    if missing:
        flags = ", ".join(SETTINGS[k].flag.flag for k in missing)
        problems.append(
            f"missing required setting(s) {', '.join(map(repr, missing))}: "
            f"pass {flags} or set them in --config"
        )
    options, type_problems = typed_settings(values, sources)
    problems += type_problems
    config = flatten(options)
    if config.ood_threshold is not None:
        config.ood_score = True  # --ood-threshold implies --ood-score
    problems += checks.problems(config, (*checks.CHECKS, *extra_checks))
    if problems:
        raise report(problems)
    return config
