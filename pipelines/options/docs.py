"""The flag tables of the docs, generated from the option schema.

A table sits between ``<!-- flags:COMMAND -->`` and ``<!-- /flags:COMMAND -->``
in a Markdown file; :func:`update` rewrites it (``tests/unit/test_options.py``
fails until the committed file matches)::

    python -m keras_batch_score.pipelines.options --docs docs/usage.md
"""

from __future__ import annotations

import re
from typing import Any

from keras_batch_score.pipelines.options.flags import offered
from keras_batch_score.pipelines.options.schema import Setting

HEADER = "| flag | YAML key | default | meaning |\n|---|---|---|---|"


def _default(setting: Setting) -> str:
    if setting.flag.required:
        return "required"
    value: Any = setting.default()
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def _flag(setting: Setting) -> str:
    flag = setting.flag
    shown = flag.flag if setting.is_switch or not flag.metavar else f"{flag.flag} {flag.metavar}"
    return f"`{shown}`" + (" (repeatable)" if flag.repeat else "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def row(setting: Setting) -> str:
    """One table row: flag, YAML key, default, help (with the choices)."""
    meaning = setting.flag.help
    if setting.flag.choices:
        meaning += " One of: " + ", ".join(f"`{c}`" for c in setting.flag.choices) + "."
    cells = (_flag(setting), f"`{setting.key}`", _default(setting), meaning)
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def table(command: str) -> str:
    """The Markdown flag tables of ``command``, one per section (``--help`` group)."""
    parts: list[str] = []
    title = None
    for setting in offered(command):
        if setting.title != title:
            title = setting.title
            parts += ["", f"**{title.capitalize()}**", "", HEADER]
        parts.append(row(setting))
    return "\n".join(parts[1:])


def _markers(command: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- flags:{re.escape(command)} -->\n)(.*?)(<!-- /flags:{re.escape(command)} -->)",
        re.S,
    )


def commands_in(text: str) -> list[str]:
    """The commands whose tables ``text`` holds."""
    return re.findall(r"<!-- flags:([a-z-]+) -->", text)


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    for command in commands_in(text):
        text = _markers(command).sub(
            lambda m, c=command: m.group(1) + table(c) + "\n" + m.group(3), text
        )
    return text


def update(path: str) -> bool:
    """Regenerates the tables of the Markdown file ``path``; True when it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = render(text)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text
