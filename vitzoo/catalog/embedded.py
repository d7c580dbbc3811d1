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
from decimal import Decimal
from pathlib import Path

from vitzoo.catalog.caveats import add_caveat
from vitzoo.catalog.families import FAMILIES_FILE, FAMILY_RESULTS_FILE, family_rows
from vitzoo.errors import VitzooError
from vitzoo.names import PRETRAIN_DS, AdaptedName, PretrainedName, canonical_arch

GRID_FILE = "augreg_grid.json"
PUBLISHED_FILE = "published_metrics.csv"
TIMM_FILE = "timm_checkpoints.csv"
LEGACY_FILE = "legacy_collections.csv"
ARCHITECTURES_FILE = "architectures.csv"
MEASURED_FILE = "timm_results.csv"  # read by vitzoo.catalog.measured
SOURCE_FILES = (GRID_FILE, PUBLISHED_FILE, TIMM_FILE, LEGACY_FILE, ARCHITECTURES_FILE, MEASURED_FILE,
                FAMILIES_FILE, FAMILY_RESULTS_FILE)

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


def _pretrained_configs(
    grid: dict,
) -> Iterator[tuple[PretrainedName, tuple[int, ...], str | None, str | None]]:
    """Every pre-trained config of the grid, its fine-tune resolutions, a note and a caveat code."""
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
            unconfirmed = name.ds == "i21k_30"
            yield name, all_res, _I21K_30_NOTE if unconfirmed else None, (
                "unconfirmed_name" if unconfirmed else None)
    for arch, partial in grid.get("partial_archs", {}).items():
        known = {(c["aug"], c["wd"], c["do"], c["sd"]) for c in partial["known_configs"]}
        for name in configs(arch, partial["datasets"]):
            is_known = (name.aug, name.wd, name.do, name.sd) in known
            note = None if is_known else (
                f"{arch}: only {partial['released_count']} configurations were released; "
                "this one is a grid candidate that may not exist"
            )
            yield name, tuple(partial["resolutions"]), note, None if is_known else "b8_candidate"


def _known_gaps(grid: dict) -> list[dict]:
    """Adaptations with fewer released files than pre-trained checkpoints (which ones: unknown)."""
    return grid["adaptation"].get("known_gaps", [])


def _in_gap(gap: dict, adapt_ds: str, lr: float, res: int) -> bool:
    return (gap["adapt_ds"], gap["adapt_lr"], gap["adapt_resolution"]) == (adapt_ds, lr, res)


def grid_rows(grid: dict) -> list[dict]:
    """One row per (pre-trained config x adaptation), like a line of index.csv."""
    prefix = grid["bucket_prefix"].rstrip("/")
    rows: list[dict] = []
    for pre, resolutions, note, caveat in _pretrained_configs(grid):
        filename = pre.format()
        verified = pre.ds != "i21k_30"
        base = {
            "name": pre.arch, "ds": pre.ds, "epochs": pre.epochs, "lr": pre.lr, "aug": pre.aug,
            "wd": pre.wd, "do": pre.do, "sd": pre.sd, "filename": filename,
            "url": f"{prefix}/{filename}.npz", "collection": "augreg", "row_source": "grid",
            "filename_verified": verified, "note": note, "caveats": "",
        }
        if caveat:
            add_caveat(base, caveat)
        for adapt_ds, steps, lr, res in _adaptations(grid, resolutions):
            adapt = AdaptedName(pre, adapt_ds, steps, lr, res).format()
            row = {
                **base, "adapt_ds": adapt_ds, "adapt_lr": lr, "adapt_steps": steps,
                "adapt_resolution": res, "adapt_filename": adapt, "checkpoint": adapt,
                "adapt_url": f"{prefix}/{adapt}.npz",
            }
            rows.append(row)
    return rows


def mark_possibly_missing(rows: list[dict], grid: dict) -> int:
    """Caveat every row a known gap could be, except those a source confirms exist."""
    full_grid = set(grid["pretraining"]["archs"])  # the gap is counted over the 756 full-grid configs
    marked = 0
    for gap in _known_gaps(grid):
        for row in rows:
            if (row.get("collection") == "augreg" and row["name"] in full_grid
                    and row.get("exists") is not True
                    and _in_gap(gap, row["adapt_ds"], row["adapt_lr"], row["adapt_resolution"])):
                add_caveat(row, "possibly_missing")
                marked += 1
    return marked


def release_counts(grid: dict, rows: list[dict]) -> dict:
    """The catalog's AugReg counts next to the published release, and why they differ.

    Counted from the rows and the grid file, so the explanation cannot drift from the
    data. The catalog lists every B/8 grid configuration (which of them were released
    is only partly known) and every row the one missing fine-tune could be.
    """
    augreg = [r for r in rows if r.get("collection") == "augreg"]
    pretrained = {r["filename"] for r in augreg}
    candidates = {r["filename"] for r in augreg if "b8_candidate" in (r.get("caveats") or "")}
    per_candidate = sum(r["filename"] in candidates for r in augreg) // max(len(candidates), 1)
    partial = grid.get("partial_archs", {})
    released_partial = sum(p["released_count"] for p in partial.values())
    known_partial = sum(len(p["known_configs"]) for p in partial.values())
    unknown_released = released_partial - known_partial  # released, but which candidate is unknown
    unreleased = len(candidates) - unknown_released
    missing = sum(g["of"] - g["released"] for g in _known_gaps(grid))
    published_pretrained = len(pretrained) - unreleased
    published_finetunes = len(augreg) - unreleased * per_candidate - missing
    return {
        "catalog_pretrained": len(pretrained),
        "catalog_finetunes": len(augreg),
        "published_pretrained": published_pretrained,
        "published_finetunes": published_finetunes,
        "b8_candidates": len(candidates),
        "b8_candidates_released": unknown_released,
        "finetunes_per_b8_candidate": per_candidate,
        "known_missing_finetunes": missing,
        "explanation": (
            f"{len(pretrained):,} pre-trained / {len(augreg):,} fine-tuned AugReg rows against the "
            f"release's {published_pretrained:,} / {published_finetunes:,}: {released_partial} B/8 "
            f"configurations were released but only {known_partial} are known, so all "
            f"{len(candidates)} others of the grid are listed (caveat b8_candidate; {unreleased} of "
            f"them x {per_candidate} fine-tunes = {unreleased * per_candidate:,} rows do not exist), "
            f"and {missing} fine-tune was never released without saying which, so every row it "
            f"could be is listed (caveat possibly_missing)"
        ),
    }


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
                    add_caveat(row, "per_arch_throughput")
                    counts[metric] += 1
    _mark_224_figures(facts, by_upstream)
    return dict(counts)


def _mark_224_figures(facts: list[dict[str, str]], by_upstream: dict[str, list[dict]]) -> None:
    """384 px ImageNet fine-tunes whose pre-trained checkpoint has a published 224 px top-1."""
    for fact in facts:
        if (fact["metric"] == "imagenet_top1" and fact["filename"] and "--" not in fact["filename"]
                and fact["adapt_resolution"] and int(float(fact["adapt_resolution"])) == 224):
            for row in by_upstream.get(fact["filename"], []):
                if row.get("adapt_ds") == "imagenet2012" and row.get("adapt_resolution") == 384:
                    add_caveat(row, "res224_figure")


#: Sources whose listed checkpoints are the published recommendations, and how a row cites them.
RECOMMENDATION_SOURCES = {
    "repo README.md (recommended AugReg checkpoints table)": "vit_jax README recommended table",
    "repo vit_jax_augreg.ipynb stored output (cell: best i21k upstream per model":
        "vit_jax_augreg notebook stored output (best i21k upstream per model)",
}


def _recommendation_picks(sources: Path) -> dict[str, list[str]]:
    """Each recommended fine-tune file -> the sources that list it, in a stable order."""
    picks: dict[str, list[str]] = defaultdict(list)
    for fact in _read_csv(sources / PUBLISHED_FILE):
        for prefix, label in RECOMMENDATION_SOURCES.items():
            if fact["filename"] and fact["source"].startswith(prefix) and label not in picks[
                    fact["filename"]]:
                picks[fact["filename"]].append(label)
    return picks


def apply_recommendations(rows: list[dict], sources: Path) -> int:
    """Mark the published recommended checkpoints; returns how many rows are marked.

    Each row cites the sources that actually list its pick: the README's table has nine
    architectures; B/8's pick comes from the notebook alone.
    """
    by_upstream: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_upstream[row.get("filename")].append(row)
    marked: set[int] = set()
    for pick, cited in sorted(_recommendation_picks(sources).items()):
        for row in by_upstream.get(pick.split("--")[0], []):
            if row.get("adapt_filename") == pick:
                row["recommended"] = "pretrained+finetune"
            elif row.get("recommended") is None:
                row["recommended"] = "pretrained"
            else:
                continue
            if id(row) not in marked:
                _add_source(row, "recommended", " and ".join(cited))
            marked.add(id(row))
    return len(marked)


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

#: How the reference README words a figure it did not measure in a table.
_EXPECTED = "expected to achieve"


def fraction(text: str, unit: str | None) -> float:
    """A published accuracy as a fraction, with the published precision and no float noise.

    ``82.7`` percent is 0.827, not ``82.7 / 100 == 0.8270000000000001``: the decimal
    point moves in decimal arithmetic and the float is made once.
    """
    value = Decimal(text.strip())
    return float(value / 100 if unit == "percent" else value)


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
                "note": fact.get("note") or None, "caveats": "",
            }
            if fact.get("adapt_ds"):
                row.update(adapt_ds=fact["adapt_ds"], adapt_resolution=resolution,
                           adapt_filename=fact["file_stem"], adapt_url=fact["url"])
            else:
                row.update(filename=fact["file_stem"], url=fact["url"])
            files[key] = row
        if fact.get("metric") == "imagenet_top1" and fact.get("value"):
            row["adapt_final_test"] = fraction(fact["value"], fact.get("unit"))
            _add_source(row, "adapt_final_test", f"{fact['source']} (ImageNet top-1)")
            if _EXPECTED in (fact.get("note") or "") + fact["source"]:
                add_caveat(row, "expected_value")
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
    stats["possibly_missing_rows"] = mark_possibly_missing(rows, grid)
    stats["release_counts"] = release_counts(grid, rows)
    legacy = _drop_superseded_legacy(legacy_rows(sources))
    stats["legacy_rows"] = len(legacy)
    for row in legacy:
        _validate_legacy(row)
    families = family_rows(sources)
    stats["family_rows"] = len(families)
    return rows + legacy + families, stats


def _validate_legacy(row: dict) -> None:
    from vitzoo.names import validate_path_component

    for key in ("filename", "adapt_filename"):
        if row.get(key):
            validate_path_component(row[key], "legacy file name")

