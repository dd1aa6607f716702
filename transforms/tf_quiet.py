"""Imports TensorFlow without its native start-up log lines.

TensorFlow 2.21 writes oneDNN, CUDA-stub and cuInit lines to file descriptor 2
from C++ before ``absl::InitializeLog()`` runs; ``TF_CPP_MIN_LOG_LEVEL`` does
not reach them. Unless the user asked for ``--verbose``, the descriptor is
pointed at /dev/null while TensorFlow loads and probes devices. Python
exceptions still propagate normally.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Redirects fd 2 to /dev/null for the duration of the block."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. pytest capture without a real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` (and Keras), quietly unless KERAS_BATCH_SCORE_VERBOSITY=verbose."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    if os.environ.get("KERAS_BATCH_SCORE_VERBOSITY") == "verbose":
        import keras
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # cuInit happens here, and logs
    return tf
