"""The ``batch-score score`` options, each defined once: type, default, flag, help, metavar.

Every setting is a field of one section model (input, model, run,
postprocess, drift, explain, output), composed into :class:`ScoreOptions`.
A field's :class:`Flag` (in its ``Annotated`` metadata) carries what the
command line, the YAML file, the Flex Template ``metadata.json`` and the docs'
flag tables need; they are all generated from here (:mod:`.flags`,
:mod:`.resolve`, :mod:`keras_batch_score.pipelines.flex_metadata`,
:mod:`.docs`). Cross-field rules live in :mod:`.checks`.

To add a setting: add a field with its :class:`Flag` to its section
(:mod:`.data_sections` or :mod:`.result_sections`; ``commands=SCORE_ONLY``
when ``calibrate`` does not offer it), a rule in :mod:`.checks` if it
depends on others, then regenerate ``make flex-metadata docs-flags``
(``tests/deploy/test_templates.py`` and ``tests/unit/test_options.py`` fail until then).
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from keras_batch_score.pipelines.options.data_sections import InputOptions, ModelOptions, RunOptions
from keras_batch_score.pipelines.options.flag import (
    CONFIG_FLAG,
    DEFAULT_BATCH_SIZE,
    Flag,
    Section,
)
from keras_batch_score.pipelines.options.result_sections import (
    DriftOptions,
    ExplainOptions,
    OutputOptions,
    PostprocessOptions,
)
from keras_batch_score.transforms.postprocess.ensemble import METHODS as ENSEMBLE_METHODS

__all__ = [
    "CONFIG_FLAG",
    "DEFAULT_BATCH_SIZE",
    "ENSEMBLE_METHODS",
    "REQUIRED_SETTINGS",
    "SECTIONS",
    "SETTINGS",
    "Flag",
    "ScoreOptions",
    "Setting",
    "settings",
]


class ScoreOptions(BaseModel):
    """All settings of a scoring job, by section (in ``--help`` order)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    input: InputOptions = Field(default_factory=InputOptions)
    model: ModelOptions = Field(default_factory=ModelOptions)
    run: RunOptions = Field(default_factory=RunOptions)
    postprocess: PostprocessOptions = Field(default_factory=PostprocessOptions)
    drift: DriftOptions = Field(default_factory=DriftOptions)
    explain: ExplainOptions = Field(default_factory=ExplainOptions)
    output: OutputOptions = Field(default_factory=OutputOptions)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of the schema: its section, key (YAML key and ScoreConfig attribute) and flag."""

    section: str
    key: str
    field: FieldInfo
    flag: Flag

    @property
    def title(self) -> str:
        """The ``--help`` group of the setting."""
        return SECTIONS[self.section].title

    def default(self) -> Any:
        """The value of the setting when it is not set."""
        return self.field.get_default(call_default_factory=True)

    @property
    def is_switch(self) -> bool:
        """A flag without a value (a bool setting)."""
        return self.field.annotation is bool


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in ScoreOptions.model_fields.items()
}


def _flag_of(field: FieldInfo) -> Flag:
    return next(m for m in field.metadata if isinstance(m, Flag))


def settings() -> Iterator[Setting]:
    """Every setting, section by section, in ``--help`` order."""
    for section, cls in SECTIONS.items():
        for key, field in cls.model_fields.items():
            yield Setting(section, key, field, _flag_of(field))


SETTINGS: dict[str, Setting] = {s.key: s for s in settings()}
REQUIRED_SETTINGS: tuple[str, ...] = tuple(k for k, s in SETTINGS.items() if s.flag.required)
