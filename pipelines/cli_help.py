"""What every sub-command's ``--help`` and flag parsing share.

* :func:`new_parser`: an ``ArgumentParser`` formatted by ``rich-argparse``, with
  the sub-command's examples as its epilog.
* :func:`polish`: readable metavars (``--id-column COLUMN``, not
  ``ID_COLUMNS``) and ``(default: ...)`` on every flag whose default means
  something (the scoring flags keep ``argparse.SUPPRESS`` as their parser
  default, so their defaults come from :mod:`keras_batch_score.pipelines.options`).
* :func:`parse_flags`: unknown flags are reported before missing required
  ones, and a stray value (an unquoted glob the shell expanded) gets a hint to
  quote it (:func:`keras_batch_score.pipelines.config.split_beam_args`).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from rich_argparse import RawDescriptionRichHelpFormatter

from keras_batch_score.pipelines.options import metavars
from keras_batch_score.transforms.core.errors import ConfigError


class HelpFormatter(RawDescriptionRichHelpFormatter):
    """rich-argparse, with help texts taken literally (``[...]`` is not rich markup)."""

    help_markup = False
    text_markup = False
    group_name_formatter = str.capitalize


# Metavar per option string; flags not listed keep argparse's (their dest, upper-cased).
# The scoring flags' metavars are part of their schema entry (keras_batch_score.pipelines.options);
# the rest are the flags of profile, calibrate, fit-preprocess and package.
METAVARS: dict[str, str] = {
    **metavars(),
    "--label-column": "COLUMN",
    "--bins": "N",
    "--num-bins": "N",
    "--categorical-max-distinct": "N",
    "--categorical-columns": "COL,COL,...",
    "--numeric-columns": "COL,COL,...",
    "--spec": "FILE",
}

BEAM_NOTE = (
    "Any Apache Beam pipeline option is passed through to Beam, e.g. --runner=DataflowRunner, "
    "--direct_num_workers=4, --direct_running_mode=multi_processing, --project, --region, "
    "--temp_location. Quote globs ('data/*.parquet') so the shell does not expand them."
)

EXAMPLES: dict[str, Sequence[str]] = {
    "score": (
        "batch-score score --model model.keras --input 'data/*.parquet' --output out/ --id-column id",
        "batch-score score --model a=a.keras --model b=b.keras --ensemble mean \\\n"
        "    --input data/ --output out/ --reference-profile profile.json --fail-on-drift",
        "batch-score score --model gs://models/churn-bundle/ --input 'gs://bucket/day=*/*.parquet' \\\n"
        "    --output gs://bucket/scores/ --runner=DataflowRunner --project=p --region=europe-west1",
    ),
    "profile": (
        "batch-score profile --input 'train/*.parquet' --output profile.json --id-column id",
        "batch-score profile --input train/ --output profile.json --model model.keras \\\n"
        "    --categorical-columns country,plan",
    ),
    "calibrate": (
        "batch-score calibrate --model model.keras --input labelled.parquet --label-column y \\\n"
        "    --output calibration.json",
        "batch-score calibrate --model model.keras --input 'valid/*.parquet' --label-column y \\\n"
        "    --method isotonic --bins 20 --output calibration.json",
    ),
    "fit-preprocess": (
        "batch-score fit-preprocess --input 'train/*.parquet' --spec spec.yaml --output fitted.yaml",
        "batch-score fit-preprocess --input train/ --spec spec.yaml --output gs://bucket/fitted.yaml",
    ),
    "package": (
        "batch-score package --model model.keras --feature-columns f0,f1,f2 --output bundle/",
        "batch-score package --model model.keras --preprocess fitted.yaml \\\n"
        "    --calibration calibration.json --reference-profile profile.json --output bundle/",
    ),
}


def epilog(command: str, *, beam: bool = True) -> str:
    """The examples of ``command`` (and the note on Beam flags) as a help epilog."""
    lines = ["examples:"]
    for example in EXAMPLES.get(command, ()):
        lines.append(textwrap.indent(example, "  "))
    if beam:
        lines += ["", *textwrap.wrap(BEAM_NOTE, 96)]
    return "\n".join(lines)


def new_parser(command: str, description: str, *, beam: bool = True) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``batch-score <command>`` with examples and rich formatting."""
    return argparse.ArgumentParser(
        prog=f"batch-score {command}",
        description=description,
        epilog=epilog(command, beam=beam),
        formatter_class=HelpFormatter,
    )


def _shown(value: Any) -> bool:
    return value not in (None, False, (), [], "", argparse.SUPPRESS)


def polish(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """Sets readable metavars and appends ``(default: X)`` to help texts.

    Args:
        parser: A parser whose flags are all added.
        defaults: ``dest -> default`` for flags whose parser default is
            ``argparse.SUPPRESS`` (the value the setting takes when unset).
    """
    defaults = defaults or {}
    for action in parser._actions:  # argparse keeps no public list of its actions
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option in METAVARS and action.nargs != 0 and action.metavar is None:
                action.metavar = METAVARS[option]
        default = defaults.get(action.dest, action.default)
        if action.nargs == 0 or not _shown(default) or "default" in (action.help or ""):
            continue
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        action.help = f"{action.help or ''} (default: {shown})".strip()


def set_help(parser: argparse.ArgumentParser, option: str, text: str) -> None:
    """Replaces the help text of ``option`` (a shared flag that means something else here)."""
    for action in parser._actions:
        if option in action.option_strings:
            action.help = text


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string ``parser`` knows (for "did you mean")."""
    return [o for a in parser._actions for o in a.option_strings]


def parse_flags(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """Parses our flags, checks the rest with Beam, then checks required flags.

    Returns:
        ``(namespace, beam flags)``.

    Raises:
        ConfigError: for an unknown flag (with a suggestion), then a stray value
            (with a hint to quote globs), then a missing required flag.
    """
    from keras_batch_score.pipelines.config import split_beam_args

    required = [a for a in parser._actions if a.required]
    for action in required:
        action.required = False
    try:
        known, rest = parser.parse_known_args(argv)
    finally:
        for action in required:
            action.required = True
    beam_args = split_beam_args(rest, ours=option_strings(parser), command=_command(parser))
    missing = [
        a.option_strings[0]
        for a in required
        if getattr(known, a.dest, None) in (None, argparse.SUPPRESS)
    ]
    if missing:
        raise ConfigError(
            f"missing required flag(s) {', '.join(missing)}; "
            f"run `{parser.prog} --help` for the flags and examples"
        )
    return known, beam_args


def _command(parser: argparse.ArgumentParser) -> str:
    return parser.prog.split(" ", 1)[1] if " " in parser.prog else "<command>"
