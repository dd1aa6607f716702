"""Imports TensorFlow without its native start-up log lines, and without scikit-learn.

TensorFlow 2.21 writes oneDNN, CUDA-stub and cuInit lines to file descriptor 2
from C++ before ``absl::InitializeLog()`` runs; ``TF_CPP_MIN_LOG_LEVEL`` does
not reach them. Unless the user asked for ``--verbose``, the descriptor is
pointed at /dev/null while TensorFlow loads and probes devices. Python
exceptions still propagate normally.

``import keras`` also imports ``keras.wrappers`` (the scikit-learn estimator
wrappers), which imports scikit-learn and SciPy when they are installed:
about 1.4 s of a 4.5 s Keras import on a 2-core machine, for a module that
scoring never uses. :func:`import_tensorflow` imports ``keras.wrappers``
lazily (``importlib.util.LazyLoader``): its body runs on first attribute
access, so ``keras.wrappers.SKLearnClassifier`` still works.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

LAZY_MODULES = ("keras.wrappers",)


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


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds the named modules with a ``LazyLoader``: each runs on first attribute access."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: object = None):
        if fullname not in self._names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


@contextlib.contextmanager
def lazy_imports(names: Sequence[str] = LAZY_MODULES) -> Iterator[None]:
    """Within the block, importing one of ``names`` defers running its body."""
    finder = _LazyFinder(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` (and Keras), quietly unless KERAS_BATCH_SCORE_VERBOSITY=verbose."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    if os.environ.get("KERAS_BATCH_SCORE_VERBOSITY") == "verbose":
        with lazy_imports():
            import keras
            import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced(), lazy_imports():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # cuInit happens here, and logs
    return tf
