"""Conversion between the release ``.npz`` layout and Hugging Face ``ViTForImageClassification``.

transformers' ViT keeps q, k and v as separate ``nn.Linear`` layers (weights ``[out, in]``),
so the mapping is a transpose per kernel plus the head reshapes of the attention
projections; numbers are moved, never changed. Only plain class-token ViTs exist there:
hybrids (a ResNet stem), Mixer, global-average-pool heads and the 2020 ``pre_logits``
layer are refused with a message that says so. Key names: ``docs/CHECKPOINT_LAYOUT.md`` §7.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vitzoo.errors import VitzooError
from vitzoo.models.configs import ModelConfig
from vitzoo.weights.timm import StateReader, need_array

Flat = dict[str, np.ndarray]

_ENC = "Transformer/encoderblock_{i}"
_ATT = "MultiHeadDotProductAttention_1"
_LAYER = "vit.encoder.layer.{i}"
#: (release module inside an encoder block, transformers module inside a layer)
_DENSE = (
    ("MlpBlock_3/Dense_0", "intermediate.dense"),
    ("MlpBlock_3/Dense_1", "output.dense"),
)
_NORMS = (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2", "layernorm_after"))


def check_supported(config: ModelConfig, flat: Mapping[str, Any]) -> None:
    """Refuse what ``ViTForImageClassification`` cannot represent, naming the alternative."""
    if config.family != "vit":
        raise VitzooError(
            f"{config.name} is a {'hybrid R+ViT' if config.family == 'hybrid' else 'Mixer'} "
            "model; transformers' ViTForImageClassification has no such architecture",
            "export it with --to timm or --to npz instead")
    if not config.has_class_token:
        raise VitzooError(
            f"{config.name} classifies from the average of its tokens (no class token); "
            "ViTForImageClassification reads the class token only",
            "export it with --to timm or --to npz instead")
    if "pre_logits/kernel" in flat:
        raise VitzooError(
            "this checkpoint has a representation (pre_logits) layer, which "
            "ViTForImageClassification does not have",
            "fine-tune it first (vitzoo finetune drops the layer) and export the result")
    if "head/kernel" not in flat:
        raise VitzooError(
            "this checkpoint has no classification head, so it is not an image classifier",
            "fine-tune it first (vitzoo finetune) or export it with --to npz")


def release_to_hf(flat: Mapping[str, Any], config: ModelConfig) -> Flat:
    """A release-layout ViT as a ``ViTForImageClassification`` state dict (float32, contiguous)."""
    check_supported(config, flat)
    f = {k: np.asarray(v) for k, v in flat.items()}
    what = "release checkpoint"
    d = config.hidden_size
    out: Flat = {
        "vit.embeddings.cls_token": need_array(f, "cls", what),
        "vit.embeddings.position_embeddings": need_array(f, "Transformer/posembed_input/pos_embedding", what),
        "vit.embeddings.patch_embeddings.projection.weight":
            np.transpose(need_array(f, "embedding/kernel", what), (3, 2, 0, 1)),
        "vit.embeddings.patch_embeddings.projection.bias": need_array(f, "embedding/bias", what),
    }
    for i in range(config.num_layers):
        b, t = _ENC.format(i=i), _LAYER.format(i=i)
        for ln, norm in _NORMS:
            out[f"{t}.{norm}.weight"] = need_array(f, f"{b}/{ln}/scale", what)
            out[f"{t}.{norm}.bias"] = need_array(f, f"{b}/{ln}/bias", what)
        for name in ("query", "key", "value"):
            out[f"{t}.attention.attention.{name}.weight"] = \
                need_array(f, f"{b}/{_ATT}/{name}/kernel", what).reshape(d, d).T
            out[f"{t}.attention.attention.{name}.bias"] = \
                need_array(f, f"{b}/{_ATT}/{name}/bias", what).reshape(d)
        out[f"{t}.attention.output.dense.weight"] = \
            need_array(f, f"{b}/{_ATT}/out/kernel", what).reshape(d, d).T
        out[f"{t}.attention.output.dense.bias"] = need_array(f, f"{b}/{_ATT}/out/bias", what)
        for dense, hf in _DENSE:
            out[f"{t}.{hf}.weight"] = need_array(f, f"{b}/{dense}/kernel", what).T
            out[f"{t}.{hf}.bias"] = need_array(f, f"{b}/{dense}/bias", what)
    out["vit.layernorm.weight"] = need_array(f, "Transformer/encoder_norm/scale", what)
    out["vit.layernorm.bias"] = need_array(f, "Transformer/encoder_norm/bias", what)
    out["classifier.weight"] = need_array(f, "head/kernel", what).T
    out["classifier.bias"] = need_array(f, "head/bias", what)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def hf_to_release(state: Mapping[str, Any], config: ModelConfig) -> Flat:
    """The inverse of :func:`release_to_hf`; a key it cannot place is refused by name."""
    take = StateReader(state, "transformers state dict")
    d, h = config.hidden_size, config.num_heads
    out: Flat = {
        "cls": take("vit.embeddings.cls_token"),
        "Transformer/posembed_input/pos_embedding": take("vit.embeddings.position_embeddings"),
        "embedding/kernel": np.transpose(take("vit.embeddings.patch_embeddings.projection.weight"),
                                         (2, 3, 1, 0)),
        "embedding/bias": take("vit.embeddings.patch_embeddings.projection.bias"),
    }
    for i in range(config.num_layers):
        b, t = _ENC.format(i=i), _LAYER.format(i=i)
        for ln, norm in _NORMS:
            out[f"{b}/{ln}/scale"] = take(f"{t}.{norm}.weight")
            out[f"{b}/{ln}/bias"] = take(f"{t}.{norm}.bias")
        for name in ("query", "key", "value"):
            hf = f"{t}.attention.attention.{name}"
            out[f"{b}/{_ATT}/{name}/kernel"] = take(f"{hf}.weight").T.reshape(d, h, -1)
            out[f"{b}/{_ATT}/{name}/bias"] = take(f"{hf}.bias").reshape(h, -1)
        out[f"{b}/{_ATT}/out/kernel"] = take(f"{t}.attention.output.dense.weight").T.reshape(h, -1, d)
        out[f"{b}/{_ATT}/out/bias"] = take(f"{t}.attention.output.dense.bias")
        for dense, hf in _DENSE:
            out[f"{b}/{dense}/kernel"] = take(f"{t}.{hf}.weight").T
            out[f"{b}/{dense}/bias"] = take(f"{t}.{hf}.bias")
    out["Transformer/encoder_norm/scale"] = take("vit.layernorm.weight")
    out["Transformer/encoder_norm/bias"] = take("vit.layernorm.bias")
    out["head/kernel"] = take("classifier.weight").T
    out["head/bias"] = take("classifier.bias")
    take.refuse_unused("only ViTForImageClassification checkpoints (no pooler) can be read")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
