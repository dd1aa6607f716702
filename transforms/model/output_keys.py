"""Prediction keys of member outputs and of their standard deviation.

A member's output ``prediction`` is stored under ``prediction__<member>`` and
its spread under ``prediction__std``; the shadow model is the member ``shadow``.
"""

from __future__ import annotations

STD = "std"
SHADOW = "shadow"  # member name of the shadow model (keras_batch_score.transforms.model.shadow)


def member_key(output: str, member: str | None) -> str:
    """Internal prediction key of a member's output (``output`` itself for no member)."""
    return output if member is None else f"{output}__{member}"


def std_key(output: str) -> str:
    """Internal prediction key of an output's standard deviation (``<output>__std``)."""
    return f"{output}__{STD}"
