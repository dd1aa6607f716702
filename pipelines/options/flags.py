"""Command-line flags generated from the option schema (:mod:`.schema`).

Unset flags stay absent from the namespace (their parser default is
``argparse.SUPPRESS``), so a YAML value is overridden only by a flag actually
given; :func:`defaults` gives ``--help`` the value a setting takes when unset.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Collection
from typing import Any

from keras_batch_score.pipelines.options.schema import CONFIG_FLAG, SETTINGS, Flag, Setting


def offered(command: str) -> list[Setting]:
    """The settings ``batch-score <command>`` offers as flags, in ``--help`` order."""
    return [s for s in SETTINGS.values() if command in s.flag.commands]


def not_offered(command: str) -> tuple[str, ...]:
    """The scoring flags ``command`` does not offer."""
    return tuple(s.flag.flag for s in SETTINGS.values() if command not in s.flag.commands)


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return annotation


def argparse_kwargs(setting: Setting) -> dict[str, Any]:
    """The ``add_argument`` keywords of one setting's flag."""
    flag = setting.flag
    kwargs: dict[str, Any] = {"dest": setting.key, "default": argparse.SUPPRESS, "help": flag.help}
    if setting.is_switch:
        kwargs["action"] = "store_true"
        return kwargs
    if flag.repeat:
        kwargs["action"] = "append"
    base = _base_type(setting.field.annotation)
    parse = flag.parse or (base if base in (int, float) else None)
    if parse is not None:
        kwargs["type"] = parse
    if flag.choices:
        kwargs["choices"] = flag.choices
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    return kwargs


def _add_config_flag(group: Any, flag: Flag) -> None:
    group.add_argument(flag.flag, default=argparse.SUPPRESS, help=flag.help, metavar=flag.metavar)


def add_arguments(
    parser: argparse.ArgumentParser, command: str = "score", *, exclude: Collection[str] = ()
) -> None:
    """Adds the flags ``command`` offers to ``parser``, one help group per section.

    Args:
        parser: The command's parser.
        command: ``score`` or ``calibrate``: which flags (:attr:`Flag.commands`).
        exclude: Further flags (``--top-k``) not to add.
    """
    groups: dict[str, Any] = {}
    for setting in offered(command):
        if setting.flag.flag in exclude:
            continue
        if setting.title not in groups:
            groups[setting.title] = parser.add_argument_group(setting.title)
            if not len(groups) - 1:
                _add_config_flag(groups[setting.title], CONFIG_FLAG)
        groups[setting.title].add_argument(setting.flag.flag, **argparse_kwargs(setting))


def add_flag(parser: Any, key: str, *, help: str | None = None, **overrides: Any) -> Any:
    """Adds setting ``key``'s flag to another command's parser (profile, fit-preprocess, package).

    The flag, type, choices, metavar and action come from the schema; the
    command gives its own help text (what the setting means there) and a real
    default (``None`` unless ``default=`` says otherwise).

    Args:
        parser: The command's parser or argument group.
        key: The setting (``id_columns``).
        help: The command's help text (default: the ``score`` one).
        **overrides: Further ``add_argument`` keywords (``required=True``, ``default=...``).
    """
    setting = SETTINGS[key]
    kwargs = argparse_kwargs(setting)
    kwargs["default"] = [] if setting.flag.repeat else (False if setting.is_switch else None)
    kwargs["help"] = help or setting.flag.help
    kwargs.update(overrides)
    return parser.add_argument(setting.flag.flag, **kwargs)


def defaults() -> dict[str, Any]:
    """``dest -> default`` of every setting, for ``--help`` (required settings have none)."""
    return {k: s.default() for k, s in SETTINGS.items() if not s.flag.required}


def metavars() -> dict[str, str]:
    """``flag -> metavar`` of every setting that names its value."""
    found = {s.flag.flag: s.flag.metavar for s in SETTINGS.values() if s.flag.metavar}
    return {CONFIG_FLAG.flag: CONFIG_FLAG.metavar or "FILE", **found}
