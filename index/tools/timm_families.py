"""Generate ``index/sources/timm_families.csv``: the plain-ViT checkpoints of other families
(DeiT, DeiT III, DINO, DINOv2, MAE, CLIP, SigLIP) that timm serves on the Hugging Face Hub.

Why a script, run once outside the project: the facts live in timm's pretrained
configurations (``timm.models.get_pretrained_cfg``) and in its model definitions, and
reading them needs torch + timm, which vitzoo does not depend on. The result is
committed as an index source, like the other files of ``index/sources/``; this script
is how it can be regenerated and checked. No weights are downloaded: each model is
built on torch's ``meta`` device (shapes only, no memory, no network), which is
enough to read widths, tokens, switches and the parameter count.

Run (an environment with torch and timm; the repository root on ``PYTHONPATH`` for
``vitzoo.arch_registry`` and ``vitzoo.atomic``, which need nothing else)::

    PYTHONPATH=. python index/tools/timm_families.py

The row logic (:func:`family_of`, :func:`pretraining_of`, :func:`unsupported`,
:func:`catalog_row`) is pure Python over plain dictionaries, so the tests check it on
hand-written records without torch.
"""

from __future__ import annotations

import csv
import io
import platform
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "index" / "sources"
CSV_NAME = "timm_families.csv"
PROVENANCE_NAME = "timm_families.md"
COMMAND = "PYTHONPATH=. python index/tools/timm_families.py"

#: Family -> a test on (architecture, tag), in the order they are tried (deit3 before deit).
FAMILY_RULES: tuple[tuple[str, Any], ...] = (
    ("deit3", lambda arch, tag: arch.startswith("deit3_")),
    ("deit", lambda arch, tag: arch.startswith("deit_")),
    ("dinov2", lambda arch, tag: "_dinov2" in arch),
    ("dino", lambda arch, tag: tag == "dino"),
    ("mae", lambda arch, tag: tag == "mae"),
    ("siglip", lambda arch, tag: "_siglip" in arch),
    ("clip", lambda arch, tag: "_clip" in arch or "clip" in tag),  # tags: MobileCLIP's apple_mclip
)

#: What a tag's pre-training part means, where it is ImageNet (the catalog's own codes:
#: ImageNet-22k is the ImageNet-21k of the AugReg rows). DINO and MAE train on ImageNet-1k
#: images without labels. Any other tag part is kept as timm writes it (``laion2b``, ``webli``).
IMAGENET_PRETRAINING = {"fb_in1k": "i1k", "fb_in22k": "i21k", "dino": "i1k", "mae": "i1k"}
#: A head fine-tuned on ImageNet: the tag's part after ``_ft_`` -> the data of the head.
HEAD_DATA = {"in1k": "in1k", "in12k": "in12k", "in12k_in1k": "in1k", "in22k": "in22k"}
#: Activations vitzoo models (timm's module -> the name recorded).
ACTIVATIONS = {"GELU(approximate='none')": "gelu", "GELU(approximate='tanh')": "gelu_tanh",
               "GELUTanh()": "gelu_tanh",
               "QuickGELU()": "quick_gelu"}
POOLS = ("token", "avg", "map")

COLUMNS = (
    "timm_name", "hf_hub_id", "family", "architecture", "tag", "arch", "pretrain_data",
    "head_data", "head", "num_classes", "resolution", "patch", "width", "depth", "heads", "mlp",
    "param_count", "class_token", "dist_token", "reg_tokens", "no_embed_class", "pre_norm",
    "layer_scale", "act", "norm_eps", "global_pool", "fc_norm", "patch_bias", "qkv_bias",
    "mean", "std", "interpolation", "crop_pct", "crop_mode", "license", "timm_notes",
)


def family_of(name: str) -> str | None:
    """The family of a tagged timm name (``vit_small_patch14_dinov2.lvd142m`` -> dinov2), or None."""
    arch, _, tag = name.partition(".")
    if not (arch.startswith(("deit", "vit_"))):
        return None
    return next((family for family, test in FAMILY_RULES if test(arch, tag)), None)


def pretraining_of(tag: str) -> tuple[str, str | None]:
    """(pre-training data, data of the classifier head or None) read from a timm tag.

    ``fb_in22k_ft_in1k`` -> (i21k, in1k); ``laion2b_ft_in12k`` -> (laion2b, in12k);
    ``fb_in1k`` (DeiT: supervised on ImageNet-1k) -> (i1k, in1k); ``lvd142m`` -> (lvd142m, None).
    """
    pre, _, fine = tag.partition("_ft_")
    if fine:
        return IMAGENET_PRETRAINING.get(pre, pre), HEAD_DATA.get(fine, fine)
    if pre.startswith("fb_"):  # DeiT and DeiT III without _ft_: trained with labels throughout
        data = IMAGENET_PRETRAINING.get(pre, pre.removeprefix("fb_"))
        return data, {"i1k": "in1k", "i21k": "in22k"}.get(data, data)
    return IMAGENET_PRETRAINING.get(pre, pre), None


def head_of(family: str, num_classes: int, head_data: str | None) -> str:
    """``classifier`` (trained labels), ``projection`` (a CLIP tower's image-text embedding,
    whose outputs are not classes) or ``none`` (a backbone: pre-logits only)."""
    if not num_classes:
        return "none"
    if head_data is None and family == "clip":
        return "projection"
    return "classifier"


def unsupported(facts: dict[str, Any]) -> str | None:
    """Why vitzoo's one ViT cannot hold this model (None: it can).

    vitzoo models a plain ViT with switches: class/distillation/register tokens, position
    embedding with or without the prefix tokens, pre-norm, layer scale, GELU exact / tanh /
    quick-GELU, token / average / attention-pool (MAP) pooling, square patches. Anything else
    is listed as skipped, with this reason.
    """
    if facts["model_class"] not in ("VisionTransformer", "VisionTransformerDistilled"):
        return f"model class {facts['model_class']} is not timm's plain VisionTransformer"
    if facts["patch_embed_class"] != "PatchEmbed":
        return f"{facts['patch_embed_class']} stem instead of a patch embedding"
    if facts["block_class"] != "Block":
        return f"{facts['block_class']} blocks instead of timm's plain Block"
    if facts["mlp_class"] != "Mlp":
        return f"gated MLP ({facts['mlp_class']}, e.g. SwiGLU)"
    if facts["act"] not in ACTIVATIONS:
        return f"activation {facts['act']}"
    if len(set(facts["patch_size"])) != 1:
        return f"non-square patches {facts['patch_size']}"
    if facts["qk_norm"]:
        return "normalised queries and keys (qk-norm)"
    if facts["attn_norm"]:
        return "a norm inside attention"
    if facts["global_pool"] not in POOLS:
        return f"pooling {facts['global_pool']!r}"
    return None


def _floats(values: Any) -> str:
    return " ".join(repr(float(v)) for v in values)  # timm's figures, every digit


def catalog_row(name: str, cfg: dict[str, Any], facts: dict[str, Any], arch: str) -> dict[str, Any]:
    """One CSV row from timm's pretrained configuration (``cfg``), the facts read off the
    model (``facts``) and the architecture's canonical name (``arch``)."""
    family = family_of(name)
    architecture, _, tag = name.partition(".")
    pretrain, head_data = pretraining_of(tag)
    num_classes = int(cfg.get("num_classes") or 0)
    yes = {True: "yes", False: "no"}
    return {
        "timm_name": name, "hf_hub_id": cfg.get("hf_hub_id") or "", "family": family,
        "architecture": architecture, "tag": tag, "arch": arch, "pretrain_data": pretrain,
        "head_data": head_data if num_classes else "", "head": head_of(family, num_classes, head_data),
        "num_classes": num_classes, "resolution": cfg["input_size"][-1],
        "patch": facts["patch_size"][0], "width": facts["width"], "depth": facts["depth"],
        "heads": facts["heads"], "mlp": facts["mlp"], "param_count": facts["param_count"],
        "class_token": yes[facts["class_token"]], "dist_token": yes[facts["dist_token"]],
        "reg_tokens": facts["reg_tokens"], "no_embed_class": yes[facts["no_embed_class"]],
        "pre_norm": yes[facts["pre_norm"]], "layer_scale": yes[facts["layer_scale"]],
        "act": ACTIVATIONS[facts["act"]], "norm_eps": f"{facts['norm_eps']:g}",
        "global_pool": facts["global_pool"], "fc_norm": yes[facts["fc_norm"]],
        "patch_bias": yes[facts["patch_bias"]], "qkv_bias": yes[facts["qkv_bias"]],
        "mean": _floats(cfg["mean"]), "std": _floats(cfg["std"]),
        "interpolation": cfg.get("interpolation") or "", "crop_pct": repr(float(cfg["crop_pct"])),
        "crop_mode": cfg.get("crop_mode") or "", "license": cfg.get("license") or "",
        "timm_notes": " ".join(cfg.get("notes") or ()),
    }


def arch_name(facts: dict[str, Any], registry: Any) -> str | None:
    """The registry's canonical name for these shapes (``S/14``), or None when it has none."""
    shape = (facts["width"], facts["mlp"], facts["depth"], facts["heads"], facts["patch_size"][0])
    for entry in registry:
        if entry.family == "vit" and (entry.hidden, entry.mlp, entry.layers, entry.heads,
                                      entry.patch) == shape:
            return entry.name
    return None


# --- reading timm (needs torch + timm; never imported by the tests) -----------------------

def model_facts(name: str) -> dict[str, Any]:
    """Shapes and switches of a timm model, built on the meta device (nothing downloaded)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    block = model.blocks[0]
    mlp, attn, embed = block.mlp, block.attn, model.patch_embed
    identity = torch.nn.Identity
    reg = getattr(model, "reg_token", None)
    proj_bias = getattr(getattr(embed, "proj", None), "bias", None)
    norm = model.norm if not isinstance(model.norm, identity) else block.norm1
    return {
        "model_class": type(model).__name__, "block_class": type(block).__name__,
        "patch_embed_class": type(embed).__name__, "mlp_class": type(mlp).__name__,
        "act": repr(getattr(mlp, "act", None)), "patch_size": tuple(embed.patch_size),
        "width": model.embed_dim, "depth": len(model.blocks), "heads": attn.num_heads,
        "mlp": mlp.fc1.out_features if hasattr(mlp, "fc1") else None,
        "param_count": sum(p.numel() for p in model.parameters()),
        "class_token": model.cls_token is not None,
        "dist_token": getattr(model, "dist_token", None) is not None,
        "reg_tokens": 0 if reg is None else reg.shape[1],
        "no_embed_class": bool(model.no_embed_class),
        "pre_norm": not isinstance(model.norm_pre, identity),
        "layer_scale": not isinstance(block.ls1, identity),
        "norm_eps": getattr(norm, "eps", None),
        "global_pool": model.global_pool,
        "fc_norm": not isinstance(model.fc_norm, identity),
        "patch_bias": proj_bias is not None,
        "qkv_bias": getattr(getattr(attn, "qkv", None), "bias", None) is not None,
        "qk_norm": not isinstance(getattr(attn, "q_norm", identity()), identity),
        "attn_norm": not isinstance(getattr(attn, "norm", identity()), identity),
    }


def collect() -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """(rows, skipped name -> reason, versions) over every pretrained timm name of the families."""
    import timm
    import torch
    from timm.models import get_pretrained_cfg

    from vitzoo.arch_registry import ARCHITECTURES

    rows, skipped = [], {}
    for name in timm.list_pretrained():
        if family_of(name) is None:
            continue
        facts = model_facts(name)
        reason = unsupported(facts)
        if reason is None:
            arch = arch_name(facts, ARCHITECTURES)
            if arch is None:
                reason = (f"no vitzoo architecture has its shapes (width {facts['width']}, mlp "
                          f"{facts['mlp']}, depth {facts['depth']}, heads {facts['heads']}, "
                          f"patch {facts['patch_size'][0]}): add one to vitzoo/arch_registry.py")
        if reason is not None:
            skipped[name] = reason
            continue
        rows.append(catalog_row(name, get_pretrained_cfg(name).to_dict(), facts, arch))
    versions = {"timm": timm.__version__, "torch": torch.__version__,
                "python": platform.python_version()}
    return rows, skipped, versions


def provenance_line(versions: dict[str, str]) -> str:
    """The CSV's first line: what the values are and where they come from (read by the catalog)."""
    return (f"# timm {versions['timm']} pretrained configurations and model definitions "
            f"(timm.list_pretrained, get_pretrained_cfg; models built on the meta device), written "
            f"by index/tools/timm_families.py; details in {PROVENANCE_NAME}\n")


def csv_text(rows: list[dict[str, Any]], versions: dict[str, str]) -> str:
    out = io.StringIO()
    out.write(provenance_line(versions))
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["family"], r["timm_name"])))
    return out.getvalue()


def provenance_text(rows: list[dict[str, Any]], skipped: dict[str, str], versions: dict) -> str:
    per_family = Counter(r["family"] for r in rows)
    heads = Counter(r["head"] for r in rows)
    lines = [
        "# Other ViT families served by timm: provenance of `timm_families.csv`",
        "",
        f"Generated {datetime.now(UTC).date().isoformat()} by `{COMMAND}` with timm "
        f"{versions['timm']} (torch {versions['torch']}, Python {versions['python']}), from "
        "timm's own pretrained configurations (`timm.list_pretrained()`, `get_pretrained_cfg`: "
        "hf_hub_id, input_size, crop_pct, crop_mode, interpolation, mean, std, num_classes, "
        "license, tag) and its model definitions, each model built on torch's `meta` device "
        "(shapes only: no weights were downloaded).",
        "",
        "Every value is timm's. `param_count` counts the parameters of the model timm builds for "
        "that name (with its head). `pretrain_data` is read from the tag: ImageNet is written in "
        "the catalog's codes (`i1k`, `i21k` = ImageNet-22k; DINO and MAE train on ImageNet-1k "
        "images without labels), any other data as timm's tag names it (`laion2b`, `webli`, "
        "`lvd142m`, ...). `head`: `classifier` (num_classes labels, trained on `head_data`), "
        "`projection` (a CLIP image tower's embedding, not classes) or `none` (a backbone).",
        "",
        f"## Counts: {len(rows)} rows, {len(skipped)} skipped",
        "",
        "| family | rows |", "|---|---|",
        *(f"| {family} | {count} |" for family, count in sorted(per_family.items())),
        "",
        "Heads: " + ", ".join(f"{kind} {count}" for kind, count in sorted(heads.items())) + ".",
        "",
        "## Rows that share a Hub repo",
        "",
        "timm serves some weights under two names: the `*_quickgelu_*` CLIP models are the same "
        "files as their plain-named twins, built with the quick-GELU the weights were trained "
        "with (timm's note on the twin: \"natively QuickGELU, use quickgelu model variant for "
        "original results\"). Both names are rows; their `hf_hub_id` is the same repo:",
        "",
        *(f"- `{r['timm_name']}` -> `{r['hf_hub_id']}`" for r in sorted(
            rows, key=lambda r: r["timm_name"]) if r["hf_hub_id"] != f"timm/{r['timm_name']}"),
        "",
        "## Skipped (features vitzoo's ViT does not model)",
        "",
        "| timm name | why |", "|---|---|",
        *(f"| {name} | {why} |" for name, why in sorted(skipped.items())),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    sys.path.insert(0, str(REPO))
    from vitzoo.atomic import atomic_write

    rows, skipped, versions = collect()
    with atomic_write(SOURCES / CSV_NAME, "w") as handle:
        handle.write(csv_text(rows, versions))
    with atomic_write(SOURCES / PROVENANCE_NAME, "w") as handle:
        handle.write(provenance_text(rows, skipped, versions))
    print(f"{len(rows)} rows, {len(skipped)} skipped -> {SOURCES / CSV_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
