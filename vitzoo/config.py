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


#: The spellings huggingface_hub reads as true (``huggingface_hub.constants._is_true``).
_HF_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def hf_offline() -> bool:
    """Whether the Hugging Face Hub is off limits, read exactly as ``huggingface_hub`` reads it.

    ``huggingface_hub.constants`` takes ``HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`` (the first
    non-empty one, so ``HF_HUB_OFFLINE=0`` overrides ``TRANSFORMERS_OFFLINE=1``) and calls it
    true when it is ``1``, ``ON``, ``YES`` or ``TRUE`` in any case, nothing else: ``0``, ``no``
    or a stray space mean online. vitzoo decides "can the Hub serve this" with this one
    function, so the catalog's ``available`` column, probe candidates and downloads never
    disagree with each other or with the hub client that does the download.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in _HF_TRUE


def hub_can_serve(repo_id: str | None) -> bool:
    """A Hugging Face copy serves a file now: the file has a known repo and the Hub is allowed."""
    return bool(repo_id) and not hf_offline()


#: The file of a timm Hub repo that holds the weights (what the Hugging Face source downloads).
HF_WEIGHTS_FILE = "model.safetensors"


def hf_hub_cache() -> Path:
    """Where ``huggingface_hub`` keeps its downloads: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``; read at call time (the hub client reads them once, at import),
    so the download and the catalog's ``available`` column look in the same place."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"
