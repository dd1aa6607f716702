"""Exceptions that carry a message telling the user what to fix."""


class ConfigError(ValueError):
    """A configuration problem found before any data is read (bad key, column, path)."""


class ModelError(ConfigError):
    """The model cannot be loaded, or does not fit the configured features."""


class ReconciliationError(RuntimeError):
    """rows_read != rows_scored + rows_failed: the job lost or duplicated rows."""
