"""Which source can serve a checkpoint file now, decided without touching the network.

Catalog commands must stay fast and offline, so ``available`` is derived from
what is on this machine and in the configuration, never from a probe:

* ``local``  - a registered run whose file exists;
* ``cache``  - a downloaded copy in ``VITZOO_HOME/checkpoints``;
* ``mirror`` - a file in a local-folder mirror of ``VITZOO_MIRRORS`` (remote mirrors
  are probed only when asked: ``probe_remote_mirrors``);
* ``hf``     - timm's copy on the Hugging Face Hub, unless offline by
  :func:`vitzoo.config.hf_offline` (the one rule, as ``huggingface_hub`` reads it);
* ``hf-cache`` - offline, but timm's copy is already in the local Hugging Face cache
  (:func:`vitzoo.config.hf_hub_cache`), which the hub client serves without the network;
* ``unknown`` - none of these: only the bucket may have it, and anonymous reads of
  the bucket are refused today (``vitzoo doctor`` checks it).
"""

from __future__ import annotations

from pathlib import Path

from vitzoo import config
from vitzoo.catalog.frame import Frame

UNKNOWN = "unknown"
HF_CACHED = "hf-cache"
#: Columns :func:`availability` reads, for each view of the catalog.
INPUT_COLUMNS = ("collection", "url", "adapt_url", "filename", "adapt_filename", "hf_repo",
                 "upstream_hf_repo")


def _object_path(url: str | None) -> str | None:
    """``gs://vit_models/augreg/X.npz`` -> ``augreg/X.npz`` (the cache and mirror layout)."""
    if not url or not url.startswith("gs://"):
        return None
    parts = url.split("://", 1)[1].split("/", 1)
    return parts[1] if len(parts) == 2 else None


def _cache_key(url: str | None, collection: str | None, stem: str | None) -> str | None:
    """Where the resolver caches a row's file: the bucket's object path, or for a file with no
    URL (another family's, converted from the Hub) ``<collection>/<stem>.npz``."""
    if url is not None:
        return _object_path(url)
    return f"{collection}/{stem}.npz" if collection and stem else None


def _files_under(root: Path) -> set[str]:
    if not root.is_dir():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*.npz") if p.is_file()}


def _local_mirrors() -> list[set[str]]:
    folders = []
    for prefix in config.mirrors():
        path = prefix.removeprefix("file://")
        if "://" not in path:
            folders.append(_files_under(Path(path).expanduser()))
    return folders


def _remote_mirror_has(key: str) -> bool:
    """A remote ``VITZOO_MIRRORS`` prefix holds ``key`` (one metadata request per mirror)."""
    from vitzoo import storage

    for prefix in config.mirrors():
        if "://" not in prefix.removeprefix("file://"):
            continue  # local folders are listed, not probed
        try:
            storage.stat(f"{prefix}/{key}")
            return True
        except Exception:  # not there, or unreachable: not servable from this mirror
            continue
    return False


def availability(frame: Frame, *, pretrained: bool = False,
                 probe_remote_mirrors: bool = False) -> list[str]:
    """One value per row: the sources (comma-separated) that can serve the row's file now.

    The row's file is its fine-tune, or with ``pretrained`` its pre-trained checkpoint. This
    is the one answer to "can a source serve it" (probe candidates ask here too);
    ``probe_remote_mirrors`` also asks remote mirrors, which catalog listings never do
    (they stay offline and fast) but ``probe --candidates downloadable`` does.
    """
    cached = _files_under(config.cache_dir())
    mirrored = _local_mirrors()
    if pretrained:
        urls, stems = frame.column("url"), _column(frame, "filename")
    else:  # the fine-tune's file; a row without a fine-tune stands for its pre-trained file
        urls = [adapt_url if adapt_url else (url if not adapt_name else None)
                for url, adapt_url, adapt_name in zip(frame.column("url"), frame.column("adapt_url"),
                                                      frame.column("adapt_filename"), strict=True)]
        stems = [adapt_name or name for name, adapt_name in zip(
            _column(frame, "filename"), frame.column("adapt_filename"), strict=True)]
    hubs = _hub_copies(frame, pretrained)
    hub_cached = _HubCache().has if config.hf_offline() else None
    collections = frame.column("collection")
    out = []
    for url, stem, hub, collection in zip(urls, stems, hubs, collections, strict=True):
        sources = []
        if collection == "local":
            sources.append("local" if url and Path(url).is_file() else UNKNOWN)
        else:
            key = _cache_key(url, collection, stem)
            if key and key in cached:
                sources.append("cache")
            if key and (any(key in files for files in mirrored)
                        or (probe_remote_mirrors and _remote_mirror_has(key))):
                sources.append("mirror")
        if config.hub_can_serve(hub):
            sources.append("hf")
        elif hub and hub_cached(hub):
            sources.append(HF_CACHED)
        out.append(",".join(dict.fromkeys(sources)) or UNKNOWN)
    return out


class _HubCache:
    """Which Hub repos have their weights in the local Hugging Face cache, asked once per repo.

    The cache's top folder is listed once, so a repo never downloaded costs a set lookup, and
    ``huggingface_hub`` (its own ``try_to_load_from_cache``: the file ``refs/main`` points at,
    as an offline download resolves it) is imported only when some repo folder is there.
    """

    def __init__(self) -> None:
        self.root = config.hf_hub_cache()
        self.folders = ({p.name for p in self.root.iterdir() if p.is_dir()}
                        if self.root.is_dir() else set())
        self.known: dict[str, bool] = {}

    def has(self, repo_id: str) -> bool:
        if repo_id not in self.known:
            self.known[repo_id] = (f"models--{repo_id.replace('/', '--')}" in self.folders
                                   and self._cached(repo_id))
        return self.known[repo_id]

    def _cached(self, repo_id: str) -> bool:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(repo_id, config.HF_WEIGHTS_FILE,
                                           cache_dir=self.root)
        except ValueError:  # not a repo id the hub client accepts: it cannot serve it either
            return False
        return isinstance(found, str)


def _column(frame: Frame, name: str) -> list:
    """A column, or Nones where the frame leaves it out (callers pass the columns they have)."""
    return frame.column(name) if name in frame.column_names else [None] * frame.num_rows


def _hub_copies(frame: Frame, pretrained: bool) -> list[str | None]:
    """Each row's file's Hub repo: the pre-trained file's, or the fine-tune's; a row without a
    fine-tune stands for its pre-trained file (an older collection's, another family's)."""
    if pretrained:
        return _column(frame, "upstream_hf_repo")
    return [hub or (upstream if not adapt_name else None) for hub, upstream, adapt_name in zip(
        _column(frame, "hf_repo"), _column(frame, "upstream_hf_repo"),
        _column(frame, "adapt_filename"), strict=True)]


def is_downloadable(value: str | None) -> bool:
    return bool(value) and value != UNKNOWN
