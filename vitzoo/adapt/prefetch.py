"""Host batches moved to the devices on a background thread, a few batches ahead.

Why: copying a batch to the devices would otherwise sit between two steps; on a thread
it overlaps the step before it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Prefetch:
    """Moves host batches to the devices on a background thread, ``depth`` batches ahead."""

    def __init__(self, batches: Iterator[dict[str, Any]], put: Callable[[Any], Any],
                 depth: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

        def work() -> None:
            try:
                for batch in batches:
                    item = put(batch)
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
            except BaseException as exc:  # surfaced in the consumer
                self._queue.put(exc)
            self._queue.put(StopIteration())

        self._thread = threading.Thread(target=work, daemon=True, name="vitzoo-prefetch")
        self._thread.start()

    def __next__(self) -> Any:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop and join the worker, so no thread is inside TensorFlow at interpreter exit."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
            self._thread.join(timeout=0.05)
