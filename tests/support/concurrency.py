"""Calling one compiled program from several threads at once, as host devices do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def worst_errors_at_once(product: Callable[..., Any], inputs: Sequence[tuple[Any, ...]],
                         wants: Sequence[np.ndarray], calls: int) -> list[float]:
    """Each thread calls ``product(*inputs[i])`` ``calls`` times, all threads starting
    together; returns each thread's worst error relative to the largest ``wants[i]``."""
    worst = [0.0] * len(inputs)
    start = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        start.wait()
        for _ in range(calls):
            got = np.asarray(product(*inputs[i]), np.float32)
            worst[i] = max(worst[i], float(np.abs(got - wants[i]).max() / np.abs(wants[i]).max()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return worst
