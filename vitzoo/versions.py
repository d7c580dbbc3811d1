"""Installed versions of the libraries that decide a result: one lookup for every report.

``vitzoo doctor`` shows them, and every ``run.json`` records them, because a run's
numbers depend on them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: vitzoo's own version; pyproject.toml reads it from here (one place).
VITZOO_VERSION = "0.1.0"


def installed(packages: Iterable[str]) -> dict[str, str | None]:
    """``{distribution name: version}`` in the given order; None for one not installed."""
    from importlib import metadata  # not at import: every command imports this module for the version

    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
