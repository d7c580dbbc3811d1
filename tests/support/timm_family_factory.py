"""Tiny randomly initialised ViTs of every family, in timm's layout, written without torch.

Each family is described the way timm's entry points build it (``timm/models/
vision_transformer.py``, ``deit.py``): the constructor arguments that differ between the
families (class token, distillation token, registers, ``no_embed_class``, ``pre_norm`` and the
patch bias it removes, ``init_values`` for layer scale, ``global_pool`` / ``fc_norm``, the
activation and LayerNorm epsilon). :func:`timm_family_state` lays out the state dict with
timm's key names and shapes (``nn.Linear`` weights ``[out, in]``, fused ``qkv``, OIHW patch
conv) using NumPy only; :func:`write_timm_family` adds a ``config.json`` as timm's
``save_config_for_hf`` writes it (architecture, tag, global_pool, pretrained_cfg and the
model_args of the size), so the loader sees what it sees on the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TimmFamily:
    """One family's timm constructor arguments (timm's names) and its Hub architecture/tag."""

    architecture: str
    tag: str
    num_classes: int = 0
    class_token: bool = True
    distilled: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False
    pre_norm: bool = False
    layer_scale: bool = False
    global_pool: str = "token"
    fc_norm: bool = False
    act: str = "gelu"  # gelu | gelu_tanh | quick_gelu, as timm's act_layer names them
    eps: float = 1e-6
    patch: int = 8
    image: int = 32


FAMILIES: dict[str, TimmFamily] = {
    "deit": TimmFamily("deit_tiny_patch16_224", "fb_in1k", num_classes=5),
    "deit_distilled": TimmFamily("deit_tiny_distilled_patch16_224", "fb_in1k", num_classes=5,
                                 distilled=True),
    "deit3": TimmFamily("deit3_small_patch16_224", "fb_in1k", num_classes=5, no_embed_class=True,
                        layer_scale=True),
    "dino": TimmFamily("vit_small_patch16_224", "dino"),
    "dinov2": TimmFamily("vit_small_patch14_dinov2", "lvd142m", layer_scale=True, patch=14,
                         image=42),
    "dinov2_reg": TimmFamily("vit_small_patch14_reg4_dinov2", "lvd142m", reg_tokens=4,
                             no_embed_class=True, layer_scale=True, patch=14, image=42),
    "mae": TimmFamily("vit_base_patch16_224", "mae"),
    "mae_avg": TimmFamily("vit_base_patch16_224", "mae", num_classes=5, global_pool="avg",
                          fc_norm=True),
    "clip_openai": TimmFamily("vit_base_patch16_clip_224", "openai", num_classes=6, pre_norm=True,
                              act="quick_gelu", eps=1e-5),
    "clip_laion": TimmFamily("vit_base_patch16_clip_224", "laion2b", num_classes=6, pre_norm=True,
                             eps=1e-5),
    "siglip": TimmFamily("vit_base_patch16_siglip_224", "webli", class_token=False,
                         global_pool="map", act="gelu_tanh"),
}


def timm_family_state(family: TimmFamily, *, seed: int = 0, hidden: int = 32, depth: int = 2,
                      heads: int = 4, mlp: int = 64) -> dict[str, np.ndarray]:
    """A random float32 state dict with timm's names and shapes for ``family``.

    Norm scales are drawn around 1 and every other array around 0 with enough spread that
    each switch changes the output visibly (layer scales of order 1, not timm's 1e-5 init).
    """
    rng = np.random.default_rng(seed)
    d, p = hidden, family.patch

    def normal(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(name: str, width: int = d) -> dict[str, np.ndarray]:
        return {f"{name}.weight": (1 + normal(width, scale=0.1)).astype(np.float32),
                f"{name}.bias": normal(width, scale=0.1)}

    def linear(name: str, out: int, inp: int, scale: float = 0.2) -> dict[str, np.ndarray]:
        return {f"{name}.weight": normal(out, inp, scale=scale), f"{name}.bias": normal(out)}

    grid = family.image // p
    prefix = int(family.class_token) + int(family.distilled) + family.reg_tokens
    sd: dict[str, np.ndarray] = {"patch_embed.proj.weight": normal(d, 3, p, p, scale=0.05)}
    if not family.pre_norm:  # timm: PatchEmbed(bias=not pre_norm)
        sd["patch_embed.proj.bias"] = normal(d)
    if family.class_token:
        sd["cls_token"] = normal(1, 1, d, scale=0.5)
    if family.distilled:
        sd["dist_token"] = normal(1, 1, d, scale=0.5)
    if family.reg_tokens:
        sd["reg_token"] = normal(1, family.reg_tokens, d, scale=0.5)
    sd["pos_embed"] = normal(1, grid * grid + (0 if family.no_embed_class else prefix), d)
    if family.pre_norm:
        sd |= norm("norm_pre")
    for i in range(depth):
        t = f"blocks.{i}"
        sd |= norm(f"{t}.norm1") | norm(f"{t}.norm2")
        sd |= linear(f"{t}.attn.qkv", 3 * d, d) | linear(f"{t}.attn.proj", d, d)
        sd |= linear(f"{t}.mlp.fc1", mlp, d) | linear(f"{t}.mlp.fc2", d, mlp)
        if family.layer_scale:
            sd[f"{t}.ls1.gamma"] = (0.5 + normal(d, scale=0.3)).astype(np.float32)
            sd[f"{t}.ls2.gamma"] = (0.5 + normal(d, scale=0.3)).astype(np.float32)
    if family.fc_norm:  # timm: norm is Identity when fc_norm is used
        sd |= norm("fc_norm")
    else:
        sd |= norm("norm")
    if family.global_pool == "map":
        sd["attn_pool.latent"] = normal(1, 1, d, scale=0.5)
        sd |= linear("attn_pool.q", d, d) | linear("attn_pool.kv", 2 * d, d)
        sd |= linear("attn_pool.proj", d, d) | norm("attn_pool.norm")
        sd |= linear("attn_pool.mlp.fc1", mlp, d) | linear("attn_pool.mlp.fc2", d, mlp)
    if family.num_classes:
        sd |= linear("head", family.num_classes, d, scale=0.5)
        if family.distilled:
            sd |= linear("head_dist", family.num_classes, d, scale=0.5)
    return sd


def timm_config_json(family: TimmFamily, *, hidden: int = 32, depth: int = 2, heads: int = 4,
                     mlp: int = 64) -> dict:
    """``config.json`` as timm writes it: architecture, tag, pooling and the size's model_args.

    The family-defining arguments are left to the architecture name and tag, as on the Hub.
    """
    return {
        "architecture": family.architecture,
        "num_classes": family.num_classes,
        "num_features": hidden,
        "global_pool": family.global_pool,
        "model_args": {"img_size": family.image, "patch_size": family.patch, "embed_dim": hidden,
                       "depth": depth, "num_heads": heads, "mlp_ratio": mlp / hidden},
        "pretrained_cfg": {
            "tag": family.tag, "custom_load": False, "input_size": [3, family.image, family.image],
            "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": 1.0,
            "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "num_classes": family.num_classes, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head",
        },
    }


def write_timm_family(folder: Path, name: str, *, seed: int = 0, **sizes: int
                      ) -> tuple[Path, dict[str, np.ndarray]]:
    """Write ``FAMILIES[name]`` as ``folder/model.safetensors`` + ``folder/config.json``."""
    from safetensors.numpy import save_file

    family = FAMILIES[name]
    state = timm_family_state(family, seed=seed, **sizes)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    config = timm_config_json(family, **sizes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder, state
