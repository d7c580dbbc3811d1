"""Which catalog to read, and reading it fast.

Precedence: ``--index`` option > ``VITZOO_INDEX`` > the user's own catalog under
``VITZOO_HOME/index`` (written by ``vitzoo index build``) > the embedded
snapshot in the repository's ``index/``. Reading prefers the derived column
file (plain Python, no pyarrow import); the parquet is the fallback and the truth.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vitzoo.catalog.frame import Frame, read_column_file
from vitzoo.config import EMBEDDED_INDEX_DIR, user_index_dir
from vitzoo.errors import VitzooError

CATALOG_FILE = "catalog.parquet"
COLUMNS_FILE = "catalog.cols"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class CatalogLocation:
    path: Path  # the parquet file
    origin: str  # option, VITZOO_INDEX, user, embedded

    @property
    def manifest_path(self) -> Path:
        return self.path.parent / MANIFEST_FILE

    @property
    def columns_path(self) -> Path:
        return self.path.parent / COLUMNS_FILE


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


def read_frame(location: CatalogLocation, columns: Sequence[str] | None = None) -> Frame:
    """The catalog's rows (only ``columns`` if given)."""
    frame = read_column_file(location.columns_path, location.path, columns)
    if frame is not None:
        return frame
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(location.path).read(columns=list(columns) if columns else None)
    except (OSError, pa.ArrowException) as exc:
        raise VitzooError(
            f"cannot read the catalog {location.path}: {str(exc).splitlines()[0]}",
            "rebuild it with `vitzoo index build`, or remove it to fall back to the embedded one",
        ) from exc
    return Frame(table.to_pydict())


def read_manifest(location: CatalogLocation) -> dict:
    try:
        return json.loads(location.manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(f"cannot read {location.manifest_path}: {exc}",
                          "rebuild the catalog with `vitzoo index build`") from exc
