"""Which catalog to read, where its files lie, and reading it fast.

Precedence: ``--index`` option > ``VITZOO_INDEX`` > the user's own catalog under
``VITZOO_HOME/index`` (written by ``vitzoo index build``) > the embedded
snapshot in the repository's ``index/``. Reading prefers the derived column
file (plain Python, no pyarrow import); the parquet is the fallback and the truth.

Layout of a catalog folder (the one home of these names; ``build`` writes it)::

    CURRENT                    one line: the name of the version folder in use
    catalog-<sha12>/           one complete build, never modified once named
        catalog.parquet        the rows (canonical)
        catalog.cols           the same rows, column by column, for fast reads
        manifest.json          provenance: sources, counts, checksums

Why a pointer: a build's three files can only be renamed one at a time, and a
reader that caught a half-renamed set would mix old rows with a new manifest.
A version folder is complete before anything points at it, and replacing the
one-line ``CURRENT`` is a single atomic rename, so a reader sees the old set or
the new set whatever moment a build stops. Folders written by vitzoo 0.1 (the
three files directly in the folder, no ``CURRENT``) are still read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vitzoo.catalog.frame import Frame, read_column_file
from vitzoo.config import EMBEDDED_INDEX_DIR, user_index_dir
from vitzoo.errors import VitzooError

CATALOG_FILE = "catalog.parquet"
COLUMNS_FILE = "catalog.cols"
MANIFEST_FILE = "manifest.json"
#: The three files of one build, as written into a version folder.
CATALOG_FILES = (CATALOG_FILE, COLUMNS_FILE, MANIFEST_FILE)
POINTER_FILE = "CURRENT"
VERSION_PREFIX = "catalog-"
#: Folders a build writes into before the version is named (left behind only by a killed build).
STAGING_PREFIX = ".staging-"
_VERSION_NAME = re.compile(rf"{VERSION_PREFIX}[0-9a-f]{{12}}(-[0-9]+)?")


@dataclass(frozen=True)
class CatalogLocation:
    path: Path  # the parquet file
    origin: str  # option, VITZOO_INDEX, user, embedded

    @property
    def folder(self) -> Path:
        """The folder holding this build's parquet, column file and manifest."""
        return self.path.parent

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def columns_path(self) -> Path:
        return self.folder / COLUMNS_FILE


def is_version_name(name: str) -> bool:
    return _VERSION_NAME.fullmatch(name) is not None


def current_version(root: Path) -> Path | None:
    """The folder whose files make up the catalog in ``root`` now, or None when there is none.

    ``CURRENT`` wins; without it a flat 0.1 layout (``root/catalog.parquet``) is the catalog.
    """
    try:
        name = (root / POINTER_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return root if (root / CATALOG_FILE).is_file() else None
    except OSError as exc:
        raise VitzooError(f"cannot read {root / POINTER_FILE}: {exc}",
                          f"rebuild with `vitzoo index build --out {root}`") from exc
    version = root / name
    if not is_version_name(name) or not (version / CATALOG_FILE).is_file():
        raise VitzooError(
            f"{root / POINTER_FILE} names {name!r}, which is not a complete catalog folder there",
            f"rebuild with `vitzoo index build --out {root}` (or remove {root} to use another catalog)",
        )
    return version


def _as_parquet(path: Path) -> Path:
    if not path.is_dir():
        return path
    version = current_version(path)
    return (version or path) / CATALOG_FILE


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
    for root, origin in ((user_index_dir(), "user"), (EMBEDDED_INDEX_DIR, "embedded")):
        version = current_version(root) if root.is_dir() else None
        if version is not None:
            return CatalogLocation(version / CATALOG_FILE, origin)
    raise VitzooError(
        f"the embedded catalog in {EMBEDDED_INDEX_DIR} is missing",
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
        _raise_if_replaced(location.folder)
        raise VitzooError(
            f"cannot read the catalog {location.path}: {str(exc).splitlines()[0]}",
            "rebuild it with `vitzoo index build`, or remove it to fall back to the embedded one",
        ) from exc
    return Frame(table.to_pydict())


def _raise_if_replaced(folder: Path) -> None:
    """A version folder that vanished was cleared by a build that switched to a newer one."""
    if is_version_name(folder.name) and not folder.exists():
        raise VitzooError(f"the catalog {folder} was replaced by a `vitzoo index build` while it was read",
                          "run the command again to read the new one")


def read_manifest(where: CatalogLocation | Path) -> dict:
    """The manifest of a located catalog or of a build folder; ``{}`` when there is none."""
    path = where.manifest_path if isinstance(where, CatalogLocation) else Path(where) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _raise_if_replaced(path.parent)
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(f"cannot read {path}: {exc}",
                          "rebuild the catalog with `vitzoo index build`") from exc
