"""The pieces of the option schema: :class:`Flag` (a setting's command-line face) and :class:`Section`.

A setting is a field of a :class:`Section` model whose ``Annotated`` metadata
holds its :class:`Flag`; the sections are in :mod:`.data_sections` and
:mod:`.result_sections`, composed in :mod:`.schema`.
"""

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from keras_batch_score.pipelines.options import values as v

DEFAULT_BATCH_SIZE = 16384
SCORING = ("score", "calibrate")  # commands that score with a model
SCORE_ONLY = ("score",)
PRECISIONS = ("float32", "bfloat16", "float16")
BACKENDS = ("keras", "xla", "onnxruntime", "litert")
INPUT_FORMATS = ("auto", "parquet", "tfrecord")


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line (and in docs and the Flex Template).

    Attributes:
        flag: The option string, e.g. ``--id-column``.
        help: The ``--help`` text.
        metavar: The value's placeholder in ``--help`` (None: argparse's).
        repeat: Given once per value (``action="append"``).
        choices: The allowed values, when there are few.
        parse: The argparse ``type`` (default: from the field's type).
        commands: The commands that offer the flag.
        required: Must be set (by flag or in the YAML file).
    """

    flag: str
    help: str
    metavar: str | None = None
    repeat: bool = False
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    commands: tuple[str, ...] = SCORING
    required: bool = False


CONFIG_FLAG = Flag("--config", "YAML file with the settings below (flags override it).", "FILE")

YamlFloat = BeforeValidator(v.yaml_float)
YamlStrings = BeforeValidator(lambda x: v.yaml_strings(x, split=False))
YamlColumns = BeforeValidator(lambda x: v.yaml_strings(x, split=True))
YamlPairs = BeforeValidator(v.yaml_names_to_numbers)


class Section(BaseModel):
    """A group of settings: strict types (YAML ``"3"`` is not an integer), no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False)
    title: ClassVar[str] = ""  # the --help group


def number(flag: str, help: str, metavar: str = "VALUE", **kw: Any) -> Any:
    """The annotation of an optional number setting (a YAML numeric string is read too)."""
    return Annotated[float | None, YamlFloat, Flag(flag, help, metavar, **kw)]
