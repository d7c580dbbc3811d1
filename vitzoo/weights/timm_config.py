"""What a timm checkpoint's ``config.json`` says that its arrays cannot: numerics, heads, pooling.

timm publishes every ViT family (AugReg, DeiT, DeiT III, DINO, DINOv2, MAE, CLIP, SigLIP) as
``model.safetensors`` + ``config.json`` (``timm/models/_hub.py``). The arrays show the structure
(tokens, layer scale, pre-norm, MAP head...); the configuration names the architecture and the
weights' tag, from which the numerics follow, because timm fixes them per entry point in
``timm/models/vision_transformer.py``:

* LayerNorm epsilon 1e-5 for the ``*_clip_*`` entry points (``norm_layer=partial(LayerNorm,
  eps=1e-5)``), 1e-6 for every other ViT;
* activation: quick GELU for OpenAI's CLIP weights (tag ``openai*``, or a ``*_clip_quickgelu_*``
  entry point: timm's notes say "natively QuickGELU"); tanh GELU for weights trained in JAX by
  Google (``*siglip*`` entry points, AugReg / original / SAM tags: vit_jax's numerics); exact
  GELU for the PyTorch-trained rest (DeiT, DeiT III, DINO, DINOv2, MAE, LAION CLIP);
* a ``model_args`` entry (newer timm, and vitzoo's own exports) states ``act_layer``,
  ``num_heads``, ``no_embed_class`` and ``global_pool`` outright and wins over the above;
* a catalog name whose Hub repo is another name's wins over the file: the resolver passes
  the row's activation and epsilon (``numerics=`` of
  :func:`vitzoo.weights.timm.load_timm_safetensors`), since a ``*_quickgelu_*`` name loads its
  plain twin's repo, whose ``config.json`` says exact GELU. Every other catalog name runs what
  its own ``config.json`` implies (the training numerics, even where timm builds otherwise).

A file without a ``config.json`` is read as before: vit_jax numerics (a Google release).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitzoo.errors import VitzooError

CONFIG_FILE = "config.json"
#: Tags of weights Google trained in JAX (vit_jax / big_vision numerics: tanh GELU).
GOOGLE_TAGS = ("augreg", "orig_in21k", "sam")
#: timm's ``act_layer`` names for vitzoo's activation switch values.
TIMM_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}
#: timm ``global_pool`` -> vitzoo ``classifier``.
POOLS = {"token": "token", "avg": "gap", "map": "map"}
#: Attention heads of the ViT widths these families use (timm/models/vision_transformer.py
#: and deit.py entry points: head width 64, except 1152 (SO400M), 1280 (H), 1408 (g/14),
#: 1536 (SigLIP giant-opt) and 1664 (CLIP bigG/14)). q/k/v are fused in timm's layout, so the
#: count is not in the shapes; Hub config.json files rarely state it (``model_args``).
HEADS_BY_WIDTH = {192: 3, 256: 4, 384: 6, 512: 8, 640: 10, 768: 12, 896: 14, 1024: 16,
                  1152: 16, 1280: 16, 1408: 16, 1536: 16, 1664: 16}


def read_timm_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A timm ``config.json`` as a dict; a one-line error if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VitzooError(f"{path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VitzooError(f"{path} is not a readable timm config.json ({exc})",
                          "re-download it, or delete it to read the weights as a Google release"
                          ) from None
    if not isinstance(data, dict):
        raise VitzooError(f"{path} is not a timm config.json (not a JSON object)",
                          "re-download it from the checkpoint's repository")
    return data


def config_beside(weights: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` next to a ``.safetensors`` file (a timm folder, a Hub snapshot), if any."""
    path = Path(weights).with_name(CONFIG_FILE)
    return read_timm_config(path) if path.is_file() else None


def _tag(cfg: Mapping[str, Any]) -> str:
    pretrained = cfg.get("pretrained_cfg") or {}
    return str(pretrained.get("tag") or "")


def model_args(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((cfg or {}).get("model_args") or {})


def architecture(cfg: Mapping[str, Any] | None) -> str:
    return str((cfg or {}).get("architecture") or "")


def numerics(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"activation": ..., "layer_norm_eps": ...}`` for a timm configuration (see module doc)."""
    if cfg is None:
        return {"activation": "gelu_tanh", "layer_norm_eps": 1e-6}
    arch, tag = architecture(cfg), _tag(cfg)
    clip = "_clip_" in arch
    act = model_args(cfg).get("act_layer")
    if act is not None:
        if act not in TIMM_ACTIVATIONS:
            raise VitzooError(f"timm config.json has act_layer {act!r}, which vitzoo does not run",
                              f"supported: {', '.join(TIMM_ACTIVATIONS)}")
        activation = TIMM_ACTIVATIONS[act]
    elif "quickgelu" in arch or (clip and tag.startswith("openai")):
        activation = "quick_gelu"
    elif "siglip" in arch or tag.startswith(GOOGLE_TAGS):
        activation = "gelu_tanh"
    else:
        activation = "gelu"
    return {"activation": activation, "layer_norm_eps": 1e-5 if clip else 1e-6}


def pooling(cfg: Mapping[str, Any] | None) -> str | None:
    """vitzoo's ``classifier`` for the configuration's ``global_pool``; None if it has none."""
    if cfg is None:
        return None
    pool = model_args(cfg).get("global_pool", cfg.get("global_pool"))
    if pool in (None, ""):
        return None
    if pool not in POOLS:
        raise VitzooError(f"timm config.json pools with {pool!r}, which vitzoo does not run",
                          f"supported global_pool values: {', '.join(POOLS)}")
    return POOLS[pool]


def num_heads(cfg: Mapping[str, Any] | None, width: int) -> int | None:
    """The configuration's ``model_args.num_heads``, else timm's count for this width, else None."""
    heads = model_args(cfg).get("num_heads")
    if heads is not None:
        return int(heads)
    return HEADS_BY_WIDTH.get(width)


def no_embed_class(cfg: Mapping[str, Any] | None) -> bool | None:
    """``model_args.no_embed_class`` if stated, else what the entry point implies, else None.

    Only consulted when the position embedding's length fits both readings.
    """
    stated = model_args(cfg).get("no_embed_class")
    if stated is not None:
        return bool(stated)
    arch = architecture(cfg)
    if not arch:
        return None
    return arch.startswith("deit3") or ("_reg" in arch and "dinov2" in arch)
