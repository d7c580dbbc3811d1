"""Source: the other families' plain ViTs that timm serves (``index/sources/timm_families.csv``).

DeiT, DeiT III, DINO, DINOv2, MAE, CLIP and SigLIP checkpoints are what a person weighs
against AugReg today, and the Hugging Face Hub serves them in timm's layout. The file was
generated once from timm's own pretrained configurations by ``index/tools/timm_families.py``
(its provenance is ``timm_families.md``); here each line becomes one catalog row: one file,
no fine-tunes listed under it, named by its timm name, served by its Hub repo. A row holds
only what timm records; accuracies come from timm's measurements (:mod:`.measured`) where a
file has an ImageNet head, and stay null (shown as unknown) for backbones.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitzoo.errors import VitzooError
from vitzoo.names import canonical_arch, validate_path_component

FAMILIES_FILE = "timm_families.csv"
#: timm's measured ImageNet results of these files (read by :mod:`vitzoo.catalog.measured`).
FAMILY_RESULTS_FILE = "timm_results_families.csv"
#: Every family row's collection is ``timm-families/<family>``; ``--collection timm-families``
#: selects them all (a collection answers to its parent name too).
COLLECTION = "timm-families"
ROW_SOURCE = "timm"

#: CSV switch columns -> how the ``switches`` column words them when they are on.
_FLAGS = {"class_token": "class token", "dist_token": "distillation token",
          "no_embed_class": "position embedding without prefix tokens", "pre_norm": "pre-norm",
          "layer_scale": "layer scale", "fc_norm": "norm after pooling"}
#: timm's ``act_layer`` names, as the file's ``act`` column records them.
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
_EPS_WORDS = "LayerNorm eps "


def switches(entry: dict[str, str]) -> str:
    """The model switches of one line, in words: ``class token; 4 registers; gelu; ...``."""
    if entry["act"] not in ACTIVATIONS:
        raise ValueError(f"{entry['timm_name']}: act {entry['act']!r} is not one of "
                         f"{', '.join(ACTIVATIONS)}")
    parts = [words for column, words in _FLAGS.items() if entry[column] == "yes"]
    if int(entry["reg_tokens"] or 0):
        parts.append(f"{entry['reg_tokens']} register tokens")
    parts += [f"pool {entry['global_pool']}", entry["act"], f"{_EPS_WORDS}{entry['norm_eps']}"]
    parts += [f"no {what} bias" for what, column in (("patch", "patch_bias"), ("qkv", "qkv_bias"))
              if entry[column] == "no"]
    return "; ".join(parts)


def numerics(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The activation and LayerNorm epsilon timm builds a family row's model with; None for a
    row of Google's releases.

    Why the loader needs them from the row: the ``*_quickgelu_*`` CLIP names share their
    weights' Hub repo with a plain-named twin, whose ``config.json`` names the exact-GELU model,
    so only the name the user chose tells which activation to run. The values are read back
    from the ``switches`` words that :func:`switches` wrote.
    """
    if row.get("row_source") != ROW_SOURCE or not row.get("switches"):
        return None
    parts = [part.strip() for part in str(row["switches"]).split(";")]
    acts = [part for part in parts if part in ACTIVATIONS]
    eps = [part.removeprefix(_EPS_WORDS) for part in parts if part.startswith(_EPS_WORDS)]
    try:
        if len(acts) != 1 or len(eps) != 1:
            raise ValueError
        return {"activation": acts[0], "layer_norm_eps": float(eps[0])}
    except ValueError:
        raise VitzooError(f"catalog row {row.get('checkpoint')} has switches vitzoo cannot read "
                          f"({row['switches']!r})", "rebuild the catalog (vitzoo index build) "
                          "or restore index/ from git") from None


def _note(entry: dict[str, str]) -> str | None:
    """What to know before using the file, in words (timm's own note included)."""
    notes = []
    if entry["head"] == "projection":
        notes.append(f"the head is CLIP's image-text projection ({entry['num_classes']}-d), not "
                     "classes; a probe or fine-tune uses the features before it")
    elif entry["head"] == "none":
        notes.append("a backbone without a head: no ImageNet accuracy is measured for it")
    if entry["hf_hub_id"] and entry["hf_hub_id"] != f"timm/{entry['timm_name']}":
        notes.append(f"the same weights as {entry['hf_hub_id'].removeprefix('timm/')}, built with "
                     f"{entry['act']}")
    if entry.get("timm_notes"):
        notes.append(f"timm: {entry['timm_notes']}")
    return "; ".join(notes) or None


def family_row(entry: dict[str, str], source: str) -> dict:
    """One catalog row for one line of the file; ``source`` is the file's provenance line,
    cited by the row's existence and its parameter count (timm's model, counted)."""
    name = validate_path_component(entry["timm_name"], "timm checkpoint name")
    classes = int(entry["num_classes"] or 0)
    return {
        "name": canonical_arch(entry["arch"]), "ds": entry["pretrain_data"], "filename": name,
        "checkpoint": name, "url": None, "upstream_hf_repo": entry["hf_hub_id"] or None,
        "params": int(entry["param_count"]), "collection": f"{COLLECTION}/{entry['family']}",
        "row_source": ROW_SOURCE, "filename_verified": True, "exists": True,
        "value_sources": f"params={source} (parameters of timm's model for this name)",
        "exists_source": source, "note": _note(entry), "caveats": "",
        "family": entry["family"], "resolution": int(entry["resolution"]),
        "head": entry["head"], "num_classes": classes, "head_ds": entry["head_data"] or None,
        "license": entry["license"] or None, "mean": entry["mean"], "std": entry["std"],
        "interpolation": entry["interpolation"] or None, "crop_pct": float(entry["crop_pct"]),
        "crop_mode": entry["crop_mode"] or None, "switches": switches(entry),
    }


def family_rows(sources: Path) -> list[dict]:
    """The rows of every family file line; none when the sources have no such file.

    The file's first line (``# timm X pretrained configurations ...``) is its provenance;
    every row cites it as the source of its existence.
    """
    path = sources / FAMILIES_FILE
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].startswith("# timm "):
            raise ValueError("the first line must be the '# timm ...' provenance line")
        source = f"{FAMILIES_FILE}: " + lines[0].lstrip("# ").split(" (", 1)[0]
        return [family_row(entry, source) for entry in csv.DictReader(lines[1:])]
    except (OSError, KeyError, ValueError, VitzooError) as exc:
        message = exc.message if isinstance(exc, VitzooError) else str(exc)
        raise VitzooError(f"cannot read {path}: {message}", "restore index/sources from git") from exc
