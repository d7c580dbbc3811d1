"""``vitzoo show``: one checkpoint in full, every value with where it came from."""

from __future__ import annotations

import csv
from collections import defaultdict
from typing import Any

from vitzoo.arch_registry import BY_NAME
from vitzoo.catalog.api import find_checkpoint, load_table, nearest_with_copy
from vitzoo.catalog.available import INPUT_COLUMNS, UNKNOWN, availability
from vitzoo.catalog.caveats import CAVEATS, pretrained_caveats, split_caveats
from vitzoo.catalog.embedded import ARCHITECTURES_FILE, PUBLISHED_FILE
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import (
    COLUMN_NAMES,
    FAMILY_COLUMN_NAMES,
    MEASURED_COLUMNS,
    MEASURED_SETS,
    PRETRAINED_COLUMNS,
    value_sources_of,
)
from vitzoo.config import EMBEDDED_INDEX_DIR, hf_offline, mirrors

_ROW_SOURCE = {
    "grid": "release grid (reconstructed)",
    "index.csv": "index.csv",
    "legacy": "older-collection facts",
    "timm": "timm's pretrained configuration (index/sources/timm_families.csv)",
    "local": "your run",
}
_BOOKKEEPING = {"value_sources", "row_source", "note", "exists_source", "caveats",  # caveats: said below
                "measured_source"}  # the source of the measured columns
_MEASURED = tuple(c.name for c in MEASURED_COLUMNS)
#: Columns of Google's releases only (the AugReg grid, the bucket's files): another family's
#: file has no such value, so `show` leaves them out rather than calling them unknown.
_GOOGLE_ONLY = frozenset({"epochs", "lr", "aug", "wd", "do", "sd", "best_val", "final_val",
                          "final_test", "url", "upstream_size_bytes", "upstream_md5",
                          "upstream_crc32c"})


def _field_names(row: dict, kind: str) -> tuple[str, ...]:
    """Every column of a fine-tune; of a pre-trained file, its own columns, and timm's
    measurements when the row is that file itself (an older collection's, another family's),
    not a fine-tune. The family columns only for another family's file (null for Google's)."""
    if kind != "pretrained":
        names = COLUMN_NAMES
    else:
        own = ("params",) if row.get("family") else ()
        names = PRETRAINED_COLUMNS + own + (_MEASURED if not row.get("adapt_filename") else ())
    if row.get("family"):  # Google's grid and bucket columns do not apply: not "unknown"
        return tuple(n for n in names if n not in _GOOGLE_ONLY)
    return tuple(n for n in names if n not in FAMILY_COLUMN_NAMES)


def _fields(row: dict, kind: str) -> list[dict[str, Any]]:
    names = _field_names(row, kind)
    sourced = value_sources_of(row)
    fields = []
    for name in names:
        if name in _BOOKKEEPING:
            continue
        value = row.get(name)
        if isinstance(value, float) and value != value:
            value = None
        if value is None:
            source = "unknown"
        elif name in sourced:
            source = sourced[name]
        elif name in _MEASURED and row.get("measured_source"):
            source = row["measured_source"]
        elif name == "exists":
            source = row.get("exists_source") or "unknown"
        else:
            source = _ROW_SOURCE.get(row.get("row_source") or "", row.get("row_source") or "?")
        fields.append({"field": name, "value": value, "source": source})
    return fields


def measured(row: dict, kind: str) -> dict[str, Any] | None:
    """timm's measurements of this file, one entry per test set (None: not measured)."""
    if "imagenet_top1" not in _field_names(row, kind) or row.get("measured_source") is None:
        return None
    sets = [{"set": prefix, "what": what, "top1": row.get(f"{prefix}_top1"),
             "top5": row.get(f"{prefix}_top5")} for prefix, what in MEASURED_SETS.items()]
    return {"resolution": row.get("measured_resolution"), "crop_pct": row.get("measured_crop_pct"),
            "source": row["measured_source"], "sets": sets}


def _finetunes(table, url: str | None) -> list[dict[str, Any]]:
    """The fine-tunes of the pre-trained file at ``url``: matched by where the file lives, not
    by its stem, which older collections repeat (sam/ViT-B_32 is not imagenet21k/ViT-B_32)."""
    if not url:
        return []
    rows = [r for r in table.to_pylist() if r["url"] == url and r["adapt_filename"]]
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["adapt_ds"]].append(row)
    summary = []
    for adapt_ds, items in sorted(groups.items()):
        known = [r for r in items if r.get("adapt_final_val") is not None]
        best = max(known, key=lambda r: r["adapt_final_val"]) if known else None
        summary.append({
            "adapt_ds": adapt_ds,
            "count": len(items),
            "resolutions": sorted({r["adapt_resolution"] for r in items if r["adapt_resolution"]}),
            "learning_rates": sorted({r["adapt_lr"] for r in items if r["adapt_lr"] is not None}),
            "steps": sorted({r["adapt_steps"] for r in items if r["adapt_steps"] is not None}),
            "known_adapt_final_val": len(known),
            "best_by_adapt_final_val": best["adapt_filename"] if best else None,
            "best_adapt_final_val": best["adapt_final_val"] if best else None,
            "best_adapt_final_test": best["adapt_final_test"] if best else None,
        })
    return summary


def _downloads(info) -> list[dict[str, str]]:
    places = []
    if info.local_path:
        places.append({"source": "local file", "location": info.local_path})
        return places
    for prefix in mirrors():
        places.append({"source": "mirror (VITZOO_MIRRORS)",
                       "location": f"{prefix}/{info.collection}/{info.filename}.npz"})
    if info.url:
        places.append({"source": "Google Cloud Storage", "location": info.url,
                       "note": "anonymous reads are refused since Feb 2026 (HTTP 403); "
                               "`vitzoo download NAME --gcs-auth` uses your Google credentials"})
    if info.hf_repo:
        places.append({"source": "Hugging Face Hub (timm copy, converted on download)",
                       "location": f"hf://{info.hf_repo}"})
    return places


def _available(info) -> str:
    """The ``available`` value of this checkpoint's own file (cache, mirror, hf ...)."""
    row = Frame.from_rows([info.row], list(INPUT_COLUMNS))
    return availability(row, pretrained=info.kind == "pretrained")[0]


def _no_copy_caveat(info, index: str | None) -> list[str]:
    """When only the (refusing) bucket has the file, name the closest checkpoint that has a copy."""
    if info.local_path or info.collection == "local" or _available(info) != UNKNOWN:
        return []
    if info.hf_repo and hf_offline():  # a copy exists; this machine may not use it now
        return [f"its Hugging Face copy {info.hf_repo} is not used now: the Hub is off limits "
                "(HF_HUB_OFFLINE); unset it, or fetch the file where the Hub is reachable"]
    nearest = nearest_with_copy(info, index)
    if nearest is None:
        return ["no copy outside the bucket is known (no Hugging Face copy, not cached)"]
    return [f"no copy outside the bucket is known; the nearest checkpoint with one is {nearest} "
            f"(vitzoo show {nearest})"]


def _number(text: str) -> int | float | str:
    """A stored figure as a number (``0.8396``, ``391``); text that is not one stays text."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _published(filenames: set[str]) -> list[dict[str, Any]]:
    """The published facts about these files: the value as stored (accuracies are fractions),
    its unit, the resolution it was measured at (None where the source does not say) and how
    it was printed."""
    path = EMBEDDED_INDEX_DIR / "sources" / PUBLISHED_FILE
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {"metric": f["metric"], "value": _number(f["value"]), "unit": f["unit"] or None,
             "resolution": int(float(f["adapt_resolution"])) if f["adapt_resolution"] else None,
             "published_as": f["published_as"] or None, "for": f["filename"], "source": f["source"]}
            for f in csv.DictReader(handle) if f["filename"] in filenames
        ]


def architecture_of(name: str | None) -> dict[str, str]:
    """Published and computed facts about the architecture (index/sources/architectures.csv);
    for the other families' architectures, which that AugReg table does not list, the shapes
    from the architecture registry."""
    path = EMBEDDED_INDEX_DIR / "sources" / ARCHITECTURES_FILE
    if not name or not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        found = next((row for row in csv.DictReader(handle) if row["name"] == name), {})
    if found or name not in BY_NAME:
        return found
    arch = BY_NAME[name]
    return {"name": name, "family": arch.family, "hidden": str(arch.hidden), "mlp": str(arch.mlp),
            "heads": str(arch.heads), "layers": str(arch.layers), "patch": str(arch.patch),
            "source": "vitzoo.arch_registry (shapes read off timm's model definitions)"}


#: Classes of the released fine-tunes' heads, to count their parameters.
_CLASSES = {"imagenet2012": 1000, "oxford_iiit_pet": 37, "cifar100": 100, "resisc45": 45}


def computed_params(arch: dict[str, str], row: dict, kind: str) -> tuple[int, str] | None:
    """Parameter count of this file from the architecture table: the 1000-class count at the
    file's resolution with the head resized to its classes, (count, how it was computed)."""
    if not arch or not arch.get("params_k1000_224"):
        return None
    if kind == "pretrained":
        column = "params_k21843_224" if str(row.get("ds", "")).startswith("i21k") else "params_k1000_224"
        return (int(arch[column]), f"{ARCHITECTURES_FILE} ({column})") if arch.get(column) else None
    classes, res = _CLASSES.get(row.get("adapt_ds") or ""), row.get("adapt_resolution")
    column = f"params_k1000_{res}"
    if classes is None or not arch.get(column):
        return None
    head = (classes - 1000) * (int(arch["hidden"]) + 1)  # kernel hidden x classes + bias
    return (int(arch[column]) + head,
            f"computed: {ARCHITECTURES_FILE} {column} with a {classes}-class head")


def describe(name: str, index: str | None = None) -> dict[str, Any]:
    """Everything known about one checkpoint, as plain data (the CLI renders it)."""
    info = find_checkpoint(name, index)
    row = info.row
    table = load_table(index)
    caveats = [row["note"]] if row.get("note") else []
    codes = split_caveats(pretrained_caveats(row.get("caveats")) if info.kind == "pretrained"
                          else row.get("caveats"))
    caveats += [f"{code}: {CAVEATS[code]}" for code in codes if code in CAVEATS]
    if row.get("filename_verified") is False and "unconfirmed_name" not in codes:
        caveats.append("the filename spelling is reconstructed and unconfirmed; a real "
                       "index.csv or bucket listing would confirm it")
    if row.get("exists") is None:
        caveats.append("whether this file exists is unknown (no listing or index.csv was read)")
    caveats += _no_copy_caveat(info, index)
    upstream = row.get("filename") if info.collection != "local" else None
    architecture = architecture_of(info.name)
    fields = _fields(row, info.kind)
    counted = computed_params(architecture, row, info.kind)
    for item in fields:
        if item["field"] == "params" and item["value"] is None and counted:
            item["value"], item["source"] = counted
    return {
        "checkpoint": info.filename,
        "kind": info.kind,
        "name": info.name,
        "collection": info.collection,
        "fields": fields,
        "architecture": architecture,
        "finetunes": _finetunes(table, row.get("url") if upstream else None),
        "downloads": _downloads(info),
        "published": _published({info.filename, upstream or ""} - {""}),
        "measured": measured(row, info.kind),
        "caveats": caveats,
    }
