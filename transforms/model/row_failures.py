"""Which rows of a batch the model failed on, and why: one-line reasons, bisection, NaN/Inf checks.

Pure functions over numpy arrays, used by the inference handlers
(:mod:`keras_batch_score.transforms.model.handler`, :mod:`keras_batch_score.transforms.model.members`,
:mod:`keras_batch_score.transforms.postprocess.transforms`):

* :func:`failure_reason` turns an exception, or the
  ``(exc_type, exc_repr, traceback_lines)`` tuple that Beam's
  ``with_exception_handling()`` hands over, into one short line.
* :func:`predict_rows` runs a model on a batch; when the call raises, it
  bisects the batch (halve, retry each half) so that only the failing rows
  are reported and every other row is scored. The search is bounded: see
  :func:`bisection_budget`.
* :func:`nonfinite_rows` finds the rows with a NaN or Inf in any output.

Per-row Python only ever touches failed rows.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

INFERENCE_FAILED = "inference failed"
MAX_REASON_CHARS = 200
# Bisection can isolate this many separate failing rows (or runs of rows) per
# model call exactly; beyond that, ranges still failing are reported whole.
MAX_FAILING_GROUPS = 16

_TF_FUNCTION_PREFIX = re.compile(r"^(?:\{\{[^{}]*\}\}\s*)+")

Predict = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def failure_reason(error: BaseException | tuple[Any, str, Sequence[str]]) -> str:
    """``<ExceptionType>: <first line of its message>``, one line of at most ~200 characters.

    Args:
        error: An exception, or Beam's dead-letter tuple
            ``(exc_type, exc_repr, traceback_lines)``. The message is read from
            the last traceback line, since ``repr`` of a TensorFlow error is
            just ``InvalidArgumentError()``.
    """
    if isinstance(error, BaseException):
        name, message = type(error).__name__, str(error)
    else:
        exc_type, exc_repr, lines = error
        name = getattr(exc_type, "__name__", None) or str(exc_type)
        message = _message_from_traceback(name, list(lines or ()), str(exc_repr))
    line = _first_line(message)
    return f"{name}: {line}" if line else name


def _message_from_traceback(name: str, lines: Sequence[str], exc_repr: str) -> str:
    """The message part of the ``[module.]Name: message`` line that ends a formatted traceback."""
    last = lines[-1] if lines else ""
    head, sep, rest = last.partition(": ")
    if head.strip().rsplit(".", 1)[-1] == name:
        return rest if sep else ""
    if last.strip().rsplit(".", 1)[-1] == name:
        return ""
    if exc_repr.startswith(f"{name}(") and exc_repr.endswith(")"):
        return exc_repr[len(name) + 1 : -1]
    return exc_repr


def _first_line(message: str) -> str:
    text = _TF_FUNCTION_PREFIX.sub("", message.strip())
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


def inference_failed(error: BaseException | tuple[Any, str, Sequence[str]]) -> str:
    """The errors-output reason of a row the model raised on: ``inference failed: <reason>``."""
    return f"{INFERENCE_FAILED}: {failure_reason(error)}"


# --------------------------------------------------------------------------- NaN / Inf


def nonfinite_rows(
    outputs: Mapping[str, np.ndarray],
    subjects: Mapping[str, str],
    suffix: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Rows with a NaN or Inf in any floating-point output (vectorized).

    Args:
        outputs: Row-aligned arrays, checked in order; non-float arrays are skipped.
        subjects: Per output key, how the reason names it (e.g. ``model output``
            or ``model output 'score'``); keys missing here are not checked.
        suffix: Appended to every reason (e.g. `` after post-processing``).

    Returns:
        ``(rows, reasons)``: ascending row indices and, per row, ``<subject> is NaN``
        or ``<subject> is Inf`` for the first output that is not finite.
    """
    arrays = [(k, np.asarray(v)) for k, v in outputs.items() if k in subjects]
    if not arrays:
        return np.zeros(0, dtype=np.int64), []
    n = len(arrays[0][1])
    code = np.full(n, -1, dtype=np.int64)
    texts: list[str] = []
    for key, values in arrays:
        if values.dtype.kind not in "fc" or n == 0:
            continue
        flat = values.reshape(n, -1)
        finite = np.isfinite(flat)
        if finite.all():
            continue
        has_nan = np.isnan(flat).any(axis=1)
        has_inf = ~finite.all(axis=1) & ~has_nan
        for kind, rows in (("NaN", has_nan), ("Inf", has_inf)):
            new = rows & (code < 0)
            if new.any():
                code[new] = len(texts)
                texts.append(f"{subjects[key]} is {kind}{suffix}")
    bad = np.flatnonzero(code >= 0)
    return bad, [texts[c] for c in code[bad].tolist()]


def output_subjects(labels: Sequence[tuple[str, str]]) -> dict[str, str]:
    """How reasons name each output key: ``model output`` alone, or ``model output 'name'``.

    Args:
        labels: ``(output key, user-facing output name)`` pairs; several keys may
            share a name (e.g. an output and its MC-dropout std).
    """
    several = len({name for _, name in labels}) > 1
    return {key: f"model output {name!r}" if several else "model output" for key, name in labels}


# --------------------------------------------------------------------------- bisection


def bisection_budget(n: int) -> int:
    """Extra model calls allowed to isolate the failing rows of an ``n``-row call.

    Isolating one failing row costs at most ``2 * ceil(log2 n)`` calls (both
    halves of every failing range are retried, level by level). The budget is
    that times :data:`MAX_FAILING_GROUPS`, so a batch with up to 16 separate
    failing rows is resolved row by row; a model that fails on every row costs
    at most ``32 * ceil(log2 n)`` extra calls (448 for 16,384 rows) before the
    ranges still failing go to errors whole.
    """
    return 2 * max(1, math.ceil(math.log2(max(n, 2)))) * MAX_FAILING_GROUPS


@dataclasses.dataclass(frozen=True)
class RowPredictions:
    """The outcome of :func:`predict_rows`: every row is either scored or failed, once.

    Attributes:
        outputs: Model outputs of the scored rows, in row order.
        failed: Ascending indices of the rows that failed.
        reasons: One reason per failed row (aligned with ``failed``).
        extra_calls: Model calls made by the bisection (0 when the first call succeeded).
    """

    outputs: dict[str, np.ndarray]
    failed: np.ndarray
    reasons: list[str]
    extra_calls: int = 0


def predict_rows(
    predict: Predict,
    features: Mapping[str, np.ndarray],
    n: int,
    *,
    subjects: Mapping[str, str] | None = None,
    budget: int | None = None,
) -> RowPredictions:
    """Runs ``predict`` on ``n`` rows; a failing call is bisected, non-finite outputs are failed rows.

    Args:
        predict: The model call: features -> outputs, all row-aligned.
        features: The model inputs of the ``n`` rows.
        n: Number of rows.
        subjects: Per output key, its name in NaN/Inf reasons (see
            :func:`output_subjects`); None checks every output as ``model output``.
        budget: Max extra calls for the bisection (default :func:`bisection_budget`).

    Returns:
        A :class:`RowPredictions` in which every row appears exactly once.
    """
    try:
        outputs = dict(predict(features))
        failed_ranges: list[tuple[int, int, str]] = []
        calls = 0
    except Exception as e:
        limit = bisection_budget(n) if budget is None else budget
        outputs, failed_ranges, calls = _bisect(predict, features, n, inference_failed(e), limit)
    if failed_ranges:
        failed = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b, _ in failed_ranges])
        reasons = [r for a, b, r in failed_ranges for _ in range(b - a)]
        scored_rows = np.setdiff1d(np.arange(n, dtype=np.int64), failed, assume_unique=True)
    else:
        failed, reasons, scored_rows = np.zeros(0, dtype=np.int64), [], None
    if subjects is None:
        subjects = {k: "model output" for k in outputs}
    bad, bad_reasons = nonfinite_rows(outputs, subjects)
    if bad.size:
        keep = np.ones(len(next(iter(outputs.values()))), dtype=bool)
        keep[bad] = False
        outputs = {k: v[keep] for k, v in outputs.items()}
        absolute = bad if scored_rows is None else scored_rows[bad]
        failed = np.concatenate([failed, absolute])
        reasons = reasons + bad_reasons
    if len(failed) > 1:
        order = np.argsort(failed, kind="stable")
        failed = failed[order]
        reasons = [reasons[i] for i in order.tolist()]
    return RowPredictions(outputs, failed, reasons, calls)


def _bisect(
    predict: Predict, features: Mapping[str, np.ndarray], n: int, reason: str, budget: int
) -> tuple[dict[str, np.ndarray], list[tuple[int, int, str]], int]:
    """Breadth-first halving of failing row ranges; returns (scored outputs, failed ranges, calls)."""
    scored: list[tuple[int, dict[str, np.ndarray]]] = []
    failed: list[tuple[int, int, str]] = []
    queue = collections.deque([(0, n, reason)])
    calls = 0
    while queue:
        start, stop, why = queue.popleft()
        if stop - start <= 1 or calls + 2 > budget:
            failed.append((start, stop, why))
            continue
        mid = (start + stop) // 2
        for a, b in ((start, mid), (mid, stop)):
            calls += 1
            try:
                scored.append((a, dict(predict({k: v[a:b] for k, v in features.items()}))))
            except Exception as e:
                queue.append((a, b, inference_failed(e)))
    failed.sort()
    scored.sort(key=lambda item: item[0])
    if scored:
        keys = scored[0][1].keys()
        outputs = {k: np.concatenate([np.asarray(out[k]) for _, out in scored]) for k in keys}
    else:
        outputs = {}
    return outputs, failed, calls
