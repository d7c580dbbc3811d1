"""The Hugging Face Hub copies of the checkpoints (timm's safetensors), as a download source.

Why: since Feb 2026 the GCS bucket refuses anonymous reads, and timm publishes most
AugReg checkpoints on the Hub (``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``).
Those files are timm state dicts, so they are converted to the release ``.npz`` layout
(``vitzoo.weights.timm``) before they enter the cache.

Settings are read from the environment at call time, not when ``huggingface_hub``
was imported: ``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_HUB_OFFLINE``
and ``HF_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitzoo.config import HF_WEIGHTS_FILE, hf_hub_cache
from vitzoo.errors import VitzooError

HF_HINT = "check the repo name, HF_ENDPOINT / HF_HUB_OFFLINE, or use another source"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_cache_dir() -> Path:
    """:func:`vitzoo.config.hf_hub_cache` (the catalog looks there too)."""
    return hf_hub_cache()


def offline() -> bool:
    """:func:`vitzoo.config.hf_offline`: the one offline rule, as ``huggingface_hub`` reads it."""
    from vitzoo.config import hf_offline

    return hf_offline()


def _translate(exc: Exception, repo_id: str, filename: str) -> VitzooError:
    from huggingface_hub import errors

    where = f"hf://{repo_id}/{filename}"
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        if offline():
            return VitzooError(f"{where} is not in the local Hugging Face cache and "
                               "HF_HUB_OFFLINE is set",
                               "unset HF_HUB_OFFLINE to download it, or use another source")
        return VitzooError(f"cannot reach {endpoint()} for {where}",
                           "check the network or HF_ENDPOINT, or use another source")
    if isinstance(exc, errors.GatedRepoError):
        return VitzooError(f"access denied by {where} (gated repository)",
                           "accept its terms on the Hub and set HF_TOKEN")
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
                        errors.EntryNotFoundError)):
        return VitzooError(f"not found: {where}", HF_HINT)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return VitzooError(f"access denied by {where} (HTTP {status})",
                           "set HF_TOKEN, or use another source")
    if status == 404:
        return VitzooError(f"not found: {where}", HF_HINT)
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if status is None:
        return VitzooError(f"cannot reach {endpoint()} for {where}: {text}", HF_HINT)
    return VitzooError(f"{where} answered HTTP {status}: {text}", HF_HINT)


def download(repo_id: str, filename: str = HF_WEIGHTS_FILE, *, revision: str | None = None,
             progress: bool = True) -> Path:
    """Fetch one file of a Hub repo into the Hugging Face cache (verified by the hub client)."""
    from vitzoo.names import validate_path_component

    for part in repo_id.split("/"):
        validate_path_component(part, "Hugging Face repo id")
    if repo_id.count("/") != 1:
        raise VitzooError(f"invalid Hugging Face repo id {repo_id!r}", "expected owner/name")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not offline():
        from vitzoo import storage

        storage.preflight(endpoint())  # hf retries an unreachable host for ~25 s otherwise
    if not progress:
        disable_progress_bars()
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=hub_cache_dir(),
            endpoint=endpoint(), local_files_only=offline(), etag_timeout=10,
        )
    except VitzooError:
        raise
    except Exception as exc:
        raise _translate(exc, repo_id, filename) from exc
    finally:
        if not progress:
            enable_progress_bars()
    return Path(path)


def release_arrays(repo_id: str, *, arch: str | None = None,
                   numerics: Mapping[str, Any] | None = None, progress: bool = True) -> dict:
    """A timm checkpoint from the Hub as release-layout arrays ``{name: ndarray}``.

    ``arch`` (a table name) gives the head count and checks the shapes; ``numerics`` (activation,
    LayerNorm eps) wins over what the repo's ``config.json`` implies: the catalog's word for a
    name whose weights live in a twin's repo (the quick-GELU CLIP names).
    """
    try:
        from vitzoo.weights.timm import load_timm_safetensors
    except ImportError as exc:
        raise VitzooError(  # the hint names commands, not options: any command can get here
            "the Hugging Face source needs vitzoo.weights.timm, which cannot be imported "
            f"({exc})", "reinstall vitzoo (pip install --force-reinstall vitzoo), or use a "
            "mirror (VITZOO_MIRRORS) or `vitzoo download NAME --gcs-auth` first") from None
    path = download(repo_id, progress=progress)
    timm_config = _timm_config(repo_id)
    return load_timm_safetensors(path, arch, timm_config=timm_config, numerics=numerics)


def _timm_config(repo_id: str) -> dict | None:
    """The repo's ``config.json`` (the numerics of DeiT, DINO, CLIP...), or None without one.

    Without it the weights are read as a Google release (vit_jax numerics), as before; the
    loader refuses a non-AugReg structure that needs it.
    """
    from vitzoo.weights.timm_config import CONFIG_FILE, read_timm_config

    try:
        return read_timm_config(download(repo_id, CONFIG_FILE, progress=False))
    except VitzooError as exc:
        if exc.message.startswith(("not found", "hf://", "cannot reach")):
            return None  # absent, or not cached while offline, or unreachable after the weights
        raise
