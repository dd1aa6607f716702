"""Exceptions that carry a message telling the user what to fix, and the errors output's schema.

Every stage that rejects rows (validation, inference, post-processing) writes
them with :func:`error_table`: stage, column, reason and the row as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from keras_batch_score.transforms.core.arrow import one_array, readable_text


class ConfigError(ValueError):
    """A configuration problem found before any data is read (bad key, column, path)."""


class ModelError(ConfigError):
    """The model cannot be loaded, or does not fit the configured features."""


class DataError(ValueError):
    """The job read the data but cannot produce a result from it (e.g. every label is null).

    The CLI prints its message as one ``error:`` line and exits with status 1.
    """


class ReconciliationError(RuntimeError):
    """rows_read != rows_scored + rows_failed: the job lost or duplicated rows."""


def format_names(names: Iterable[object], limit: int = 20) -> str:
    """A list of names for an error message, cut after ``limit``: ``['a', 'b', … and 5 more]``."""
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    if len(names) > limit:
        shown += f", … and {len(names) - limit} more"
    return f"[{shown}]"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


ERRORS_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("row", pa.string()),
    ]
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 64 else f"<{len(value)} bytes>"
    return value


def _with_readable_text(table: pa.Table) -> pa.Table:
    """``table`` with text that is not UTF-8 written as backslash escapes, so that it becomes JSON."""
    for i, field in enumerate(table.schema):
        column = one_array(table.column(i))
        readable = readable_text(column)
        if readable is not column:
            table = table.set_column(i, field, readable)
    return table


def error_table(
    table: pa.Table,
    rows: np.ndarray,
    stage: str,
    columns: Sequence[str | None],
    reasons: Sequence[str],
) -> pa.Table:
    """The errors-output records for ``rows`` of ``table``: stage, column, reason and the row as JSON.

    Per-row Python here only touches rejected rows.
    """
    taken = table.take(pa.array(rows, type=pa.int64())) if len(rows) else table.slice(0, 0)
    records = _with_readable_text(taken).to_pylist()
    row_json = [json.dumps(_jsonable(r), default=str, sort_keys=False) for r in records]
    return pa.table(
        {
            "stage": pa.array([stage] * len(rows), pa.string()),
            "column": pa.array(list(columns), pa.string()),
            "reason": pa.array(list(reasons), pa.string()),
            "row": pa.array(row_json, pa.string()),
        },
        schema=ERRORS_SCHEMA,
    )
