"""Which checkpoints a probe compares, from the public catalog API.

``recommended`` (the default): the recommended checkpoint of each architecture, the same
choice as ``vitzoo recommend``. ``downloadable``: every pre-trained checkpoint (after the
list filters) that a configured source can serve now: already in the cache, on a
``VITZOO_MIRRORS`` mirror, or with a known Hugging Face copy while the Hub is allowed
(:func:`vitzoo.config.hub_can_serve`, the rule the catalog's ``available`` column and downloads
use) or, offline, already in the local Hugging Face cache. Anything else is a name, path or
local run, resolved like any CHECKPOINT argument.
List filters (``--arch``, ``--ds``, ``--collection``, ``--name``, ``--where``) without
``--candidates`` select every pre-trained checkpoint that matches them, whatever its family
(AugReg beside DeiT, DINOv2, CLIP, SigLIP...): a candidate is only a name the resolver turns
into a file, and its family is the loader's business.

Every candidate carries the catalog's published numbers, shown beside the probe's own
and marked as published: they were measured elsewhere (upstream ImageNet-21k validation,
ImageNet fine-tune test accuracy, V100 img/s of that fine-tune).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vitzoo.catalog.schema import MEASURED_SETS
from vitzoo.errors import VitzooError

#: Catalog columns shown beside probe scores (all published, none measured here).
PUBLISHED = ("final_val", "adapt_final_test", "adapt_resolution", "infer_samples_per_sec",
             *(f"{prefix}_top1" for prefix in MEASURED_SETS))  # timm's measured side


@dataclass
class Candidate:
    """A checkpoint to probe: the argument to resolve and its published catalog numbers."""

    name: str
    architecture: str | None = None
    published: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None


def _published(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in PUBLISHED if row.get(k) is not None}
    if row.get("adapt_ds") and "adapt_final_test" in out:
        out["adapt_ds"] = row["adapt_ds"]
    return out


def _recommended(table: Any, arch: list[str]) -> list[Candidate]:
    from vitzoo.catalog import api

    rows = api.run_recommend(table, arch=arch).table.to_pylist()
    out = []
    for row in rows:
        if row.get("filename"):
            out.append(Candidate(row["filename"], row.get("name"), _published(row)))
        else:
            out.append(Candidate(str(row.get("name")), row.get("name"),
                                 skip_reason=f"no recommended checkpoint known ({row.get('basis')})"))
    return out


def servable(rows: list[dict[str, Any]]) -> list[bool]:
    """Which pre-trained rows a source can serve now: the catalog's one availability rule
    (:func:`vitzoo.catalog.available.availability`), remote mirrors included."""
    from vitzoo.catalog.available import INPUT_COLUMNS, availability, is_downloadable
    from vitzoo.catalog.frame import Frame

    frame = Frame.from_rows(rows, INPUT_COLUMNS)
    return [is_downloadable(v) for v in availability(frame, pretrained=True,
                                                     probe_remote_mirrors=True)]


def select(
    requested: Sequence[str] | None = None,
    *,
    arch: Sequence[str] = (),
    ds: Sequence[str] = (),
    where: str | None = None,
    limit: int | None = None,
    index: str | None = None,
    collection: Sequence[str] = (),
    name: Sequence[str] = (),
) -> tuple[list[Candidate], list[str]]:
    """The candidates (in order, duplicates removed) and notes on how they were chosen."""
    from vitzoo.catalog import api
    from vitzoo.catalog.query import Filters

    requested = [r for value in (requested or []) for r in value.split(",") if r.strip()]
    filtered = bool(ds or where or collection or name)
    if not requested:
        requested = ["filtered" if filtered else "recommended"]
    notes: list[str] = []
    out: list[Candidate] = []
    table = None
    for item in (r.strip() for r in requested):
        if item in ("recommended", "downloadable", "filtered"):
            table = table if table is not None else api.load_table(index)
        if item == "recommended":
            if filtered:
                notes.append("--ds/--collection/--name/--where apply to listed candidates, "
                             "not to 'recommended'")
            out += _recommended(table, list(arch))
        elif item in ("downloadable", "filtered"):
            filters = Filters(arch=list(arch), ds=list(ds), where=where,
                              collection=list(collection), name=list(name))
            rows = api.run_query(table, filters=filters, pretrained=True).to_pylist()
            rows = [r for r in rows if r.get("filename")]
            if item == "downloadable":
                total = len(rows)
                rows = [r for r, ok in zip(rows, servable(rows), strict=True) if ok]
                notes.append(f"{len(rows)} of {total} matching checkpoints can be served now "
                             "(cache, mirrors, Hugging Face)")
            out += [Candidate(r["filename"], r.get("name"), _published(r)) for r in rows]
        else:
            out.append(Candidate(item, published=_lookup(item)))
    seen: set[str] = set()
    unique = [c for c in out if not (c.name in seen or seen.add(c.name))]
    if limit is not None:
        if limit < 1:
            raise VitzooError(f"--limit must be positive, got {limit}", "e.g. --limit 10")
        if len(unique) > limit:
            notes.append(f"kept the first {limit} of {len(unique)} candidates (--limit)")
            unique = unique[:limit]
    if not unique:
        raise VitzooError("no candidates match", "loosen --arch/--ds/--where or name checkpoints "
                          "with --candidates")
    return unique, notes


def _lookup(name: str) -> dict[str, Any]:
    """Published numbers of a named checkpoint, when the catalog knows it."""
    try:
        from vitzoo.catalog.api import find_checkpoint

        return _published(dict(find_checkpoint(name).row or {}))
    except (VitzooError, OSError, ValueError):
        return {}
