"""Elements finished on other threads, emitted by a DoFn in input order.

Two DoFns overlap their work with the rest of a fused stage this way: the
image preprocessor (decoding on a thread pool) and the model call (see
:mod:`keras_batch_score.transforms.model.handler`). On the local runner every
step of a fused stage runs on one thread; handing the slow, GIL-releasing part
of an element to another thread and emitting its outputs a few elements later
lets the stage read and validate the next element meanwhile.

* :class:`Deferred` is one value that a ``Future`` computes. It pickles as
  the value itself, so a runner that encodes the element gets the finished
  value, never the future.
* :class:`InOrderDoFn` is the base of such DoFns: it holds up to ``depth``
  pending elements and emits their outputs in input order, each in its
  element's window, and the rest in ``finish_bundle``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.utils.windowed_value import WindowedValue

T = TypeVar("T")


def _finished(value: T) -> T:
    return value


class Deferred(Generic[T]):
    """Item ``index`` of a list that ``future`` computes (the whole result when ``index`` is None)."""

    def __init__(self, future: Future, index: int | None = None) -> None:
        self._future = future
        self._index = index

    def done(self) -> bool:
        """Whether the value is ready (:meth:`result` would not wait)."""
        return self._future.done()

    def result(self) -> T:
        """The value; waits for it, and raises what computing it raised."""
        value = self._future.result()
        return value if self._index is None else value[self._index]

    def __reduce__(self) -> tuple[Callable[[T], T], tuple[T]]:
        return _finished, (self.result(),)


class InOrderDoFn(beam.DoFn):
    """Base of DoFns whose elements finish on other threads: outputs in input order, in their windows.

    A subclass's ``process`` hands :meth:`emit_in_order` a callable that
    returns an element's outputs (values or ``TaggedOutput``), waiting for
    them if need be. Up to ``depth`` elements wait; the oldest are emitted
    while more do, and the rest in ``finish_bundle``.

    Args:
        depth: How many elements may wait unemitted (>= 0).
    """

    def __init__(self, depth: int) -> None:
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self._depth = depth

    def start_bundle(self) -> None:
        self._waiting: collections.deque[tuple[Callable[[], Iterable[Any]], Any, Any]] = (
            collections.deque()
        )

    def finish_bundle(self) -> Iterator[Any]:
        while self._waiting:
            yield from self._emit_oldest()

    @property
    def waiting(self) -> int:
        """How many elements wait to be emitted."""
        return len(self._waiting)

    def emit_in_order(
        self, outputs: Callable[[], Iterable[Any]], window: Any, timestamp: Any
    ) -> Iterator[Any]:
        """Queues one element; yields the oldest elements' outputs while more than ``depth`` wait.

        Args:
            outputs: Called when the element is emitted; returns its outputs.
            window: The element's window (``beam.DoFn.WindowParam``).
            timestamp: The element's timestamp (``beam.DoFn.TimestampParam``).
        """
        self._waiting.append((outputs, window, timestamp))
        while len(self._waiting) > self._depth:
            yield from self._emit_oldest()

    def _emit_oldest(self) -> Iterator[Any]:
        outputs, window, timestamp = self._waiting.popleft()
        for out in outputs():
            if isinstance(out, pvalue.TaggedOutput):
                yield pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
            else:
                yield WindowedValue(out, timestamp, [window])
