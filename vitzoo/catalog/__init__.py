"""The checkpoint catalog: schema, sources, build and queries (no jax/flax/tensorflow).

The notebook entry point is :func:`vitzoo.load_catalog`. Calling the package itself,
``vitzoo.catalog()``, was the entry point of vitzoo 0.1; it still works for now but
warns (DeprecationWarning) and will be removed. It needed this module's class to be
callable because importing any submodule binds the package to ``vitzoo.catalog``,
hiding a function of that name.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any


class _DeprecatedCallablePackage(types.ModuleType):
    """Only so that 0.1 code calling ``vitzoo.catalog()`` keeps working while it is warned."""

    def __call__(self, index: str | None = None) -> Any:
        warnings.warn("vitzoo.catalog() is deprecated and will be removed: use vitzoo.load_catalog() "
                      "(local runs: vitzoo.load_catalog(include_local=True))",
                      DeprecationWarning, stacklevel=2)
        from vitzoo.catalog.api import load_dataframe

        return load_dataframe(index, include_local=True)  # 0.1 mixed the user's runs in


sys.modules[__name__].__class__ = _DeprecatedCallablePackage
