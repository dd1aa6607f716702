"""The resolved settings as one flat :class:`ScoreConfig` (``config.batch_size``, ``config.model``).

The planning code reads settings by their flat names; this dataclass is
generated from the schema (:data:`.schema.SETTINGS`), so a setting is still
defined once. Required settings come first, then the schema's order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_batch_score.pipelines.options.schema import SETTINGS, ScoreOptions


def _field(key: str) -> tuple[str, Any, Any]:
    setting = SETTINGS[key]
    if setting.flag.required:
        return key, setting.field.annotation, dataclasses.field()
    factory = setting.field.default_factory
    if factory is not None:
        return key, setting.field.annotation, dataclasses.field(default_factory=factory)
    return key, setting.field.annotation, dataclasses.field(default=setting.field.default)


def _to_dict(self: Any) -> dict[str, Any]:
    """The settings as a plain dict (for run_summary.json)."""
    return dataclasses.asdict(self)


_ORDER = sorted(SETTINGS, key=lambda k: not SETTINGS[k].flag.required)
_REQUIRED_FIRST = sorted(
    (k for k in _ORDER if SETTINGS[k].flag.required), key=("model", "input", "output").index
)

ScoreConfig = dataclasses.make_dataclass(
    "ScoreConfig",
    [_field(k) for k in _REQUIRED_FIRST + [k for k in _ORDER if not SETTINGS[k].flag.required]],
    namespace={"to_dict": _to_dict},
)
ScoreConfig.__module__ = __name__
ScoreConfig.__doc__ = (
    "Resolved settings of one scoring job, one attribute per setting of "
    "keras_batch_score.pipelines.options.schema (see docs/usage.md, 'Configuration reference')."
)


def flatten(options: ScoreOptions) -> Any:
    """The :class:`ScoreConfig` of validated options."""
    values = {
        key: getattr(getattr(options, setting.section), key) for key, setting in SETTINGS.items()
    }
    return ScoreConfig(**values)
