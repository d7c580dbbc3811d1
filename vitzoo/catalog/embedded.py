"""Source (a): the catalog reconstructed from published facts alone.

The bucket's own ``index.csv`` cannot be read anonymously any more, so the
embedded catalog is rebuilt from what was published: the release grid (every
filename follows from it), metrics printed in the paper, the reference README
and notebook, timm's copies, and the older collections. A value that no source
gives stays null; every value that is filled says where it came from.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from vitzoo.errors import VitzooError
from vitzoo.names import PRETRAIN_DS, AdaptedName, PretrainedName, canonical_arch

GRID_FILE = "augreg_grid.json"
PUBLISHED_FILE = "published_metrics.csv"
TIMM_FILE = "timm_checkpoints.csv"
LEGACY_FILE = "legacy_collections.csv"
ARCHITECTURES_FILE = "architectures.csv"
SOURCE_FILES = (GRID_FILE, PUBLISHED_FILE, TIMM_FILE, LEGACY_FILE, ARCHITECTURES_FILE)

_I21K_30_NOTE = "i21k_30 filename spelling is a reconstruction (i21k-30ep) not seen in any source"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_grid(sources: Path) -> dict:
    try:
        return json.loads((sources / GRID_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VitzooError(
            f"cannot read the release grid {sources / GRID_FILE}: {exc}",
            "restore index/sources from git",
        ) from exc


def _adaptations(grid: dict, resolutions: Iterable[int]) -> Iterator[tuple[str, int, float, int]]:
    for adapt_ds, sweep in grid["adaptation"]["datasets"].items():
        for steps in sweep["steps"]:
            for lr in sweep["lrs"]:
                for res in resolutions:
                    yield adapt_ds, steps, lr, res


def _pretrained_configs(grid: dict) -> Iterator[tuple[PretrainedName, tuple[int, ...], str | None]]:
    """Every pre-trained config of the grid, its fine-tune resolutions and a caveat."""
    pre = grid["pretraining"]

    def configs(arch: str, datasets: list[str]) -> Iterator[PretrainedName]:
        for ds in datasets:
            token, epochs = PRETRAIN_DS[ds]
            for aug in pre["augmentations"]:
                for wd in pre["weight_decays"]:
                    for reg in pre["dropout_stochastic_depth"]:
                        yield PretrainedName(arch, ds, epochs, pre["lr"], aug, wd, reg, reg, token)

    all_res = tuple(grid["adaptation"]["resolutions"])
    for arch in pre["archs"]:
        for name in configs(arch, pre["datasets"]):
            note = _I21K_30_NOTE if name.ds == "i21k_30" else None
            yield name, all_res, note
    for arch, partial in grid.get("partial_archs", {}).items():
        known = {(c["aug"], c["wd"], c["do"], c["sd"]) for c in partial["known_configs"]}
        for name in configs(arch, partial["datasets"]):
            is_known = (name.aug, name.wd, name.do, name.sd) in known
            note = None if is_known else (
                f"{arch}: only {partial['released_count']} configurations were released; "
                "this one is a grid candidate that may not exist"
            )
            yield name, tuple(partial["resolutions"]), note


def grid_rows(grid: dict) -> list[dict]:
    """One row per (pre-trained config x adaptation), like a line of index.csv."""
    prefix = grid["bucket_prefix"].rstrip("/")
    rows: list[dict] = []
    for pre, resolutions, note in _pretrained_configs(grid):
        filename = pre.format()
        verified = pre.ds != "i21k_30"
        base = {
            "name": pre.arch, "ds": pre.ds, "epochs": pre.epochs, "lr": pre.lr, "aug": pre.aug,
            "wd": pre.wd, "do": pre.do, "sd": pre.sd, "filename": filename,
            "url": f"{prefix}/{filename}.npz", "collection": "augreg", "row_source": "grid",
            "filename_verified": verified, "note": note,
        }
        for adapt_ds, steps, lr, res in _adaptations(grid, resolutions):
            adapt = AdaptedName(pre, adapt_ds, steps, lr, res).format()
            rows.append({
                **base, "adapt_ds": adapt_ds, "adapt_lr": lr, "adapt_steps": steps,
                "adapt_resolution": res, "adapt_filename": adapt, "checkpoint": adapt,
                "adapt_url": f"{prefix}/{adapt}.npz",
            })
    return rows


# --- published values ----------------------------------------------------------

#: Published metrics that are exactly an index.csv column, by source priority
#: (the notebook prints raw index values; the README rounds them).
_COLUMN_METRICS = {"adapt_final_val", "adapt_final_test", "final_val", "infer_samples_per_sec"}
_SOURCE_PRIORITY = ("repo vit_jax_augreg.ipynb", "repo README.md", "paper")


def _priority(source: str) -> int:
    for rank, prefix in enumerate(_SOURCE_PRIORITY):
        if source.startswith(prefix):
            return rank
    return len(_SOURCE_PRIORITY)


def _add_source(row: dict, field: str, source: str) -> None:
    entry = f"{field}={source}"
    row["value_sources"] = f"{row['value_sources']}; {entry}" if row.get("value_sources") else entry


def _mark_exists(row: dict, source: str) -> None:
    row["exists"] = True
    row["exists_source"] = source


def apply_published(rows: list[dict], sources: Path) -> dict[str, int]:
    """Fill index columns from published facts; returns how many values each kind set."""
    by_adapt = {r["adapt_filename"]: r for r in rows if r.get("adapt_filename")}
    by_upstream: dict[str, list[dict]] = defaultdict(list)
    by_arch_res: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in rows:
        by_upstream[row["filename"]].append(row)
        if row.get("adapt_resolution"):
            by_arch_res[(row["name"], row["adapt_resolution"])].append(row)

    counts: dict[str, int] = defaultdict(int)
    facts = sorted(_read_csv(sources / PUBLISHED_FILE), key=lambda f: _priority(f["source"]))
    for fact in facts:
        metric, filename, source = fact["metric"], fact["filename"], fact["source"]
        if metric not in _COLUMN_METRICS:
            continue
        value = float(fact["value"])
        if filename:
            targets = [by_adapt[filename]] if "--" in filename and filename in by_adapt else (
                by_upstream.get(filename, []) if "--" not in filename else []
            )
            for row in targets:
                if "--" in filename:
                    _mark_exists(row, source)
                if row.get(metric) is None:
                    row[metric] = value
                    _add_source(row, metric, source)
                    counts[metric] += 1
        elif metric == "infer_samples_per_sec" and fact["adapt_resolution"]:
            # Paper Table 3 gives throughput per architecture and resolution.
            arch = canonical_arch(fact["name"])
            for row in by_arch_res.get((arch, int(float(fact["adapt_resolution"]))), []):
                if row.get(metric) is None:
                    row[metric] = value
                    _add_source(row, metric, f"{source} [per architecture and resolution]")
                    counts[metric] += 1
    return dict(counts)


#: Sources whose listed checkpoints are the published recommendations.
RECOMMENDATION_SOURCES = (
    "repo README.md (recommended AugReg checkpoints table)",
    "repo vit_jax_augreg.ipynb stored output (cell: best i21k upstream per model",
)


def apply_recommendations(rows: list[dict], sources: Path) -> int:
    """Mark the published recommended checkpoints (README table, notebook for B/8)."""
    by_upstream: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_upstream[row.get("filename")].append(row)
    picks = {f["filename"] for f in _read_csv(sources / PUBLISHED_FILE)
             if f["filename"] and f["source"].startswith(RECOMMENDATION_SOURCES)}
    marked = 0
    for pick in picks:
        upstream = pick.split("--")[0]
        for row in by_upstream.get(upstream, []):
            if row.get("adapt_filename") == pick:
                row["recommended"] = "pretrained+finetune"
            elif row.get("recommended") is None:
                row["recommended"] = "pretrained"
            else:
                continue
            _add_source(row, "recommended", "vit_jax README recommended table / augreg notebook")
            marked += 1
    return marked


def apply_timm(rows: list[dict], sources: Path) -> int:
    """Link files that timm re-hosts on the Hugging Face Hub (a download fallback)."""
    by_adapt = {r["adapt_filename"]: r for r in rows if r.get("adapt_filename")}
    by_upstream: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_upstream[row["filename"]].append(row)
    linked = 0
    for entry in _read_csv(sources / TIMM_FILE):
        filename = entry["augreg_filename"]
        if not filename:
            continue
        repo = f"timm/{entry['timm_name']}"
        source = f"timm default_cfgs ({entry['timm_name']})"
        if "--" in filename and filename in by_adapt:
            by_adapt[filename]["hf_repo"] = repo
            _add_source(by_adapt[filename], "hf_repo", source)
            _mark_exists(by_adapt[filename], source)
            linked += 1
        for row in by_upstream.get(filename, []):
            row["upstream_hf_repo"] = repo
            _add_source(row, "upstream_hf_repo", source)
            linked += 1
    return linked


# --- older collections ---------------------------------------------------------

def legacy_rows(sources: Path) -> list[dict]:
    """Rows for the pre-AugReg collections, one per checkpoint file."""
    path = sources / LEGACY_FILE
    if not path.exists():
        return []
    files: dict[str, dict] = {}
    for fact in _read_csv(path):
        key = f"{fact['collection']}/{fact['file_stem']}"
        row = files.get(key)
        if row is None:
            try:
                arch = canonical_arch(fact["arch"])
            except VitzooError:
                arch = fact["arch"]
            resolution = int(float(fact["resolution"])) if fact.get("resolution") else None
            row = {
                "name": arch, "ds": _legacy_ds(fact["upstream_ds"]), "collection": fact["collection"],
                "row_source": "legacy", "filename_verified": True, "checkpoint": key,
                "exists": True, "exists_source": fact["source"],
                "note": fact.get("note") or None,
            }
            if fact.get("adapt_ds"):
                row.update(adapt_ds=fact["adapt_ds"], adapt_resolution=resolution,
                           adapt_filename=fact["file_stem"], adapt_url=fact["url"])
            else:
                row.update(filename=fact["file_stem"], url=fact["url"])
            files[key] = row
        if fact.get("metric") == "imagenet_top1" and fact.get("value"):
            value = float(fact["value"])
            if fact.get("unit") == "percent":
                value /= 100
            row["adapt_final_test"] = value
            _add_source(row, "adapt_final_test", f"{fact['source']} (ImageNet top-1)")
    _link_legacy_upstreams(files)
    return list(files.values())


def _legacy_ds(upstream: str) -> str | None:
    upstream = (upstream or "").lower()
    return {"imagenet21k": "i21k", "imagenet2012": "i1k", "imagenet": "i1k"}.get(upstream) or (
        upstream or None
    )


def _link_legacy_upstreams(files: dict[str, dict]) -> None:
    """A fine-tune in imagenet21k+imagenet2012/X comes from imagenet21k/X."""
    for row in files.values():
        if not row.get("adapt_filename"):
            continue
        stem = row["adapt_filename"].removesuffix("-224")
        folder, _, _ = row["checkpoint"].rpartition("/")
        upstream_folder = folder.replace("+imagenet2012", "")
        upstream = files.get(f"{upstream_folder}/{stem}")
        if upstream is not None:
            row["filename"] = upstream["filename"]
            row["url"] = upstream["url"]


def _drop_superseded_legacy(rows: list[dict]) -> list[dict]:
    """Upstream-only legacy rows are redundant once a fine-tune row points at them."""
    referenced = {r["url"] for r in rows if r.get("adapt_filename") and r.get("url")}
    return [r for r in rows if r.get("adapt_filename") or r.get("url") not in referenced]


# --- everything together ---------------------------------------------------------

def embedded_rows(sources: Path) -> tuple[list[dict], dict]:
    """The reconstructed catalog rows and statistics for the manifest."""
    grid = load_grid(sources)
    rows = grid_rows(grid)
    stats: dict = {"grid_rows": len(rows)}
    stats["published_values"] = apply_published(rows, sources)
    stats["timm_links"] = apply_timm(rows, sources)
    stats["recommended_rows"] = apply_recommendations(rows, sources)
    legacy = _drop_superseded_legacy(legacy_rows(sources))
    stats["legacy_rows"] = len(legacy)
    for row in legacy:
        _validate_legacy(row)
    return rows + legacy, stats


def _validate_legacy(row: dict) -> None:
    from vitzoo.names import validate_path_component

    for key in ("filename", "adapt_filename"):
        if row.get(key):
            validate_path_component(row[key], "legacy file name")

