"""Conversion between the release ``.npz`` layout and timm state dicts, without torch.

The mapping follows timm's own npz loader (``vision_transformer._load_weights``; the
name tables are in ``docs/CHECKPOINT_LAYOUT.md``), so a release file converted here loads
into timm exactly as the ``.npz`` would, and a timm ``.safetensors`` file (e.g. from the
Hugging Face hub) loads into vitzoo. Numbers are moved, never changed: convs HWIO <->
OIHW, dense kernels transposed, q/k/v fused into ``qkv``, GroupNorm ``[1,1,1,C]`` <-> ``[C]``.

Numerics differ slightly between the two libraries for the same weights (timm uses exact
GELU; its hybrids use StdConv eps 1e-8 inside the sqrt and GroupNorm eps 1e-5, vit_jax
1e-5 added to the std and 1e-6); vitzoo always runs the vit_jax numerics the weights
were trained with.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError
from vitzoo.models.configs import (
    CONFIGS,
    HEAD_FIELDS,
    RESNET_WIDTH,
    ModelConfig,
    infer_config,
    match_table_name,
)
from vitzoo.text import and_more
from vitzoo.weights.release import switch_arrays
from vitzoo.weights.timm_config import config_beside
from vitzoo.weights.timm_config import num_heads as timm_heads
from vitzoo.weights.timm_config import numerics as timm_numerics
from vitzoo.weights.timm_config import pooling as timm_config_pooling

Flat = dict[str, np.ndarray]

_ENC = "Transformer/encoderblock_{i}"
_HEADS = ("head", "head_dist")
_ATT = "MultiHeadDotProductAttention_1"


def _conv_to_timm(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))  # HWIO -> OIHW


def _conv_from_timm(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))  # OIHW -> HWIO


def _finish_to_timm(f: Mapping[str, Any], out: dict, norm: str, what: str) -> Flat:
    """Final norm and (optional) head, then float32 contiguous arrays: shared by ViT and Mixer."""
    out["norm.weight"] = need_array(f, f"{norm}/scale", what)
    out["norm.bias"] = need_array(f, f"{norm}/bias", what)
    return _finish_heads(f, out, what)


def _finish_heads(f: Mapping[str, Any], out: dict, what: str) -> Flat:
    """The heads (``head``, DeiT's ``head_dist``) if present, then float32 contiguous arrays."""
    for head in _HEADS:
        if f"{head}/kernel" in f:
            out[f"{head}.weight"] = f[f"{head}/kernel"].T
            out[f"{head}.bias"] = need_array(f, f"{head}/bias", what)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _finish_from_timm(take: StateReader, out: dict, norm: str | None) -> Flat:
    """The inverse of :func:`_finish_to_timm` (``norm`` None: no final norm); refuses any
    timm key left unused."""
    if norm is not None:
        out[f"{norm}/scale"] = take("norm.weight")
        out[f"{norm}/bias"] = take("norm.bias")
    for head in _HEADS:
        if f"{head}.weight" in take:
            out[f"{head}/kernel"] = take(f"{head}.weight").T
            out[f"{head}/bias"] = take(f"{head}.bias")
    take.refuse_unused("is it a ViT variant vitzoo does not run (see the family switches of "
                       "vitzoo.models.configs.ModelConfig)?")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _backbone_names(config: ModelConfig) -> list[tuple[str, str, str]]:
    """(release module, timm module, kind) for every ResNet conv/norm; kind 'conv'|'gn'."""
    if config.resnet_blocks is None:
        return []
    root = "patch_embed.backbone." if not config.resnet_blocks else "patch_embed.backbone.stem."
    names = [("conv_root", f"{root}conv", "conv"), ("gn_root", f"{root}norm", "gn")]
    for s, units in enumerate(config.resnet_blocks, start=1):
        for u in range(1, units + 1):
            src = f"block{s}/unit{u}"
            dst = f"patch_embed.backbone.stages.{s - 1}.blocks.{u - 1}"
            for r in (1, 2, 3):
                names += [(f"{src}/conv{r}", f"{dst}.conv{r}", "conv"),
                          (f"{src}/gn{r}", f"{dst}.norm{r}", "gn")]
            if u == 1:
                names += [(f"{src}/conv_proj", f"{dst}.downsample.conv", "conv"),
                          (f"{src}/gn_proj", f"{dst}.downsample.norm", "gn")]
    return names


def need_array(src: Mapping[str, Any], key: str, what: str) -> np.ndarray:
    """``src[key]`` as an array, or an error naming the missing key (shared by the converters)."""
    try:
        return np.asarray(src[key])
    except KeyError:
        raise VitzooError(f"{what} has no {key!r}",
                          "the file does not match the architecture; check --arch") from None


class StateReader:
    """Reads a foreign state dict key by key and refuses, by name, any key left unread.

    Unknown keys mean a different architecture (e.g. a pooler or an fc_norm variant), so
    they are reported instead of silently dropped.
    """

    def __init__(self, state: Mapping[str, Any], what: str) -> None:
        self.state = {k: np.asarray(v) for k, v in state.items()}
        self.what = what
        self.used: set[str] = set()

    def __call__(self, key: str) -> np.ndarray:
        self.used.add(key)
        return need_array(self.state, key, self.what)

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def refuse_unused(self, hint: str) -> None:
        extra = sorted(set(self.state) - self.used)
        if extra:
            raise VitzooError(f"{self.what} has keys vitzoo cannot place: {and_more(extra)}", hint)


def release_to_timm(flat: Mapping[str, Any], config: ModelConfig) -> Flat:
    """A release-layout checkpoint as a timm ``VisionTransformer`` / ``MlpMixer`` state dict."""
    if config.family == "mixer":
        return _mixer_to_timm(flat, config)
    if "pre_logits/kernel" in flat:
        raise VitzooError(
            "this checkpoint has a representation (pre_logits) layer, which timm no longer has",
            "drop it first (vitzoo.weights.release.load_for_finetune drops it) and fine-tune a new head")
    f = {k: np.asarray(v) for k, v in flat.items()}
    what = "release checkpoint"
    out: Flat = {}
    for src, dst, kind in _backbone_names(config):
        if kind == "conv":
            out[f"{dst}.weight"] = _conv_to_timm(need_array(f, f"{src}/kernel", what))
        else:
            out[f"{dst}.weight"] = need_array(f, f"{src}/scale", what).reshape(-1)
            out[f"{dst}.bias"] = need_array(f, f"{src}/bias", what).reshape(-1)
    out["patch_embed.proj.weight"] = _conv_to_timm(need_array(f, "embedding/kernel", what))
    if config.patch_bias:
        out["patch_embed.proj.bias"] = need_array(f, "embedding/bias", what)
    for release, timm in _prefix_names(config):
        out[timm] = need_array(f, release, what)
    out["pos_embed"] = need_array(f, "Transformer/posembed_input/pos_embedding", what)
    if config.norm_pre:
        out["norm_pre.weight"] = need_array(f, "Transformer/norm_pre/scale", what)
        out["norm_pre.bias"] = need_array(f, "Transformer/norm_pre/bias", what)
    d = config.hidden_size
    for i in range(config.num_layers):
        b, t = _ENC.format(i=i), f"blocks.{i}"
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{t}.{norm}.weight"] = need_array(f, f"{b}/{ln}/scale", what)
            out[f"{t}.{norm}.bias"] = need_array(f, f"{b}/{ln}/bias", what)
        qkv = ("query", "key", "value")
        out[f"{t}.attn.qkv.weight"] = np.concatenate(
            [need_array(f, f"{b}/{_ATT}/{n}/kernel", what).reshape(d, -1).T for n in qkv])
        out[f"{t}.attn.qkv.bias"] = np.concatenate(
            [need_array(f, f"{b}/{_ATT}/{n}/bias", what).reshape(-1) for n in qkv])
        out[f"{t}.attn.proj.weight"] = need_array(f, f"{b}/{_ATT}/out/kernel", what).reshape(-1, d).T
        out[f"{t}.attn.proj.bias"] = need_array(f, f"{b}/{_ATT}/out/bias", what)
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{t}.mlp.{fc}.weight"] = need_array(f, f"{b}/MlpBlock_3/{dense}/kernel", what).T
            out[f"{t}.mlp.{fc}.bias"] = need_array(f, f"{b}/MlpBlock_3/{dense}/bias", what)
        if config.layer_scale:
            for ls in ("ls1", "ls2"):
                out[f"{t}.{ls}.gamma"] = need_array(f, f"{b}/{ls}", what)
    if config.classifier == "map":
        _map_to_timm(f, out, config, what)
    if config.fc_norm:
        out["fc_norm.weight"] = need_array(f, "fc_norm/scale", what)
        out["fc_norm.bias"] = need_array(f, "fc_norm/bias", what)
        return _finish_heads(f, out, what)
    return _finish_to_timm(f, out, "Transformer/encoder_norm", what)


def _prefix_names(config: ModelConfig) -> list[tuple[str, str]]:
    """(release, timm) names of the prefix tokens this model has."""
    names = [("cls", "cls_token")] if config.has_class_token else []
    if config.distilled:
        names.append(("dist", "dist_token"))
    if config.num_registers:
        names.append(("reg", "reg_token"))
    return names


_MAP = "MAPHead_0"
_MAP_ATT = f"{_MAP}/MultiHeadDotProductAttention_0"


def _map_to_timm(f: Mapping[str, Any], out: dict, config: ModelConfig, what: str) -> None:
    """big_vision's ``MAPHead_0`` as timm's ``attn_pool`` (``AttentionPoolLatent``)."""
    d = config.hidden_size
    out["attn_pool.latent"] = need_array(f, f"{_MAP}/probe", what)
    out["attn_pool.q.weight"] = need_array(f, f"{_MAP_ATT}/query/kernel", what).reshape(d, -1).T
    out["attn_pool.q.bias"] = need_array(f, f"{_MAP_ATT}/query/bias", what).reshape(-1)
    out["attn_pool.kv.weight"] = np.concatenate(
        [need_array(f, f"{_MAP_ATT}/{n}/kernel", what).reshape(d, -1).T for n in ("key", "value")])
    out["attn_pool.kv.bias"] = np.concatenate(
        [need_array(f, f"{_MAP_ATT}/{n}/bias", what).reshape(-1) for n in ("key", "value")])
    out["attn_pool.proj.weight"] = need_array(f, f"{_MAP_ATT}/out/kernel", what).reshape(-1, d).T
    out["attn_pool.proj.bias"] = need_array(f, f"{_MAP_ATT}/out/bias", what)
    out["attn_pool.norm.weight"] = need_array(f, f"{_MAP}/LayerNorm_0/scale", what)
    out["attn_pool.norm.bias"] = need_array(f, f"{_MAP}/LayerNorm_0/bias", what)
    for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        out[f"attn_pool.mlp.{fc}.weight"] = need_array(f, f"{_MAP}/MlpBlock_0/{dense}/kernel", what).T
        out[f"attn_pool.mlp.{fc}.bias"] = need_array(f, f"{_MAP}/MlpBlock_0/{dense}/bias", what)


def _map_from_timm(take: StateReader, out: dict, config: ModelConfig) -> None:
    """The inverse of :func:`_map_to_timm`."""
    d, h = config.hidden_size, config.num_heads
    out[f"{_MAP}/probe"] = take("attn_pool.latent")
    out[f"{_MAP_ATT}/query/kernel"] = take("attn_pool.q.weight").T.reshape(d, h, -1)
    out[f"{_MAP_ATT}/query/bias"] = take("attn_pool.q.bias").reshape(h, -1)
    weights = np.split(take("attn_pool.kv.weight"), 2, axis=0)
    biases = np.split(take("attn_pool.kv.bias"), 2)
    for name, w, bias in zip(("key", "value"), weights, biases, strict=True):
        out[f"{_MAP_ATT}/{name}/kernel"] = w.T.reshape(d, h, -1)
        out[f"{_MAP_ATT}/{name}/bias"] = bias.reshape(h, -1)
    out[f"{_MAP_ATT}/out/kernel"] = take("attn_pool.proj.weight").T.reshape(h, -1, d)
    out[f"{_MAP_ATT}/out/bias"] = take("attn_pool.proj.bias")
    out[f"{_MAP}/LayerNorm_0/scale"] = take("attn_pool.norm.weight")
    out[f"{_MAP}/LayerNorm_0/bias"] = take("attn_pool.norm.bias")
    for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        out[f"{_MAP}/MlpBlock_0/{dense}/kernel"] = take(f"attn_pool.mlp.{fc}.weight").T
        out[f"{_MAP}/MlpBlock_0/{dense}/bias"] = take(f"attn_pool.mlp.{fc}.bias")


def timm_to_release(state: Mapping[str, Any], config: ModelConfig) -> Flat:
    """A timm state dict as a release-layout checkpoint (the inverse of :func:`release_to_timm`).

    Unknown timm keys are refused by name rather than silently dropped.
    """
    if config.family == "mixer":
        return _mixer_from_timm(state, config)
    take = StateReader(state, "timm state dict")
    out: Flat = {}
    for src, dst, kind in _backbone_names(config):
        if kind == "conv":
            out[f"{src}/kernel"] = _conv_from_timm(take(f"{dst}.weight"))
        else:
            out[f"{src}/scale"] = take(f"{dst}.weight").reshape(1, 1, 1, -1)
            out[f"{src}/bias"] = take(f"{dst}.bias").reshape(1, 1, 1, -1)
    out["embedding/kernel"] = _conv_from_timm(take("patch_embed.proj.weight"))
    if config.patch_bias:
        out["embedding/bias"] = take("patch_embed.proj.bias")
    for release, timm in _prefix_names(config):
        out[release] = take(timm)
    out["Transformer/posembed_input/pos_embedding"] = take("pos_embed")
    if config.norm_pre:
        out["Transformer/norm_pre/scale"] = take("norm_pre.weight")
        out["Transformer/norm_pre/bias"] = take("norm_pre.bias")
    d, h = config.hidden_size, config.num_heads
    for i in range(config.num_layers):
        b, t = _ENC.format(i=i), f"blocks.{i}"
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{b}/{ln}/scale"] = take(f"{t}.{norm}.weight")
            out[f"{b}/{ln}/bias"] = take(f"{t}.{norm}.bias")
        weights = np.split(take(f"{t}.attn.qkv.weight"), 3, axis=0)
        biases = np.split(take(f"{t}.attn.qkv.bias"), 3)
        for name, w, bias in zip(("query", "key", "value"), weights, biases, strict=True):
            out[f"{b}/{_ATT}/{name}/kernel"] = w.T.reshape(d, h, -1)
            out[f"{b}/{_ATT}/{name}/bias"] = bias.reshape(h, -1)
        out[f"{b}/{_ATT}/out/kernel"] = take(f"{t}.attn.proj.weight").T.reshape(h, -1, d)
        out[f"{b}/{_ATT}/out/bias"] = take(f"{t}.attn.proj.bias")
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{b}/MlpBlock_3/{dense}/kernel"] = take(f"{t}.mlp.{fc}.weight").T
            out[f"{b}/MlpBlock_3/{dense}/bias"] = take(f"{t}.mlp.{fc}.bias")
        if config.layer_scale:
            for ls in ("ls1", "ls2"):
                out[f"{b}/{ls}"] = take(f"{t}.{ls}.gamma")
    if config.classifier == "map":
        _map_from_timm(take, out, config)
    if config.fc_norm:
        out["fc_norm/scale"] = take("fc_norm.weight")
        out["fc_norm/bias"] = take("fc_norm.bias")
    flat = _finish_from_timm(take, out, None if config.fc_norm else "Transformer/encoder_norm")
    return {**flat, **switch_arrays(config)}


_MIXER_PAIRS = (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2"))
_MIXER_MLPS = (("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels"))


def _mixer_to_timm(flat: Mapping[str, Any], config: ModelConfig) -> Flat:
    f = {k: np.asarray(v) for k, v in flat.items()}
    what = "release checkpoint"
    out: Flat = {"stem.proj.weight": _conv_to_timm(need_array(f, "stem/kernel", what)),
                 "stem.proj.bias": need_array(f, "stem/bias", what)}
    for i in range(config.num_layers):
        b, t = f"MixerBlock_{i}", f"blocks.{i}"
        for ln, norm in _MIXER_PAIRS:
            out[f"{t}.{norm}.weight"] = need_array(f, f"{b}/{ln}/scale", what)
            out[f"{t}.{norm}.bias"] = need_array(f, f"{b}/{ln}/bias", what)
        for mlp, tmlp in _MIXER_MLPS:
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                out[f"{t}.{tmlp}.{fc}.weight"] = need_array(f, f"{b}/{mlp}/{dense}/kernel", what).T
                out[f"{t}.{tmlp}.{fc}.bias"] = need_array(f, f"{b}/{mlp}/{dense}/bias", what)
    return _finish_to_timm(f, out, "pre_head_layer_norm", what)


def _mixer_from_timm(state: Mapping[str, Any], config: ModelConfig) -> Flat:
    take = StateReader(state, "timm state dict")
    out: Flat = {"stem/kernel": _conv_from_timm(take("stem.proj.weight")),
                 "stem/bias": take("stem.proj.bias")}
    for i in range(config.num_layers):
        b, t = f"MixerBlock_{i}", f"blocks.{i}"
        for ln, norm in _MIXER_PAIRS:
            out[f"{b}/{ln}/scale"] = take(f"{t}.{norm}.weight")
            out[f"{b}/{ln}/bias"] = take(f"{t}.{norm}.bias")
        for mlp, tmlp in _MIXER_MLPS:
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                out[f"{b}/{mlp}/{dense}/kernel"] = take(f"{t}.{tmlp}.{fc}.weight").T
                out[f"{b}/{mlp}/{dense}/bias"] = take(f"{t}.{tmlp}.{fc}.bias")
    return _finish_from_timm(take, out, "pre_head_layer_norm")


# --- reading timm files --------------------------------------------------------------

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_STAGE = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")


def guess_config(state: Mapping[str, Any], timm_config: Mapping[str, Any] | None = None,
                 heads: int | None = None, numerics: Mapping[str, Any] | None = None
                 ) -> ModelConfig:
    """The architecture of a timm state dict (and its ``config.json``, when there is one).

    The structure comes from the keys and shapes (class/distillation/register tokens,
    patch bias, pre-norm, layer scale, fc_norm, MAP head); the numerics, the pooling and the
    head count from ``timm_config`` (:mod:`vitzoo.weights.timm_config`). timm fuses q/k/v, so
    the number of heads is not in the shapes: ``heads`` when given, else the configuration's
    (or timm's usual count for the width), else the table entry with the same widths, depth,
    patch and ResNet blocks. ``numerics`` (``activation``, ``layer_norm_eps``) wins over what
    the configuration implies: the catalog knows which model a name builds when the file's
    ``config.json`` belongs to a twin (:func:`vitzoo.catalog.families.numerics`).
    """
    depth = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    if "stem.proj.weight" in state:
        d, _, p, _ = np.shape(state["stem.proj.weight"])
        t = np.shape(state["blocks.0.mlp_tokens.fc1.weight"])[0]
        c = np.shape(state["blocks.0.mlp_channels.fc1.weight"])[0]
        found = ModelConfig(name="", family="mixer", hidden_size=d, mlp_dim=c, num_layers=depth,
                            patch_size=p, tokens_mlp_dim=t, classifier="gap")
        return _named(found, compare_heads=False)
    if "patch_embed.proj.weight" not in state:
        raise VitzooError("not a timm ViT / hybrid / Mixer state dict (no patch_embed.proj.weight)",
                          "convert only vision_transformer(_hybrid) or mlp_mixer checkpoints")
    _refuse_swiglu(state)
    d, _, p, _ = np.shape(state["patch_embed.proj.weight"])
    mlp = np.shape(state["blocks.0.mlp.fc1.weight"])[0]
    blocks: tuple[int, ...] | None = None
    if any(k.startswith("patch_embed.backbone.") for k in state):
        units: dict[int, set[int]] = {}
        for k in state:
            if m := _STAGE.match(k):
                units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        blocks = tuple(len(units[s]) for s in sorted(units))
        root = "patch_embed.backbone.stem.conv.weight" if blocks else \
            "patch_embed.backbone.conv.weight"
        width = int(np.shape(state[root])[0]) if root in state else RESNET_WIDTH
    has_cls = "cls_token" in state
    classifier = "map" if "attn_pool.latent" in state else timm_config_pooling(timm_config)
    if classifier is None:
        classifier = "gap" if "fc_norm.weight" in state or not has_cls else "token"
    found = ModelConfig(
        name="", family="vit" if blocks is None else "hybrid", hidden_size=d,
        mlp_dim=mlp, num_layers=depth, patch_size=p, resnet_blocks=blocks,
        resnet_width=width if blocks is not None else RESNET_WIDTH, classifier=classifier,
        class_token=None if has_cls == (classifier == "token") else has_cls,
        distilled="dist_token" in state,
        num_registers=int(np.shape(state["reg_token"])[1]) if "reg_token" in state else 0,
        patch_bias="patch_embed.proj.bias" in state, norm_pre="norm_pre.weight" in state,
        layer_scale="blocks.0.ls1.gamma" in state, fc_norm="fc_norm.weight" in state,
        **{**timm_numerics(timm_config), **(numerics or {})})
    found = replace(found, no_embed_class=_no_embed_class(state, found, timm_config))
    structure = found.switches().keys() - {"activation", "layer_norm_eps", "no_embed_class"}
    if timm_config is None and not numerics and structure:
        raise VitzooError(
            f"this timm checkpoint has {', '.join(sorted(structure))} (a DeiT / DINOv2 / CLIP / "
            "SigLIP-style ViT) but no config.json, which tells its activation and LayerNorm eps",
            "put the checkpoint's config.json (from its Hub repository) beside model.safetensors")
    if heads is None and (found.switches() or timm_config is not None):
        heads = timm_heads(timm_config, d)
    if heads is not None:
        if d % heads:
            raise VitzooError(f"this timm checkpoint is {d} wide, which {heads} attention heads "
                              "do not divide", "check the architecture given (arch=...), or put "
                              "its config.json (model_args.num_heads) beside the weights")
        return replace(found, name=_describe_timm(found, timm_config), num_heads=heads)
    return _named(found, compare_heads=True)


def _describe_timm(config: ModelConfig, timm_config: Mapping[str, Any] | None) -> str:
    """The table name of a plain file, else timm's architecture name, else a description."""
    from vitzoo.weights.timm_config import architecture

    if not config.switches():
        name = match_table_name(config, HEAD_FIELDS | {"num_heads"})
        if name is not None:
            return name
    return architecture(timm_config) or "custom timm ViT"


def _refuse_swiglu(state: Mapping[str, Any]) -> None:
    """DINOv2 giant's SwiGLU MLP (fc1 packs value and gate) is not a switch of this model."""
    fc1, fc2 = "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight"
    packed = fc1 in state and fc2 in state and \
        np.shape(state[fc1])[0] == 2 * np.shape(state[fc2])[1]
    if packed or "blocks.0.mlp.fc1_g.weight" in state or "blocks.0.mlp.w12.weight" in state:
        raise VitzooError("this timm checkpoint has a SwiGLU MLP (DINOv2 giant), which vitzoo "
                          "does not run", "use a DINOv2 small, base or large checkpoint")


def _no_embed_class(state: Mapping[str, Any], config: ModelConfig,
                    timm_config: Mapping[str, Any] | None) -> bool:
    """Whether the position embedding leaves out the prefix tokens, read off its length."""
    from vitzoo.weights.timm_config import no_embed_class

    length = int(np.shape(state["pos_embed"])[1]) if "pos_embed" in state else 0
    prefix = config.num_prefix_tokens
    fits = [flag for flag in (False, True)
            if _is_square(length - (0 if flag else prefix))]
    if len(fits) == 1:
        return fits[0]
    stated = no_embed_class(timm_config)
    return bool(stated) if stated is not None else False


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _named(found: ModelConfig, *, compare_heads: bool) -> ModelConfig:
    name = match_table_name(found, HEAD_FIELDS | {"num_heads"})
    if name is not None:
        return replace(found, name=name, num_heads=CONFIGS[name].num_heads)
    if compare_heads:
        raise VitzooError(
            "cannot tell the number of attention heads of this timm checkpoint "
            f"(width {found.hidden_size}, {found.num_layers} layers, patch {found.patch_size}; "
            "no table architecture matches)",
            "put timm's config.json beside the weights (its model_args.num_heads), or pass "
            "the architecture explicitly (arch='S/16', or a ModelConfig)")
    return replace(found, name="custom Mixer")


def load_timm_safetensors(
    path: str | os.PathLike[str], arch: str | ModelConfig | None = None,
    timm_config: Mapping[str, Any] | None = None, numerics: Mapping[str, Any] | None = None,
) -> Flat:
    """Read a timm ``.safetensors`` file as a flat release-layout checkpoint.

    ``timm_config`` is its ``config.json`` (default: the one beside the file, if any: a timm
    folder or a Hub snapshot), which gives the numerics of the non-AugReg families
    (:mod:`vitzoo.weights.timm_config`); they are recorded in the result. ``arch`` (a name
    or config) gives the head count for custom widths; the result is checked with
    :func:`vitzoo.models.infer_config`, so a wrong ``arch`` is reported. ``numerics``
    overrides the activation and LayerNorm epsilon (see :func:`guess_config`).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(os.fspath(path))
    except FileNotFoundError:
        raise VitzooError(f"{path} does not exist", "check the path") from None
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise VitzooError(f"{path} is not a readable safetensors file ({exc})",
                          "re-download it; bfloat16 files must be converted to float32 first"
                          ) from None
    if timm_config is None:
        timm_config = config_beside(path)
    if isinstance(arch, ModelConfig):
        config = arch
    elif arch is not None:
        from vitzoo.models.configs import get_config

        config = guess_config(state, timm_config, heads=get_config(arch).num_heads,
                              numerics=numerics)
    else:
        config = guess_config(state, timm_config, numerics=numerics)
    flat = timm_to_release(state, config)
    infer_config(flat, None if arch is None or isinstance(arch, ModelConfig) else arch)
    return flat


def load_timm_folder(folder: str | os.PathLike[str], arch: str | ModelConfig | None = None
                     ) -> Flat:
    """A timm checkpoint folder (``model.safetensors`` + ``config.json``) as release arrays."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise VitzooError(f"{folder} has no model.safetensors, so it is not a timm checkpoint folder",
                          "give a folder as timm or the Hugging Face Hub write it "
                          "(model.safetensors + config.json)")
    return load_timm_safetensors(weights, arch)
