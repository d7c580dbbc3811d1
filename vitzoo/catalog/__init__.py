"""The checkpoint catalog: schema, sources, build and queries (no jax/flax/tensorflow).

``vitzoo.catalog()`` is the notebook entry point, but importing any submodule
(``vitzoo.catalog.api``) makes Python bind this package to the attribute
``vitzoo.catalog``. So the package itself is callable and does what the
function promises: ``vitzoo.catalog()`` returns the catalog as a DataFrame.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, index: str | None = None) -> Any:
        from vitzoo.catalog.api import catalog

        return catalog(index)


sys.modules[__name__].__class__ = _CallablePackage
