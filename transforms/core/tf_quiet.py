"""Imports TensorFlow without its native start-up log lines, and without scikit-learn.

TensorFlow 2.21 writes oneDNN, CUDA-stub and cuInit lines to file descriptor 2
from C++ before ``absl::InitializeLog()`` runs; ``TF_CPP_MIN_LOG_LEVEL`` does
not reach them. Unless the user asked for ``--verbose``, the descriptor is
pointed at /dev/null while TensorFlow loads and probes devices. Python
exceptions still propagate normally.

``import keras`` also imports ``keras.wrappers`` (the scikit-learn estimator
wrappers), which imports scikit-learn and SciPy when they are installed:
about 1.4 s of a 4.5 s Keras import on a 2-core machine, for a module that
scoring never uses. :func:`import_tensorflow` defers ``keras.wrappers``
(:class:`DeferredModule`): it is imported on first attribute access, so
``keras.wrappers.SKLearnClassifier`` still works.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

DEFERRED_MODULES = ("keras.wrappers",)


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


class DeferredModule(ModuleType):
    """Stands in for a module in ``sys.modules``; imports the real one on first attribute use.

    Unlike the module ``importlib.util.LazyLoader`` makes, ``vars()`` on it
    does not load it. That matters: Beam's state cache sizes side inputs with
    ``objsize``, which calls ``vars()`` on every module in ``sys.modules``
    (a LazyLoader module was loaded there, at the first side input).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # Tracing a tf.function with autograph reads ``__file__`` of every module in
        # sys.modules; answering it here keeps that from importing scikit-learn.
        self.__file__ = None

    def __getattr__(self, name: str) -> Any:
        return getattr(load_deferred(self.__name__), name)


def load_deferred(name: str) -> ModuleType:
    """Replaces the :class:`DeferredModule` ``name`` by the real module (imported now)."""
    if isinstance(sys.modules.get(name), DeferredModule):
        del sys.modules[name]
    real = importlib.import_module(name)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, real)
    return real


def defer_imports(names: Sequence[str] = DEFERRED_MODULES) -> None:
    """Puts a :class:`DeferredModule` in ``sys.modules`` for each of ``names`` not imported yet."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = DeferredModule(name)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` (and Keras), quietly unless KERAS_BATCH_SCORE_VERBOSITY=verbose."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    if os.environ.get("KERAS_BATCH_SCORE_VERBOSITY") == "verbose":
        defer_imports()
        import keras
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    defer_imports()
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # cuInit happens here, and logs
    return tf
