"""Console output: progress and a short summary by default, no framework log spam.

Call :func:`configure` before TensorFlow is imported: TF reads
``TF_CPP_MIN_LOG_LEVEL`` once, at import. The variables are inherited by the
SDK worker processes that multi-process runners start.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LOGGER_NAME = "keras_batch_score"

_NOISY = (
    "apache_beam",
    "tensorflow",
    "absl",
    "h5py",
    "google",
    "urllib3",
    "grpc",
    "keras",
)


def configure(verbosity: str = "normal") -> None:
    """Sets up logging for a CLI run.

    Args:
        verbosity: ``quiet`` (errors only), ``normal`` (progress and summary) or
            ``verbose`` (everything, including Beam, TensorFlow and absl logs).
    """
    if verbosity not in ("quiet", "normal", "verbose"):
        raise ValueError(f"unknown verbosity {verbosity!r}")
    verbose = verbosity == "verbose"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    os.environ.setdefault("GRPC_VERBOSITY", "INFO" if verbose else "ERROR")
    os.environ["KERAS_BATCH_SCORE_VERBOSITY"] = verbosity
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        warnings.filterwarnings("ignore")

    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if verbose
            else "%(asctime)s %(message)s",
            "%H:%M:%S",
        )
    )
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.ERROR)

    ours = logging.getLogger(LOGGER_NAME)
    ours.setLevel(logging.ERROR if verbosity == "quiet" else logging.INFO)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        hide_beam_option_warnings()
        # Beam logs a failing DoFn's traceback before re-raising it; the CLI prints
        # the exception itself as one ``error:`` line (--verbose shows both).
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass


class _DropBeamOptionWarnings(logging.Filter):
    """Drops Beam's "Discarding unparseable args" (and "Discarding flag") warnings.

    Beam logs them whenever an options object is parsed with flags another
    options class owns (every flag is already checked by
    :func:`keras_batch_score.pipelines.config.split_beam_args`, so they tell a user nothing).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Discarding unparseable args", "Discarding flag"))


_BEAM_OPTIONS_LOGGER = "apache_beam.options.pipeline_options"


def hide_beam_option_warnings() -> None:
    """Silences Beam's option-parsing warnings (call before Beam parses options; not --verbose)."""
    logger = logging.getLogger(_BEAM_OPTIONS_LOGGER)
    if not any(isinstance(f, _DropBeamOptionWarnings) for f in logger.filters):
        logger.addFilter(_DropBeamOptionWarnings())


def echo(message: str) -> None:
    """A line of user-facing output on stdout (unless --quiet)."""
    if os.environ.get("KERAS_BATCH_SCORE_VERBOSITY") != "quiet":
        print(message, flush=True)
