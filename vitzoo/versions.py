"""Installed versions of the libraries that decide a result: one lookup for every report.

``vitzoo doctor`` shows them, and every ``run.json`` records them, because a run's
numbers depend on them. The range each dependency was tested in is read from vitzoo's own
installed metadata, i.e. from ``pyproject.toml``'s dependencies (one place), so the doctor's
warning and the installer's resolver agree.
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


def jax_versions() -> dict[str, str | None]:
    """jax and jaxlib: what an autotune winner was measured with (part of its cache key)."""
    return installed(["jax", "jaxlib"])


def tested_ranges(distribution: str = "vitzoo") -> dict[str, str]:
    """``{canonical name: specifier}`` of ``distribution``'s dependencies on this platform.

    Only the unconditional dependencies count (not extras such as ``test``); environment
    markers are evaluated here, so ``tensorflow-cpu`` is listed on Linux and ``tensorflow``
    elsewhere. Empty when ``distribution`` is not installed (code run from a bare checkout).
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return {}
    out: dict[str, str] = {}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            out[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return out


def outside_range(version: str, specifier: str) -> bool:
    """Whether ``version`` falls outside ``specifier`` (a pre-release counts as its release)."""
    from packaging.specifiers import SpecifierSet

    return not SpecifierSet(specifier).contains(version, prereleases=True)
