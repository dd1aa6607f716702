"""Versions of the tool and the frameworks it runs on, and absolute URIs for reports.

Versions come from the installed distributions' metadata
(:mod:`importlib.metadata`), so ``batch-score --version`` answers without
importing TensorFlow, Keras or Beam.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

TOOL = "keras-batch-score"

# (label, distribution names tried in order)
_DISTRIBUTIONS = (
    ("keras-batch-score", (TOOL,)),
    ("tensorflow", ("tensorflow", "tensorflow-cpu", "tf-nightly")),
    ("keras", ("keras",)),
    ("apache-beam", ("apache-beam",)),
)


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """``{tool, python, tensorflow, keras, apache-beam}`` versions (None: not installed)."""
    found = {label: _version(names) for label, names in _DISTRIBUTIONS}
    return {
        "keras-batch-score": found["keras-batch-score"],
        "python": platform.python_version(),
        "tensorflow": found["tensorflow"],
        "keras": found["keras"],
        "apache-beam": found["apache-beam"],
    }


def version_text() -> str:
    """What ``batch-score --version`` prints: one ``name version`` line per component."""
    return "\n".join(f"{name} {value or 'not installed'}" for name, value in versions().items())


def absolute_uri(path: str) -> str:
    """``path`` as an absolute URI: ``gs://`` and other schemes unchanged, local paths absolute.

    A trailing ``/`` is kept; globs stay globs (``data/*.parquet`` -> ``/cwd/data/*.parquet``).
    """
    if "://" in path:
        return path
    absolute = os.path.abspath(os.path.expanduser(path))
    return absolute + "/" if path.endswith("/") and not absolute.endswith("/") else absolute
