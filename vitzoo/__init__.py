"""vitzoo: search, choose and fine-tune Google's Vision Transformer checkpoint zoo.

Importing the package is cheap: the catalog API loads pyarrow/pandas on first use
and nothing here imports jax, flax or tensorflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["VitzooError", "__version__", "catalog", "query", "recommend"]

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def catalog(index: str | None = None) -> pd.DataFrame:
    """The whole catalog as a pandas DataFrame with proper dtypes."""
    from vitzoo.catalog.api import catalog as _catalog

    return _catalog(index)


def query(**filters: Any) -> pd.DataFrame:
    """Rows matching the same filters as ``vitzoo list`` (see :func:`vitzoo.catalog.api.query`)."""
    from vitzoo.catalog.api import query as _query

    return _query(**filters)


def recommend(**options: Any) -> pd.DataFrame:
    """The same choices as ``vitzoo recommend`` (see :func:`vitzoo.catalog.api.recommend`)."""
    from vitzoo.catalog.api import recommend as _recommend

    return _recommend(**options)
