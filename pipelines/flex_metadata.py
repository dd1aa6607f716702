"""Generates the Dataflow Flex Template ``metadata.json`` from the ``batch-score score`` flags.

One template parameter per ``score`` flag of the option schema (:mod:`keras_batch_score.pipelines.options`):
the name is the flag with underscores (``--id-column`` -> ``id_column``, which
``templates/dataflow/main.py`` maps back), the help text is the flag's, and
switches, numbers and choices get a validation regex. Regenerate after adding
or changing a flag (``tests/deploy/test_templates.py`` fails until the file matches)::

    make flex-metadata
    # or: python -m keras_batch_score.pipelines.flex_metadata --output templates/dataflow/metadata.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from keras_batch_score.pipelines.options import REQUIRED_SETTINGS, add_arguments

NAME = "keras-batch-score"
DESCRIPTION = (
    "Score Parquet or TFRecord files with a Keras model (.keras, .h5 or SavedModel): "
    "predictions, rejected rows and run_summary.json in the output directory. "
    "Parameter names are the `batch-score score` flags with underscores "
    "(id_column is --id-column); repeatable flags take comma-separated values, "
    "switches take true or false."
)
GCS_PATH = r"^gs:\/\/[^\n\r]+$"
BOOLEAN = r"^(true|false)$"
INTEGER = r"^-?[0-9]+$"
NUMBER = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
# Settings the job reads and writes on Dataflow must be Cloud Storage paths.
GCS_ONLY = ("input", "output")


def score_actions() -> list[argparse.Action]:
    """The ``batch-score score`` flags, in ``--help`` order."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser, "score")
    return [a for a in parser._actions if a.option_strings]


def parameter_name(action: argparse.Action) -> str:
    """``--id-column`` -> ``id_column`` (the first long flag, underscores for hyphens)."""
    flag = next(o for o in action.option_strings if o.startswith("--"))
    return flag[2:].replace("-", "_")


def is_switch(action: argparse.Action) -> bool:
    """True for flags that take no value (``store_true`` and the like)."""
    return action.nargs == 0


def is_repeatable(action: argparse.Action) -> bool:
    """True for flags given once per value (``action="append"`` or ``"extend"``)."""
    return isinstance(action, (argparse._AppendAction, argparse._ExtendAction))


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _help(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split())
    if is_switch(action):
        text += " true or false."
    elif is_repeatable(action):
        text += " Several values: comma-separated."
    if action.choices and not is_switch(action):
        text += f" One of: {', '.join(map(str, action.choices))}."
    return text.strip()


def _regexes(name: str, action: argparse.Action) -> list[str]:
    if is_switch(action):
        return [BOOLEAN]
    if action.choices:
        return ["^(" + "|".join(map(str, action.choices)) + ")$"]
    if action.type is int:
        return [INTEGER]
    if action.type is float:
        return [NUMBER]
    if name in GCS_ONLY:
        return [GCS_PATH]
    return []


def parameter(action: argparse.Action) -> dict[str, Any]:
    """One Flex Template parameter for one flag."""
    name = parameter_name(action)
    param: dict[str, Any] = {
        "name": name,
        "label": _label(name),
        "helpText": _help(action),
        "isOptional": name not in REQUIRED_SETTINGS,
    }
    regexes = _regexes(name, action)
    if regexes:
        param["regexes"] = regexes
    return param


def metadata() -> dict[str, Any]:
    """The whole ``metadata.json`` document: required parameters first, then flag order."""
    params = [parameter(a) for a in score_actions()]
    params.sort(key=lambda p: p["isOptional"])  # stable: flag order within each group
    return {"name": NAME, "description": DESCRIPTION, "parameters": params}


def render() -> str:
    """``metadata.json`` as committed: 2-space indent, trailing newline."""
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_batch_score.pipelines.flex_metadata",
        description=__doc__.split("\n", 1)[0],
    )
    parser.add_argument("--output", help="Write here (atomically) instead of to stdout.")
    args = parser.parse_args(argv)
    text = render()
    if not args.output:
        sys.stdout.write(text)
        return 0
    directory = os.path.dirname(os.path.abspath(args.output))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
