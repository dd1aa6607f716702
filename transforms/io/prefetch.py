"""Background threads that overlap reading and writing with the model call.

On the local runner every step of a fused stage runs in one thread: read a
row group, validate it, run the model, encode and write Parquet, then the
next row group. pyarrow releases the GIL while it reads, decodes and encodes,
and TensorFlow releases it inside the compiled model call, so on a machine
with two cores these can run at the same time. Two helpers do that, both
bounded so memory stays flat whatever the input size:

* :class:`ReadAhead` runs a function on the next inputs on one background
  thread, at most ``depth`` inputs ahead, and hands the results back in input
  order (the reader: row group ``k + 1`` is read while row group ``k`` is scored).
* :func:`read_ahead` does the same for an iterator (the TFRecord reader: the
  records of a file are read and parsed a few batches ahead).
* :class:`BackgroundWriter` hands items to one background thread through a
  bounded queue (the writer: Parquet encoding and file writes of batch ``k``
  run while batch ``k + 1`` is scored).

Exceptions raised on the background thread are re-raised in the caller: by
:meth:`ReadAhead.submit` / :meth:`ReadAhead.drain` for the input that failed,
by :func:`read_ahead` where the failed item would have been yielded, and by the
next :meth:`BackgroundWriter.put` or by :meth:`BackgroundWriter.close`.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")
Tag = TypeVar("Tag")

_STOP = object()


class ReadAhead(Generic[In, Out, Tag]):
    """Applies ``fn`` to inputs on one background thread, up to ``depth`` inputs ahead.

    Results come back in the order the inputs were submitted, each with the
    ``tag`` it was submitted with. ``fn`` runs on a single thread, so it may
    keep state (an open file) between calls without locking.

    Args:
        fn: The function to apply (for example: read one Parquet row group).
        depth: How many submitted inputs may wait unreturned (>= 1). At most
            ``depth + 1`` results are held in memory at once.
    """

    def __init__(self, fn: Callable[[In], Out], depth: int = 2, name: str = "read-ahead") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._fn = fn
        self._depth = depth
        self._name = name
        self._pending: collections.deque[tuple[Future[Out], Tag]] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, item: In, tag: Tag) -> Iterator[tuple[Out, Tag]]:
        """Starts ``fn(item)``; yields the oldest results while more than ``depth`` are pending."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        self._pending.append((self._executor.submit(self._fn, item), tag))
        while len(self._pending) > self._depth:
            yield self._pop()

    def drain(self) -> Iterator[tuple[Out, Tag]]:
        """Yields every pending result, oldest first, waiting for each."""
        while self._pending:
            yield self._pop()

    def _pop(self) -> tuple[Out, Tag]:
        future, tag = self._pending.popleft()
        try:
            return future.result(), tag
        except BaseException:
            self.close()
            raise

    @property
    def pending(self) -> int:
        """How many submitted inputs have not been returned yet."""
        return len(self._pending)

    def close(self) -> None:
        """Drops pending work (already running work finishes) and stops the thread."""
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def read_ahead(items: Iterable[Out], depth: int = 2, name: str = "read-ahead") -> Iterator[Out]:
    """Yields ``items`` in order while one background thread produces up to ``depth`` ahead.

    An exception raised while producing an item is raised here, in its place.
    Closing the returned generator early stops the thread after the item it is
    working on.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    results: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                results.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
            offer((False, None))
        except BaseException as e:
            offer((False, e))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, value = results.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


class BackgroundWriter(Generic[In]):
    """Calls ``write(item)`` for each :meth:`put` item, in order, on one background thread.

    The queue holds at most ``max_pending`` items; :meth:`put` blocks while it
    is full, so a slow disk slows the producer instead of filling memory.

    Args:
        write: The function to call per item (for example: encode and write a table).
        max_pending: Queue size (>= 1).
    """

    def __init__(
        self, write: Callable[[In], Any], max_pending: int = 2, name: str = "background-writer"
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # keep draining, so that put() never blocks on a dead writer
            try:
                self._write(item)
            except BaseException as e:
                self._error = e

    def put(self, item: In) -> None:
        """Queues ``item``; raises the background thread's exception if a write failed."""
        if self._closed:
            raise RuntimeError("put() after close()")
        self._raise_if_failed()
        self._queue.put(item)

    def close(self) -> None:
        """Waits until every queued item is written; raises if any write failed."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
