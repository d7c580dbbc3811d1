"""How much host memory the data pipelines may hold.

One budget decides three things: whether a split is read into memory or streamed,
whether evaluation images are cached, and how large a streaming shuffle buffer is.
``VITZOO_MEMORY_BUDGET`` pins it, so a run (or a test) can force the streaming path.
"""

from __future__ import annotations

import os

from vitzoo.errors import VitzooError

#: Environment variable: bytes the data pipeline may hold (replaces the default quarter).
BUDGET_ENV = "VITZOO_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.25


def available_host_memory() -> int:
    """Bytes of host memory available now (MemAvailable), falling back to physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def memory_budget(fraction: float = DEFAULT_FRACTION) -> int:
    """How much host memory a data cache may take: a fraction of what is available.

    ``VITZOO_MEMORY_BUDGET`` (bytes) pins the default budget, so a run (or a test) can
    force the streaming path or allow a bigger cache; other fractions scale with it.
    """
    pinned = os.environ.get(BUDGET_ENV, "").strip()
    if pinned:
        try:
            total = int(float(pinned))
        except ValueError:
            raise VitzooError(f"{BUDGET_ENV}={pinned!r} is not a number of bytes",
                              f"e.g. {BUDGET_ENV}=8000000000, or unset it") from None
        return max(0, int(total * fraction / DEFAULT_FRACTION))
    return int(available_host_memory() * fraction)
