"""Parsers of option values written as text (a flag) or as YAML (a config file).

Each parser either returns the value in the type the option model holds or
raises :class:`ValueError` with a message that says what was expected; the
option layer turns that message into ``'<key>' in <file>: <message>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.core.safe_yaml import short_repr


def csv(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def name_value_pairs(text: str, flag: str) -> dict[str, float]:
    """``a=0.9,b=0.1`` -> ``{"a": 0.9, "b": 0.1}``.

    Raises:
        ConfigError: for a part that is not ``name=number`` or a name given twice.
    """
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or number != number:
            raise ConfigError(
                f"{flag} {text!r}: expected name=number pairs separated by commas, e.g. a=0.9,b=0.1"
            )
        if name.strip() in out:
            raise ConfigError(f"{flag} {text!r}: {name.strip()!r} appears twice")
        out[name.strip()] = number
    return out


def flag_parser(flag: str) -> Any:
    """The argparse ``type`` of a ``name=number,...`` flag."""
    return lambda text: name_value_pairs(text, flag)


def yaml_names_to_numbers(value: Any) -> Any:
    """A YAML ``{name: number}`` mapping or ``"a=0.9,b=0.1"`` string."""
    if isinstance(value, str):
        try:
            return name_value_pairs(value, "")
        except ConfigError as e:
            raise ValueError(str(e).strip()) from None
    if isinstance(value, Mapping) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ):
        return {str(k): float(v) for k, v in value.items()}
    if value is None:
        return None
    raise ValueError(f"expected a mapping of name: number, got {short_repr(value)}")


def yaml_float(value: Any) -> Any:
    """A YAML number; a numeric string too (YAML 1.1 reads ``1e-6``, without a dot, as a string)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {short_repr(value)}") from None
    return value


def yaml_strings(value: Any, *, split: bool) -> Any:
    """A list of strings: a list, or one string (split at commas when ``split``)."""
    if isinstance(value, str):
        return csv(value) if split else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if value is None:
        return None
    raise ValueError(f"expected a string or a list of strings, got {short_repr(value)}")


def yaml_models(value: Any) -> Any:
    """``model:``/``models:`` entries: paths, ``name=path`` strings or ``{name, path, weight}``."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a string or a list of strings, got {short_repr(value)}")
    out: list[Any] = []
    for entry in value:
        if isinstance(entry, str):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping) or "path" not in entry:
            raise ValueError(
                "each model is a path or a mapping with 'path' (and 'name', 'weight'), "
                f"got {short_repr(entry)}"
            )
        unknown = sorted(set(entry) - {"name", "path", "weight"})
        if unknown:
            raise ValueError(f"unknown model key(s) {unknown}; use name, path, weight")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"model weight must be a number, got {short_repr(weight)}")
        out.append(
            {
                "name": str(entry.get("name") or ""),
                "path": str(entry["path"]),
                "weight": float(weight),
            }
        )
    return out


def yaml_thresholds(value: Any) -> Any:
    """Drift thresholds: ``{psi: 0.25, "age:js": 0.3, ks: off}``, a string or a list of strings."""
    if isinstance(value, dict):  # YAML reads off as false
        return [f"{k}={'off' if v is None or v is False else v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(
        f"expected a mapping of metric (or feature:metric) to threshold, got {short_repr(value)}"
    )
