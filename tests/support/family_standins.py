"""Local stand-ins for the ViT families' Hub checkpoints: tiny random models in timm's layout
(``tests.support.timm_family_factory``) whose ``config.json`` carries the preprocessing timm
states for the real checkpoint of that family (``timm.models.get_pretrained_cfg(name)``,
timm 1.0.31: interpolation, crop_pct, crop_mode, mean, std), so the preprocessing per family is
exercised as it is met on the Hub. Used by the family probe and fine-tune tests, the README
and the notebook (offline: nothing here reaches the network).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.timm_family_factory import write_timm_family

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
OPENAI_CLIP = {"mean": [0.48145466, 0.4578275, 0.40821073],
               "std": [0.26862954, 0.26130258, 0.27577711]}
INCEPTION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

#: stand-in -> (timm fixture family, the real checkpoint it stands for, its pretrained_cfg)
STANDINS: dict[str, tuple[str, str, dict]] = {
    "deit": ("deit_distilled", "deit_tiny_distilled_patch16_224.fb_in1k",
             {**IMAGENET, "crop_pct": 0.9}),
    "deit3": ("deit3", "deit3_small_patch16_224.fb_in1k", {**IMAGENET, "crop_pct": 0.9}),
    "dino": ("dino", "vit_small_patch16_224.dino", {**IMAGENET, "crop_pct": 0.9}),
    "dinov2": ("dinov2_reg", "vit_small_patch14_reg4_dinov2.lvd142m",
               {**IMAGENET, "crop_pct": 1.0}),
    "mae": ("mae_avg", "vit_base_patch16_224.mae", {**IMAGENET, "crop_pct": 0.9}),
    "clip": ("clip_openai", "vit_base_patch16_clip_224.openai", {**OPENAI_CLIP, "crop_pct": 0.9}),
    "siglip": ("siglip", "vit_base_patch16_siglip_224.webli", {**INCEPTION, "crop_pct": 0.9}),
}


def write_standin(root: Path, name: str, *, seed: int = 0) -> Path:
    """``root/name``: the stand-in checkpoint folder (``model.safetensors`` + ``config.json``)."""
    family, _, pixels = STANDINS[name]
    folder, _ = write_timm_family(root / name, family, seed=seed)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(interpolation="bicubic", crop_mode="center", **pixels)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_standins(root: Path, names: tuple[str, ...] = tuple(STANDINS)) -> dict[str, Path]:
    """Every stand-in (or ``names``) under ``root``."""
    return {name: write_standin(root, name, seed=i) for i, name in enumerate(names)}


if __name__ == "__main__":  # python -m tests.support.family_standins OUT: for the README
    import sys

    for name, folder in write_standins(Path(sys.argv[1])).items():
        print(name, folder)
