"""Ctrl-C and SIGTERM as a request to save and stop, not as a lost run.

The handler only sets a flag; the train loop looks at it after each step, saves a
checkpoint and returns, so the run resumes exactly. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Ctrl-C / SIGTERM ask the loop to save and stop; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
