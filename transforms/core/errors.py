"""Exceptions that carry a message telling the user what to fix."""

from collections.abc import Iterable


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
