"""Small text helpers shared by error messages (pure Python, imported by any layer)."""

from __future__ import annotations

from collections.abc import Sequence


def and_more(items: Sequence[str], limit: int = 8) -> str:
    """``a, b, c and 5 more``: a list short enough for a one-line error message."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


#: The one unit rule: data (JSON, CSV, run.json, the catalog) holds fractions in [0, 1]; whatever a
#: person reads (tables, ``show``, ``predict``, notes, plot axes) says percentages, through
#: :func:`percent` and :func:`percent_axis` only, so no command prints 0.84 next to another's 84%.
UNKNOWN = "?"


def percent(fraction: float | None, digits: int | None = 1, unknown: str = UNKNOWN) -> str:
    """``0.8396`` -> ``84.0%`` (``digits`` decimals); ``digits=None`` keeps the stored
    fraction's own digits (``83.96%``, no float noise); None -> ``unknown``."""
    if fraction is None or fraction != fraction:  # None or NaN
        return unknown
    if digits is None:
        from decimal import Decimal

        scaled = (Decimal(repr(float(fraction))) * 100).normalize()
        return f"{format(scaled, 'f')}%"
    return f"{100 * float(fraction):.{digits}f}%"


def percent_axis(axis: object, digits: int = 1) -> None:
    """Draw a matplotlib axis holding fractions with percentage ticks (``50%``, not ``0.50``)."""
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=digits))  # type: ignore[attr-defined]
