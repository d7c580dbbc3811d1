"""vitzoo: search, choose and fine-tune Google's Vision Transformer checkpoint zoo.

Importing the package is cheap: the catalog API loads pyarrow/pandas on first use
and nothing here imports jax, flax or tensorflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["VitzooError", "__version__", "load_catalog", "query", "recommend"]

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def load_catalog(index: str | None = None, *, include_local: bool = False) -> pd.DataFrame:
    """The published catalog as a pandas DataFrame with proper dtypes (unknown values are NA).

    ``include_local=True`` appends your own registered fine-tunes (``collection == "local"``);
    they are left out by default so that the zoo is what you count, plot and rank.
    """
    from vitzoo.catalog.api import load_table, to_pandas

    return to_pandas(load_table(index, include_local=include_local))


def __getattr__(name: str) -> Any:
    """``vitzoo.catalog`` before anything imported it: the subpackage (calling it is deprecated)."""
    if name == "catalog":
        import importlib

        return importlib.import_module("vitzoo.catalog")
    raise AttributeError(f"module 'vitzoo' has no attribute {name!r}")


def query(**filters: Any) -> pd.DataFrame:
    """Rows matching the same filters as ``vitzoo list`` (see :func:`vitzoo.catalog.api.query`)."""
    from vitzoo.catalog.api import query as _query

    return _query(**filters)


def recommend(**options: Any) -> pd.DataFrame:
    """The same choices as ``vitzoo recommend`` (see :func:`vitzoo.catalog.api.recommend`)."""
    from vitzoo.catalog.api import recommend as _recommend

    return _recommend(**options)
