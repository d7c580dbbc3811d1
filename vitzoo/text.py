"""Small text helpers shared by error messages (pure Python, imported by any layer)."""

from __future__ import annotations

from collections.abc import Sequence


def and_more(items: Sequence[str], limit: int = 8) -> str:
    """``a, b, c and 5 more``: a list short enough for a one-line error message."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
