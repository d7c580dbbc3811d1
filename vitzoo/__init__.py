"""vitzoo: search, choose and fine-tune Google's Vision Transformer checkpoint zoo.

Importing the package is cheap: the catalog API loads pyarrow/pandas on first use
and nothing here imports jax, flax or tensorflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitzoo.versions import VITZOO_VERSION as __version__

__all__ = [
    "VitzooError", "__version__", "architectures", "load_catalog", "provenance", "published_facts",
    "query", "recommend",
]

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def load_catalog(index: str | None = None, *, include_local: bool = False) -> pd.DataFrame:
    """The published catalog as a pandas DataFrame with proper dtypes (unknown values are NA).

    ``include_local=True`` appends your own registered fine-tunes (``collection == "local"``);
    they are left out by default so that the zoo is what you count, plot and rank.
    """
    from vitzoo.catalog.api import load_dataframe

    return load_dataframe(index, include_local=include_local)


def provenance(df: pd.DataFrame) -> pd.DataFrame:
    """Where each published value of ``df`` came from: one row per (checkpoint, column, source).

    Values not listed come from the row itself (``row_source``: the grid, a real index.csv,
    an older collection's facts, or your run); unknown values are NA in ``df``.
    """
    import pandas as pd

    from vitzoo.catalog.schema import value_sources_of

    records = [(checkpoint, column, source)
               for checkpoint, text in zip(df["checkpoint"], df["value_sources"], strict=True)
               if isinstance(text, str)
               for column, source in value_sources_of({"value_sources": text}).items()]
    return pd.DataFrame.from_records(records, columns=["checkpoint", "column", "source"])


def published_facts() -> pd.DataFrame:
    """Every published figure the embedded catalog was built from (``index/sources``).

    Accuracies are fractions (``published_as`` keeps the text as printed, e.g. ``83.96%``);
    ``unit`` says what the other values are. Many facts are not catalog columns (paper
    Figure 4 and Table 5, README checkpoint sizes), so they are offered here as they stand.
    """
    import pandas as pd

    from vitzoo.catalog.embedded import PUBLISHED_FILE
    from vitzoo.config import EMBEDDED_INDEX_DIR

    return pd.read_csv(EMBEDDED_INDEX_DIR / "sources" / PUBLISHED_FILE,
                       dtype={"aug": "string", "filename": "string", "adapt_ds": "string"})


def architectures() -> pd.DataFrame:
    """The AugReg architectures, smallest first (by parameter count of the ImageNet fine-tune)."""
    import pandas as pd

    from vitzoo.catalog.embedded import ARCHITECTURES_FILE
    from vitzoo.config import EMBEDDED_INDEX_DIR

    table = pd.read_csv(EMBEDDED_INDEX_DIR / "sources" / ARCHITECTURES_FILE)
    return table.sort_values("params_k1000_224", kind="stable").reset_index(drop=True)


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
