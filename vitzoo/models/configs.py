"""Model configurations, and architecture inference from a checkpoint's own shapes.

:data:`CONFIGS` is derived from the architecture registry (:mod:`vitzoo.arch_registry`,
the one place that knows the hyper-parameters of every network of the zoo); a
:class:`ModelConfig` adds what a model builder needs. Pure Python on purpose: the
catalog and the CLI import it without paying for jax.

A checkpoint also describes itself: widths, depth, heads, patch size, ResNet blocks,
class count and token count can all be read off the array shapes. :func:`infer_config`
does that, so a user's own fine-tune loads without knowing its name.

The other ViT families timm serves (DeiT, DeiT III, DINO, DINOv2, MAE, CLIP, SigLIP) are the
same network with a few switches (:data:`SWITCH_FIELDS`, named after timm's arguments). Most
show in the arrays (a ``dist`` token, ``reg`` tokens, layer-scale ``ls1``, a ``MAPHead_0``...);
the numerics do not (activation, LayerNorm epsilon, whether the position embedding covers the
prefix tokens), so a file records those in small ``vitzoo_config/*`` arrays
(:func:`recorded_switches`) that travel with every ``.npz`` vitzoo writes. Defaults are
vit_jax's, so an AugReg file has no such array and the same config as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from vitzoo.arch_registry import ARCHITECTURES, Architecture, Family
from vitzoo.errors import VitzooError
from vitzoo.names import canonical_arch

#: The MLP non-linearities (:func:`vitzoo.models.layers.activation`): vit_jax's tanh
#: approximation (AugReg, SigLIP), exact erf GELU (PyTorch-trained: DeiT, DINO, DINOv2, MAE,
#: LAION CLIP) and OpenAI CLIP's quick GELU x*sigmoid(1.702x).
Activation = Literal["gelu_tanh", "gelu", "quick_gelu"]
ACTIVATIONS: tuple[str, ...] = ("gelu_tanh", "gelu", "quick_gelu")

#: Root width of every ResNet stem in the zoo (64 x width_factor 1).
RESNET_WIDTH = 64
#: Stride of the hybrid stem alone: the 7x7/2 root conv and the 3x3/2 max-pool.
STEM_STRIDE = 4


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the parameter shapes of one architecture.

    ``patch_size`` is the size of the ``embedding`` (ViT/hybrid) or ``stem`` (Mixer)
    convolution; for hybrids it acts on the ResNet feature map, so the effective
    stride on the image is :attr:`stride`. ``resnet_blocks`` is ``None`` for plain
    models, ``()`` for the stem-only ``R+Ti/16`` and the units per stage otherwise.
    ``mlp_dim`` is the channel-MLP width of Mixer blocks; ``tokens_mlp_dim`` only
    exists for Mixer.
    """

    name: str
    family: Family
    hidden_size: int
    mlp_dim: int
    num_layers: int
    patch_size: int
    num_heads: int = 0
    resnet_blocks: tuple[int, ...] | None = None
    resnet_width: int = RESNET_WIDTH
    classifier: Literal["token", "gap", "map"] = "token"
    representation_size: int | None = None
    tokens_mlp_dim: int | None = None
    # --- switches of the other ViT families (defaults: vit_jax, i.e. AugReg) ---------
    #: A class token; None: iff ``classifier == "token"`` (so MAE-style "gap" may keep one).
    class_token: bool | None = None
    #: DeiT's distillation token and second head ``head_dist`` (logits: mean of both heads).
    distilled: bool = False
    #: DINOv2's register tokens (after the class token, dropped by every pooling).
    num_registers: int = 0
    #: The position embedding covers the patches only, added before the prefix tokens are
    #: prepended (timm ``no_embed_class``: DeiT III, DINOv2 with registers).
    no_embed_class: bool = False
    #: The patch embedding has a bias (CLIP's has none).
    patch_bias: bool = True
    #: A LayerNorm before the blocks (timm ``pre_norm``: CLIP).
    norm_pre: bool = False
    #: Per-channel scales on both residual branches (timm ``init_values``: DeiT III, DINOv2).
    layer_scale: bool = False
    #: No final norm; a LayerNorm after pooling instead (timm ``fc_norm``: MAE-style "gap").
    fc_norm: bool = False
    activation: Activation = "gelu_tanh"
    layer_norm_eps: float = 1e-6

    @property
    def stride(self) -> int:
        """Pixels per token side on the input image."""
        if self.resnet_blocks is None:
            return self.patch_size
        stages = len(self.resnet_blocks)
        return STEM_STRIDE * 2 ** max(stages - 1, 0) * self.patch_size

    @property
    def has_class_token(self) -> bool:
        if self.family == "mixer":
            return False
        return self.classifier == "token" if self.class_token is None else self.class_token

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: class, distillation, registers (timm's order)."""
        return int(self.has_class_token) + int(self.distilled) + self.num_registers

    @property
    def posemb_prefix_tokens(self) -> int:
        """Prefix tokens that have a position embedding (none with ``no_embed_class``)."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    def pooled_representation(self) -> str:
        """The vector the head reads (``outputs=True``'s ``pre_logits``), in words.

        What a linear probe of this family uses: the class token (AugReg, DeiT, DINO,
        DINOv2, MAE, CLIP), DeiT's mean of class and distillation tokens, SigLIP's MAP output,
        or the mean of the patch tokens (with ``fc_norm`` for MAE-style models).
        """
        if self.distilled:
            return "mean of the class and distillation tokens after the final LayerNorm"
        if self.classifier == "map":
            return "attention-pooled (MAP head) output of the patch tokens"
        if self.classifier == "gap":
            norm = "then fc_norm" if self.fc_norm else "after the final LayerNorm"
            return f"mean of the patch tokens, {norm}"
        return "class token after the final LayerNorm"

    def switches(self) -> dict[str, Any]:
        """The family switches that differ from vit_jax's (empty for AugReg and the zoo)."""
        return {name: getattr(self, name) for name, default in SWITCH_DEFAULTS.items()
                if getattr(self, name) != default}

    def grid(self, resolution: int) -> int:
        """Tokens per side at ``resolution`` pixels; refuses a resolution the stride doesn't divide."""
        if resolution <= 0 or resolution % self.stride:
            raise VitzooError(
                f"resolution {resolution} is not a multiple of {self.name}'s stride {self.stride}",
                f"use a resolution divisible by {self.stride}, e.g. "
                f"{max(1, round(max(resolution, 1) / self.stride)) * self.stride}",
            )
        return resolution // self.stride

    def num_tokens(self, resolution: int) -> int:
        """Length of the position embedding at ``resolution`` (prefix tokens it covers included)."""
        return self.grid(resolution) ** 2 + self.posemb_prefix_tokens

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the network (everything except the name)."""
        return {k: v for k, v in asdict(self).items() if k != "name"}


def _config(arch: Architecture) -> ModelConfig:
    return ModelConfig(
        name=arch.name, family=arch.family, hidden_size=arch.hidden, mlp_dim=arch.mlp,
        num_layers=arch.layers, patch_size=arch.patch, num_heads=arch.heads,
        resnet_blocks=arch.resnet_blocks, tokens_mlp_dim=arch.tokens_mlp,
        classifier="gap" if arch.family == "mixer" else "token")


#: The family switches and their vit_jax defaults (the fields after ``tokens_mlp_dim``).
SWITCH_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(ModelConfig)
    if f.name in ("class_token", "distilled", "num_registers", "no_embed_class", "patch_bias",
                  "norm_pre", "layer_scale", "fc_norm", "activation", "layer_norm_eps")}
SWITCH_FIELDS = frozenset(SWITCH_DEFAULTS)
#: Switches the arrays cannot show, recorded as ``vitzoo_config/<name>`` arrays in a file.
RECORDED_SWITCHES = ("activation", "layer_norm_eps", "no_embed_class", "classifier")
SWITCH_PREFIX = "vitzoo_config/"


def implied_classifier(flat: Mapping[str, Any]) -> str:
    """The pooling the arrays suggest: MAP head, else mean (fc_norm or no class token), else token."""
    if "MAPHead_0/probe" in flat:
        return "map"
    if "fc_norm/scale" in flat or "cls" not in flat:
        return "gap"
    return "token"


def recorded_switches(config: ModelConfig) -> dict[str, str | float | bool]:
    """``{name: value}`` of the switches a file of ``config`` must record (non-default only).

    ``classifier`` is recorded only where the arrays would suggest another pooling (a
    class-token model pooled by the mean). :mod:`vitzoo.weights.release` writes them.
    """
    out: dict[str, str | float | bool] = {}
    for name in RECORDED_SWITCHES[:3]:
        if getattr(config, name) != SWITCH_DEFAULTS[name]:
            out[name] = getattr(config, name)
    implied = ("map" if config.classifier == "map" else
               "gap" if config.fc_norm or not config.has_class_token else "token")
    if config.family != "mixer" and config.classifier != implied:
        out["classifier"] = config.classifier
    return out


def read_switches(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The switches recorded in a file's ``vitzoo_config/*`` arrays (inverse of the above)."""
    out: dict[str, Any] = {}
    for key in flat:
        if not key.startswith(SWITCH_PREFIX):
            continue
        name, value = key[len(SWITCH_PREFIX):], flat[key]
        if name in ("activation", "classifier"):
            text = bytes(int(v) for v in value.reshape(-1)).decode("ascii", "replace")
            allowed = ACTIVATIONS if name == "activation" else ("token", "gap", "map")
            if text not in allowed:
                raise VitzooError(f"checkpoint records {name} {text!r}, which vitzoo does not know",
                                  f"known: {', '.join(allowed)}; was it written by a newer vitzoo?")
            out[name] = text
        elif name == "layer_norm_eps":
            out[name] = float(value)
        elif name == "no_embed_class":
            out[name] = bool(value)
        else:
            raise VitzooError(f"checkpoint records an unknown switch {key!r}",
                              "was it written by a newer vitzoo? upgrade vitzoo")
    return out


#: canonical name -> config, one per entry of :data:`vitzoo.arch_registry.ARCHITECTURES`.
CONFIGS: dict[str, ModelConfig] = {a.name: _config(a) for a in ARCHITECTURES}

#: Fields that do not decide which table architecture a file is: the legacy in21k files
#: carry a representation layer (and some a GAP head) that the table entries do not have.
HEAD_FIELDS = frozenset({"name", "classifier", "representation_size"})


def differing_fields(found: ModelConfig, expected: ModelConfig,
                     ignore: frozenset[str] = HEAD_FIELDS) -> dict[str, tuple[Any, Any]]:
    """``{field: (found, expected)}`` for every field outside ``ignore`` that differs.

    The one comparison behind "which table entry is this file" and "does this file match
    the architecture the user named".
    """
    return {f.name: (getattr(found, f.name), getattr(expected, f.name))
            for f in fields(ModelConfig)
            if f.name not in ignore and getattr(found, f.name) != getattr(expected, f.name)}


def match_table_name(config: ModelConfig, ignore: frozenset[str] = HEAD_FIELDS) -> str | None:
    """The name of the first table architecture equal to ``config`` outside ``ignore``."""
    for cfg in CONFIGS.values():
        if not differing_fields(config, cfg, ignore):
            return cfg.name
    return None


def get_config(arch: str) -> ModelConfig:
    """The config of an architecture given in any accepted spelling (``B_16``, ``ViT-B_16``...)."""
    canonical = canonical_arch(arch)
    try:
        return CONFIGS[canonical]
    except KeyError:  # names.py knows an architecture this table lacks: a bug, say so
        raise VitzooError(
            f"architecture {canonical} has no model configuration",
            f"configured architectures: {', '.join(CONFIGS)}",
        ) from None


# --- inference from shapes -----------------------------------------------------

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_MIXER_BLOCK = re.compile(r"^MixerBlock_(\d+)/")
_UNIT = re.compile(r"^block(\d+)/unit(\d+)/")


def _shape(flat: Mapping[str, Any], key: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in flat[key].shape)
    except KeyError:
        raise VitzooError(
            f"checkpoint has no {key!r} array, so its architecture cannot be recognised",
            "is this a ViT / R+ViT / Mixer .npz in the release layout (or a timm file? "
            "convert it with vitzoo.weights.timm)",
        ) from None


def _count_indices(flat: Mapping[str, Any], pattern: re.Pattern[str]) -> int:
    indices = {int(m.group(1)) for k in flat if (m := pattern.match(k))}
    if not indices:
        return 0
    if indices != set(range(max(indices) + 1)):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise VitzooError(
            f"checkpoint layers are not numbered consecutively (missing {missing})",
            "the file is incomplete or was written by another tool; re-export it",
        )
    return len(indices)


def _resnet_blocks(flat: Mapping[str, Any]) -> tuple[int, ...]:
    units: dict[int, set[int]] = {}
    for key in flat:
        if m := _UNIT.match(key):
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(units)
    if stages != list(range(1, len(stages) + 1)):
        raise VitzooError(f"ResNet stages are not numbered block1..blockN (found {stages})",
                          "the file is incomplete; re-download or re-export it")
    return tuple(len(units[s]) for s in stages)


def _grid_side(patch_tokens: int, what: str) -> int:
    side = math.isqrt(patch_tokens)
    if side * side != patch_tokens:
        raise VitzooError(f"{what} has {patch_tokens} patch tokens, not a square grid",
                          "only square inputs are supported")
    return side


def _describe(config: ModelConfig) -> str:
    if config.family == "mixer":
        return f"custom Mixer D={config.hidden_size} L={config.num_layers} P={config.patch_size}"
    blocks = config.resnet_blocks
    prefix = "" if blocks is None else f"R[{','.join(map(str, blocks)) or 'stem'}]+"
    switches = "".join(f" {k}={v}" for k, v in config.switches().items())
    return (f"custom {prefix}ViT D={config.hidden_size} L={config.num_layers} "
            f"H={config.num_heads} P={config.patch_size}{switches}")


def infer_config(
    flat: Mapping[str, Any], arch: str | None = None
) -> tuple[ModelConfig, dict[str, Any]]:
    """Read the architecture off a flat release-layout checkpoint.

    Returns the config (named after the table entry it matches, or ``custom ...``)
    and facts about this file: ``num_classes`` (0 without a head), ``num_tokens``
    (position-embedding length, or Mixer patch count), ``grid``, ``resolution``
    (grid x stride), ``has_representation`` and ``representation_size``.
    If ``arch`` is given and the file disagrees with it, raises a :class:`VitzooError`
    naming every differing field.
    """
    if "stem/kernel" in flat:
        config, info = _infer_mixer(flat)
    else:
        config, info = _infer_vit(flat)
    name = match_table_name(config)
    config = replace(config, name=name or _describe(config))
    if arch is not None:
        check_matches(config, get_config(arch))
    return config, info


def _infer_mixer(flat: Mapping[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    p, _, _, d = _shape(flat, "stem/kernel")
    depth = _count_indices(flat, _MIXER_BLOCK)
    if depth == 0:
        raise VitzooError("Mixer checkpoint has no MixerBlock_0", "the file is incomplete")
    s, t = _shape(flat, "MixerBlock_0/token_mixing/Dense_0/kernel")
    c = _shape(flat, "MixerBlock_0/channel_mixing/Dense_0/kernel")[1]
    config = ModelConfig(name="", family="mixer", hidden_size=d, mlp_dim=c, num_layers=depth,
                         patch_size=p, tokens_mlp_dim=t, classifier="gap")
    grid = _grid_side(s, "Mixer token-mixing layer")
    info = {
        "num_classes": _shape(flat, "head/bias")[0] if "head/bias" in flat else 0,
        "num_tokens": s,
        "grid": grid,
        "resolution": grid * config.stride,
        "has_representation": False,
        "representation_size": None,
    }
    return config, info


def _infer_vit(flat: Mapping[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    kh, _, _, d = _shape(flat, "embedding/kernel")
    depth = _count_indices(flat, _BLOCK)
    if depth == 0:
        raise VitzooError("checkpoint has no Transformer/encoderblock_0",
                          "the file is incomplete or not a ViT checkpoint")
    attn = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1"
    _, heads, _ = _shape(flat, f"{attn}/query/kernel")
    mlp = _shape(flat, "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel")[1]
    blocks = _resnet_blocks(flat) if "conv_root/kernel" in flat else None
    width = _shape(flat, "conv_root/kernel")[3] if blocks is not None else RESNET_WIDTH
    has_cls = "cls" in flat
    rep = _shape(flat, "pre_logits/kernel")[1] if "pre_logits/kernel" in flat else None
    recorded = read_switches(flat)
    classifier = recorded.pop("classifier", implied_classifier(flat))
    config = ModelConfig(
        name="", family="vit" if blocks is None else "hybrid", hidden_size=d, mlp_dim=mlp,
        num_layers=depth, patch_size=kh, num_heads=heads, resnet_blocks=blocks,
        resnet_width=width, classifier=classifier, representation_size=rep,
        class_token=None if has_cls == (classifier == "token") else has_cls,
        distilled="dist" in flat,
        num_registers=_shape(flat, "reg")[1] if "reg" in flat else 0,
        patch_bias="embedding/bias" in flat,
        norm_pre="Transformer/norm_pre/scale" in flat,
        layer_scale="Transformer/encoderblock_0/ls1" in flat,
        fc_norm="fc_norm/scale" in flat, **recorded)
    tokens = _shape(flat, "Transformer/posembed_input/pos_embedding")[1]
    grid = _grid_side(tokens - config.posemb_prefix_tokens, "position embedding")
    info = {
        "num_classes": _shape(flat, "head/bias")[0] if "head/bias" in flat else 0,
        "num_tokens": tokens,
        "grid": grid,
        "resolution": grid * config.stride,
        "has_representation": rep is not None,
        "representation_size": rep,
    }
    return config, info


def check_matches(found: ModelConfig, expected: ModelConfig) -> None:
    """Raise if a checkpoint's architecture differs from the one the user named.

    ``classifier`` and ``representation_size`` are not compared: the legacy in21k files
    carry a representation layer the table entries (AugReg) do not have; nor are the family
    switches (:data:`SWITCH_FIELDS`): ``S/14`` names the size of a DINOv2 and a DeiT III alike.
    """
    diffs = [f"{name} {got} (expected {want})" for name, (got, want)
             in differing_fields(found, expected, HEAD_FIELDS | SWITCH_FIELDS).items()]
    if diffs:
        raise VitzooError(
            f"checkpoint does not match architecture {expected.name}: it has " + ", ".join(diffs),
            f"the file looks like {found.name}; pass that architecture or none "
            "(it is read from the file)",
        )
