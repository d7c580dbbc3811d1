"""Where vitzoo keeps things, from the environment.

Order of precedence everywhere: command-line option > environment > default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The embedded catalog snapshot: ``index/`` of the checkout, or where an install put it.
_CHECKOUT_INDEX = Path(__file__).resolve().parent.parent / "index"
EMBEDDED_INDEX_DIR = _CHECKOUT_INDEX if _CHECKOUT_INDEX.is_dir() else Path(sys.prefix) / "share/vitzoo/index"

#: The AugReg bucket's own index: what ``vitzoo index build`` reads and ``doctor`` probes.
DEFAULT_INDEX_CSV = "gs://vit_models/augreg/index.csv"


def vitzoo_home() -> Path:
    """``VITZOO_HOME`` (default ``~/.cache/vitzoo``): downloads and the user's own catalog."""
    return Path(os.environ.get("VITZOO_HOME") or Path.home() / ".cache" / "vitzoo").expanduser()


def cache_dir() -> Path:
    """Downloaded checkpoints live here, one file per catalog name."""
    return vitzoo_home() / "checkpoints"


def user_index_dir() -> Path:
    """``vitzoo index build`` writes the user's catalog here; it then wins over the embedded one."""
    return vitzoo_home() / "index"


def gcs_endpoint() -> str | None:
    """An alternative GCS endpoint (an emulator), as Google's own clients honour it."""
    endpoint = os.environ.get("VITZOO_GCS_ENDPOINT") or os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint and "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return endpoint or None


def mirrors() -> list[str]:
    """``VITZOO_MIRRORS``: whitespace- or comma-separated fsspec URL prefixes tried before GCS."""
    raw = os.environ.get("VITZOO_MIRRORS", "")
    return [m.rstrip("/") for m in raw.replace(",", " ").split() if m]
