"""Model definitions and the architecture table.

Importing this package is cheap (the table is pure Python); Flax and jax are only
imported when :func:`build_model` builds a module.

Every model returns what callers need as outputs, the way big_vision's do, so nobody
reaches into a module's internals:

* ``model.apply(v, images, train=False)`` -> logits ``[B, K]`` float32 (the training and
  evaluation path: nothing else is computed);
* ``model.apply(v, images, outputs=True)`` -> ``(logits, out)`` with
  ``out["pre_logits"]`` ``[B, D]`` float32, the vector the head reads (a representation
  layer's tanh output when the checkpoint has one); under ``jit`` an unused ``logits``
  costs nothing;
* ``model.apply(v, images, outputs=True, attention=True)`` (ViT and hybrids) adds
  ``out["attention"]`` ``[B, layers, heads, T, T]`` float32, each layer's softmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitzoo.models.configs import CONFIGS, ModelConfig, get_config, infer_config

if TYPE_CHECKING:  # pragma: no cover
    import flax.linen as nn

__all__ = ["CONFIGS", "ModelConfig", "build_model", "get_config", "infer_config"]


def build_model(
    config: ModelConfig,
    num_classes: int,
    *,
    dtype: Any = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    stochastic_depth: float = 0.0,
    remat: bool = False,
) -> nn.Module:
    """A Flax module for ``config`` with a ``num_classes`` head.

    ``model.apply({'params': p}, images, train=False)`` maps ``[B, H, W, 3]`` images in
    [-1, 1] to float32 logits ``[B, num_classes]`` (``outputs=True``: also the
    pre-logits, see the module docstring). ``dtype`` is the compute dtype
    (``jnp.float32`` default, or ``jnp.bfloat16``); parameters stay float32. Dropout,
    attention dropout and stochastic depth act only with ``train=True`` and a
    ``'dropout'`` rng. ``remat`` trades compute for memory in the backward pass.
    """
    import jax.numpy as jnp

    dtype = jnp.float32 if dtype is None else dtype
    if num_classes < 1:
        from vitzoo.errors import VitzooError

        raise VitzooError(f"num_classes must be at least 1, got {num_classes}",
                          "pass the number of classes of your dataset")
    if config.family == "mixer":
        from vitzoo.models.mixer import MlpMixer

        return MlpMixer(
            num_classes=num_classes,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            patch_size=config.patch_size,
            tokens_mlp_dim=config.tokens_mlp_dim or 0,
            channels_mlp_dim=config.mlp_dim,
            dtype=dtype,
            stochastic_depth=stochastic_depth,
            remat=remat,
        )
    from vitzoo.models.vit import VisionTransformer

    return VisionTransformer(
        config=config,
        num_classes=num_classes,
        dtype=dtype,
        dropout_rate=dropout,
        attention_dropout_rate=attention_dropout,
        stochastic_depth=stochastic_depth,
        remat=remat,
    )
