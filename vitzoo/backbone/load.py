"""A checkpoint loaded at a resolution, with or without its representation layer; the compute dtype.

Every command that runs a checkpoint (``evaluate``, ``predict``, ``predict --attention``,
the probe's feature extraction, ``finetune --head-only``) loads it here, so the rules are
decided once:

* the position embedding is resized to the requested resolution (linear interpolation,
  :func:`vitzoo.weights.release.resize_posemb`), and the checkpoint's representation layer
  (``pre_logits``, the 2020 ImageNet-21k releases) is kept unless the caller asks for a
  fresh head without it (full fine-tuning drops it, as vit_jax does);
* the checkpoint's preprocessing (:func:`vitzoo.weights.facts.preprocessing_of`: its timm
  ``pretrained_cfg``, the rule its run recorded, or vit_jax's) travels with it, and
  :meth:`Backbone.eval_recipe` is the one recipe its evaluation pixels are made with;
* the compute dtype is one of :data:`COMPUTE_DTYPES`, validated in one place; parameters
  stay float32 whatever it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    import flax.linen as nn

    from vitzoo.data.preprocess import Preprocess, Preprocessing
    from vitzoo.models import ModelConfig

#: Compute dtypes a forward pass may run in (parameters are always stored float32).
COMPUTE_DTYPES = ("float32", "bfloat16")


def check_dtype(name: str) -> str:
    """``name`` if it is a compute dtype, else a one-line error naming the choices."""
    if name not in COMPUTE_DTYPES:
        raise VitzooError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}",
                          "e.g. --dtype bfloat16")
    return name


def compute_dtype(name: str) -> Any:
    """The ``jnp`` dtype of a validated compute dtype name (``float32``/``bfloat16``)."""
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[check_dtype(name)]


def representation_of(config: ModelConfig) -> str:
    """Which vector the head reads, in words (recorded with every probe and head-only result)."""
    if config.family == "mixer":
        return "mean of the tokens after the final LayerNorm (Mixer has no pre-logits layer)"
    if config.representation_size:
        return (f"pre_logits layer: tanh(Dense {config.representation_size}) of the class token "
                "(the checkpoint's representation layer)")
    # the model names its own pooled vector: class token, DeiT's class + distillation mean,
    # SigLIP's MAP output, the mean of the patch tokens (with MAE's fc_norm)
    return f"{config.pooled_representation()} (no pre-logits layer in this checkpoint)"


@dataclass
class Backbone:
    """A checkpoint's architecture and float32 host parameters, ready at ``resolution``."""

    path: Path
    config: ModelConfig
    params: Any
    resolution: int
    native_resolution: int
    num_classes: int  # of the head in ``params`` (0: the checkpoint has none)
    representation: str
    preprocessing: Preprocessing  # the checkpoint's rule (vitzoo.weights.facts.preprocessing_of)
    sha256: str | None = None  # content hash, filled by callers that key caches on it

    def eval_recipe(self) -> Preprocess:
        """The evaluation recipe at this backbone's resolution, by its checkpoint's rule."""
        from vitzoo.data.preprocess import eval_recipe

        return eval_recipe(self.resolution, self.preprocessing)

    def module(self, dtype: str = "float32") -> nn.Module:
        """The Flax module computing in ``dtype`` (see :mod:`vitzoo.models` for its outputs)."""
        from vitzoo.models import build_model

        return build_model(self.config, max(1, self.num_classes), dtype=compute_dtype(dtype))


def load(checkpoint: str | Path, *, resolution: int | None = None, num_classes: int | None = None,
         representation: bool = True, arch: str | None = None,
         gcs_auth: bool = False) -> Backbone:
    """Load ``checkpoint`` (a path, or a catalog name/URL resolved through the download chain).

    ``resolution`` None keeps the checkpoint's own. ``num_classes`` other than the
    checkpoint's gives a fresh zero head of that size; ``representation=False`` drops a
    ``pre_logits`` layer (and with it the head trained on it).
    """
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.weights.facts import preprocessing_of
    from vitzoo.weights.release import load_checkpoint, load_for_finetune

    path = resolve_checkpoint(str(checkpoint), gcs_auth=gcs_auth)
    config, info, params = load_checkpoint(path, arch=arch)
    native = int(info["resolution"])
    res = int(resolution or native)
    own_classes = int(info["num_classes"])
    classes = own_classes if num_classes is None else int(num_classes)
    changed = res != native or classes != own_classes or own_classes == 0  # 0: give a zero head
    if changed or (info["has_representation"] and not representation):
        config, params = load_for_finetune(path, arch=arch, num_classes=max(1, classes),
                                           resolution=res, keep_representation=representation)
    return Backbone(path=path, config=config, params=params, resolution=res,
                    native_resolution=native, num_classes=classes,
                    representation=representation_of(config), preprocessing=preprocessing_of(path))

