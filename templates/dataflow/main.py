"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``) for ``batch-score score``.

The launcher passes every template parameter as ``--name=value``. Parameter
names in ``metadata.json`` use underscores (``id_column``), the CLI uses
hyphens (``--id-column``); :func:`to_cli_args` maps one onto the other, turns
``true``/``false`` into switch flags and splits comma-separated values of
repeatable flags. Everything else (Beam and Dataflow options the launcher
adds) passes through unchanged. The launcher does not wait for the job: the
job writes ``run_summary.json`` itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _score_flags() -> dict[str, argparse.Action]:
    from pipelines.config import add_score_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_score_arguments(parser)
    return {opt: action for action in parser._actions for opt in action.option_strings}


def to_cli_args(argv: Sequence[str]) -> list[str]:
    """Template parameters (``--id_column=a,b``) -> ``batch-score score`` flags."""
    flags = _score_flags()
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        cli = name.replace("_", "-")
        action = flags.get(cli) if name.startswith("--") else None
        if action is None:
            out.append(arg)
        elif not eq:
            out.append(cli)
        elif isinstance(action, argparse._StoreTrueAction):
            if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SystemExit(f"error: {name} expects true or false, got {value!r}")
            if value.strip().lower() in ("true", "1", "yes"):
                out.append(cli)
        elif isinstance(action, argparse._AppendAction):
            out += [f"{cli}={part.strip()}" for part in value.split(",") if part.strip()]
        else:
            out.append(f"{cli}={value}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.cli import main as cli_main

    return cli_main(["score", *to_cli_args(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
