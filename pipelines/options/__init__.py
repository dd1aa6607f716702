"""One typed options layer: the scoring settings defined once, in pydantic models.

* :mod:`.schema`: the settings by section, each with its flag, help, metavar
  and the commands that offer it; :class:`~.schema.ScoreOptions` composes them.
* :mod:`.flags`: the argparse flags of ``score`` and ``calibrate``.
* :mod:`.resolve`: YAML file + flags -> :class:`~.flat.ScoreConfig`, every
  problem reported at once; :mod:`.checks` holds the cross-field rules.
* :mod:`.docs`: the flag tables in docs/usage.md
  (``python -m keras_batch_score.pipelines.options --docs docs/usage.md``);
  :mod:`keras_batch_score.pipelines.flex_metadata` writes the Flex Template's
  ``metadata.json`` from the same flags.
"""

from __future__ import annotations

from keras_batch_score.pipelines.options.checks import Check
from keras_batch_score.pipelines.options.flags import (
    add_arguments,
    add_flag,
    defaults,
    metavars,
    not_offered,
)
from keras_batch_score.pipelines.options.flat import ScoreConfig
from keras_batch_score.pipelines.options.resolve import load_yaml, report, resolve, suggest
from keras_batch_score.pipelines.options.schema import (
    DEFAULT_BATCH_SIZE,
    ENSEMBLE_METHODS,
    REQUIRED_SETTINGS,
    SETTINGS,
    ScoreOptions,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ENSEMBLE_METHODS",
    "REQUIRED_SETTINGS",
    "SETTINGS",
    "Check",
    "ScoreConfig",
    "ScoreOptions",
    "add_arguments",
    "add_flag",
    "defaults",
    "load_yaml",
    "metavars",
    "not_offered",
    "report",
    "resolve",
    "suggest",
]
