"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``) for ``batch-score score``.

The launcher passes every template parameter as ``--name=value``. Parameter
names in ``metadata.json`` use underscores (``id_column``), the CLI uses
hyphens (``--id-column``); :func:`to_cli_args` maps one onto the other, turns
``true``/``false`` into switch flags and splits comma-separated values of
repeatable flags (the same rules ``keras_batch_score.pipelines.flex_metadata`` documents in
``metadata.json``). Everything else (Beam and Dataflow options the launcher
adds) passes through unchanged. The launcher does not wait for the job: the
job writes ``run_summary.json`` itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


def _long_flag(action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def to_cli_args(argv: Sequence[str]) -> list[str]:
    """Template parameters (``--id_column=a,b``) -> ``batch-score score`` flags.

    Switches (``--reshuffle=true``) become the bare flag or are left out;
    ``--name=false`` of a switch that has a ``--no-name`` form becomes that
    form. Repeatable flags (``--id_column=a,b``) become one flag per value.
    An empty value leaves the flag out (the setting stays unset).
    """
    from keras_batch_score.pipelines.flex_metadata import (
        is_repeatable,
        is_switch,
        parameter_name,
        score_actions,
    )

    actions = {}
    for action in score_actions():  # --id_column and the CLI's own --id-column
        actions[f"--{parameter_name(action)}"] = actions[_long_flag(action)] = action
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        action = actions.get(name)
        if action is None:
            out.append(arg)  # a Beam / Dataflow option the launcher adds
            continue
        cli = _long_flag(action)
        if not eq:
            out.append(cli)
        elif is_switch(action):
            answer = value.strip().lower()
            if answer not in TRUE + FALSE:
                raise SystemExit(f"error: {name} expects true or false, got {value[:40]!r}")
            negative = [o for o in action.option_strings if o.startswith("--no-")]
            if answer in TRUE:
                out.append(cli)
            elif negative:
                out.append(negative[0])
        elif is_repeatable(action):
            out += [f"{cli}={part.strip()}" for part in value.split(",") if part.strip()]
        elif value.strip():
            out.append(f"{cli}={value}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from keras_batch_score.pipelines.cli import main as cli_main

    return cli_main(["score", *to_cli_args(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
