"""The ``batch-score`` command: one sub-command per pipeline.

Configuration problems print one ``error:`` line saying what to fix and exit
with status 2; no traceback. ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from keras_batch_score.pipelines import startup_gc

COMMANDS = {
    "score": (
        "keras_batch_score.pipelines.score",
        "Score Parquet or TFRecord data with a Keras model.",
    ),
    "profile": (
        "keras_batch_score.pipelines.profile",
        "Profile reference data (and predictions) for drift checks.",
    ),
    "calibrate": (
        "keras_batch_score.pipelines.calibrate",
        "Fit probability calibration on labelled data.",
    ),
    "fit-preprocess": (
        "keras_batch_score.pipelines.fit_preprocess",
        "Fit a preprocessing spec (means, stds, vocabularies) on training data.",
    ),
    "package": (
        "keras_batch_score.pipelines.package",
        "Bundle a model with its feature contract and spec files (bundle.json, sha256s).",
    ),
}


def _usage() -> str:
    lines = [
        "usage: batch-score <command> [flags]",
        "       batch-score --version",
        "",
        "commands:",
    ]
    width = max(map(len, COMMANDS)) + 2
    lines += [f"  {name:<{width}}{doc}" for name, (_, doc) in COMMANDS.items()]
    lines += ["", "Run `batch-score <command> --help` for the flags and examples of a command."]
    return "\n".join(lines)


def _did_you_mean(command: str) -> str:
    import difflib

    match = difflib.get_close_matches(command, list(COMMANDS), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a sub-command and returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from keras_batch_score.pipelines.about import version_text

        print(version_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"error: unknown command {command!r}{_did_you_mean(command)}\n\n{_usage()}",
            file=sys.stderr,
        )
        return 2
    verbose = "--verbose" in rest
    # Quiet TensorFlow before anything imports it; see keras_batch_score.pipelines.console.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    from keras_batch_score.pipelines import console, progress

    if not verbose:
        console.hide_beam_option_warnings()
    line = progress.start_line(command, rest)  # at once, before Beam and TensorFlow load
    if line:
        console.echo(line)

    from keras_batch_score.transforms.core.errors import ConfigError, DataError
    from keras_batch_score.transforms.drift.report_files import DriftDetectedError

    module = __import__(COMMANDS[command][0], fromlist=["run"])
    startup_gc.checkpoint()  # Beam and the command's modules are loaded
    try:
        module.run(rest)
    except ConfigError as e:
        if verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DataError as e:  # the job ran but the data cannot give a result
        if verbose:
            raise
        print(f"error: {_short(e)}", file=sys.stderr)
        return 1
    except DriftDetectedError as e:  # --fail-on-drift: every output is already written
        print(f"drift: {e}", file=sys.stderr)
        return 3
    except Exception as e:
        if verbose:
            raise
        print(f"error: the job failed: {type(e).__name__}: {_short(e)}", file=sys.stderr)
        print("(run again with --verbose for the full traceback)", file=sys.stderr)
        return 1
    return 0


def _short(e: BaseException) -> str:
    text = str(e).strip()
    # Beam wraps worker exceptions in long multi-line messages; keep the informative tail line.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        if "Error" in line and ":" in line:
            return line[:500]
    return lines[-1][:500]


def entry() -> None:
    """Console-script entry point: runs :func:`main`, then exits without interpreter teardown.

    Tearing down TensorFlow's and Beam's thread pools and module state at
    interpreter exit takes ~1.4 s on a 2-core machine, after the job is done
    and every output file is closed. Logs and standard streams are flushed
    first, so nothing is lost. The garbage collector is paused while the
    process starts up (:mod:`keras_batch_score.pipelines.startup_gc`).
    """
    startup_gc.pause()
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
