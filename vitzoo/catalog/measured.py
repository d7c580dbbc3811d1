"""Source: timm's measured accuracies of Google's checkpoints (``index/sources/timm_results.csv``).

timm evaluated every Google ViT/Mixer checkpoint it serves on ImageNet-1k and five
harder test sets (ReaL labels, ImageNetV2, Sketch, ImageNet-A, ImageNet-R); the file
is a copy of those figures with its provenance line. Each figure belongs to one file
at one resolution, so a value is written only on the catalog row whose file timm
copied (the mapping in ``timm_checkpoints.csv`` and ``legacy_collections.csv``) and
only when that row's resolution is the one timm measured at: a name that maps to a
384 px fine-tune never lends its number to the 224 px row. Names with no row are
returned with the reason, never dropped silently.

A second file of the same form, ``timm_results_families.csv``, holds timm's figures for the
other families' files with an ImageNet-1k head (DeiT, DeiT III, CLIP and SigLIP fine-tunes);
those files are catalog rows under their timm names (:mod:`vitzoo.catalog.families`), so a
name maps to the row of the same name. Backbones without a head have no figures: null.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from vitzoo.catalog.embedded import LEGACY_FILE, MEASURED_FILE, TIMM_FILE, fraction
from vitzoo.catalog.families import FAMILY_RESULTS_FILE, ROW_SOURCE
from vitzoo.catalog.schema import MEASURED_SETS
from vitzoo.errors import VitzooError


@dataclass
class MeasuredResult:
    """What applying the file did: rows filled, and every name that has no row, with why."""

    names: int = 0
    rows: int = 0
    source: str = ""
    unmapped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"names": self.names, "rows": self.rows, "source": self.source,
                "unmapped": dict(sorted(self.unmapped.items()))}


def read_results(sources: Path, name: str = MEASURED_FILE) -> tuple[list[dict[str, str]], str]:
    """The measured rows and the source they cite (from the file's ``# ...`` first line)."""
    path = sources / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VitzooError(f"cannot read {path}: {exc}", "restore index/sources from git") from exc
    if not lines or not lines[0].startswith("#"):
        raise VitzooError(f"{path}: the first line must be the '# ...' provenance line",
                          "restore index/sources from git")
    cited = re.search(r"\(([^()]*commit [0-9a-f]+[^()]*)\)", lines[0])
    source = cited.group(1) if cited else lines[0].lstrip("# ").split(";")[0]
    return list(csv.DictReader(lines[1:])), source


def release_names(sources: Path) -> tuple[dict[str, str], dict[str, str]]:
    """timm name -> the catalog ``checkpoint`` of the file it copied, and the names known not to
    be a release file (timm's own re-fine-tunes, or a pre-trained file with many rows)."""
    mapped: dict[str, str] = {}
    not_files: dict[str, str] = {}
    with (sources / TIMM_FILE).open(newline="", encoding="utf-8") as handle:
        for entry in csv.DictReader(handle):
            stem = entry["augreg_filename"]
            if "--" in stem:
                mapped[entry["timm_name"]] = stem
            elif stem:
                not_files[entry["timm_name"]] = (
                    f"pre-trained file {stem}: the catalog's rows are its fine-tunes, not the file")
            else:
                not_files[entry["timm_name"]] = "timm's own weights, no release .npz (Hugging Face only)"
    path = sources / LEGACY_FILE
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            for entry in csv.DictReader(handle):
                if entry.get("timm_name"):
                    mapped[entry["timm_name"]] = f"{entry['collection']}/{entry['file_stem']}"
    return mapped, not_files


def measured_values(entry: dict[str, str], source: str) -> dict:
    """One results line as catalog values: fractions, the resolution and crop, the source."""
    values: dict = {
        f"{prefix}_{k}": fraction(entry[f"{prefix}_{k}"], "percent") if entry.get(f"{prefix}_{k}")
        else None
        for prefix in MEASURED_SETS for k in ("top1", "top5")
    }
    values["measured_resolution"] = int(entry["img_size"])
    values["measured_crop_pct"] = float(entry["crop_pct"])
    values["measured_source"] = f"timm: {source} ({entry['timm_name']})"
    return values


def _results(sources: Path) -> list[tuple[list[dict[str, str]], str, bool]]:
    """(lines, source, of the families' file) for each results file the sources hold."""
    files = [(*read_results(sources), False)]
    if (sources / FAMILY_RESULTS_FILE).exists():
        files.append((*read_results(sources, FAMILY_RESULTS_FILE), True))
    return files


def apply_measured(rows: list[dict], sources: Path) -> MeasuredResult:
    """Write timm's figures onto the rows they were measured for; say which names have none."""
    files = _results(sources)
    mapped, not_files = release_names(sources)
    by_checkpoint = {r["checkpoint"]: r for r in rows if r.get("checkpoint")}
    outcome = MeasuredResult(names=sum(len(lines) for lines, _, _ in files),
                             source="; ".join(dict.fromkeys(source for _, source, _ in files)))
    for lines, source, of_families in files:
        for entry in lines:
            name = entry["timm_name"]
            row, why = _row_for(name, of_families, by_checkpoint, mapped, not_files)
            if row is not None:
                measured_at = int(entry["img_size"])
                if row.get("adapt_resolution") not in (None, measured_at):
                    row, why = None, (f"measured at {measured_at} px but {row['checkpoint']} is a "
                                      f"{row['adapt_resolution']} px fine-tune")
            if row is None:
                outcome.unmapped[name] = why
                continue
            row.update(measured_values(entry, source))
            outcome.rows += 1
    return outcome


def _row_for(name: str, of_families: bool, by_checkpoint: dict[str, dict], mapped: dict[str, str],
             not_files: dict[str, str]) -> tuple[dict | None, str]:
    """The catalog row a measured timm name belongs to, or None and why it has none."""
    if of_families:
        row = by_checkpoint.get(name)
        if row is None or row.get("row_source") != ROW_SOURCE:
            return None, "not in timm_families.csv (no catalog row of that timm name)"
        return row, ""
    checkpoint = mapped.get(name)
    if checkpoint is None:
        return None, not_files.get(
            name, "no release file known (timm_checkpoints.csv, legacy_collections.csv)")
    row = by_checkpoint.get(checkpoint)
    if row is None:
        return None, f"its file {checkpoint} is not in this catalog"
    return row, ""
