"""Which catalog to read, and reading it fast.

Precedence: ``--index`` option > ``VITZOO_INDEX`` > the user's own catalog under
``VITZOO_HOME/index`` (written by ``vitzoo index build``) > the embedded
snapshot in the repository's ``index/``. Reading uses pyarrow only: pandas
alone costs a second to import, which the CLI cannot afford.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vitzoo.config import EMBEDDED_INDEX_DIR, user_index_dir
from vitzoo.errors import VitzooError

CATALOG_FILE = "catalog.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class CatalogLocation:
    path: Path  # the parquet file
    origin: str  # option, VITZOO_INDEX, user, embedded

    @property
    def manifest_path(self) -> Path:
        return self.path.parent / MANIFEST_FILE


def _as_parquet(path: Path) -> Path:
    return path / CATALOG_FILE if path.is_dir() else path


def locate(index: str | os.PathLike | None = None) -> CatalogLocation:
    """Find the catalog to use; an explicitly named one must exist."""
    for value, origin in ((index, "option"), (os.environ.get("VITZOO_INDEX"), "VITZOO_INDEX")):
        if value:
            path = _as_parquet(Path(value).expanduser())
            if not path.is_file():
                flag = "--index" if origin == "option" else "VITZOO_INDEX"
                raise VitzooError(
                    f"no catalog at {path} (from {flag})",
                    "point it at a catalog.parquet or the folder holding one, "
                    "e.g. one written by `vitzoo index build --out DIR`",
                )
            return CatalogLocation(path, origin)
    user = user_index_dir() / CATALOG_FILE
    if user.is_file():
        return CatalogLocation(user, "user")
    embedded = EMBEDDED_INDEX_DIR / CATALOG_FILE
    if embedded.is_file():
        return CatalogLocation(embedded, "embedded")
    raise VitzooError(
        f"the embedded catalog {embedded} is missing",
        "reinstall vitzoo from a full checkout, or run `vitzoo index build --source embedded`",
    )


def read_table(location: CatalogLocation, columns: list[str] | None = None) -> pa.Table:
    try:
        # ParquetFile avoids pyarrow.dataset, which alone costs more than the whole query.
        return pq.ParquetFile(location.path).read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise VitzooError(
            f"cannot read the catalog {location.path}: {str(exc).splitlines()[0]}",
            "rebuild it with `vitzoo index build`, or remove it to fall back to the embedded one",
        ) from exc


def read_manifest(location: CatalogLocation) -> dict:
    try:
        return json.loads(location.manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(f"cannot read {location.manifest_path}: {exc}",
                          "rebuild the catalog with `vitzoo index build`") from exc



class _RefusePandas:
    """A meta-path finder that makes ``import pandas`` fail."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("vitzoo's catalog commands run without pandas")


@contextmanager
def without_pandas() -> Iterator[None]:
    """Run catalog commands without letting pyarrow import pandas.

    pyarrow's C++ layer imports pandas (if installed) the first time it converts
    any Python value, just to recognise pandas' null markers: a second of a cold
    CLI call, spent on objects the CLI never has. Inside this block such imports
    fail and pyarrow carries on without pandas. Nothing here needs pandas; the
    block is left as it was found, so the Python API in the same process is unaffected.
    """
    if "pandas" in sys.modules:
        yield
        return
    blocker = _RefusePandas()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
