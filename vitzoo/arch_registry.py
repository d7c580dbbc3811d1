"""The architecture registry: every network of the zoo, described once.

The filename tables of :mod:`vitzoo.names` (AugReg file forms, legacy file stems, aliases)
and the model configurations of :mod:`vitzoo.models.configs` are both derived from
:data:`ARCHITECTURES`, so adding or correcting an architecture is a one-line change
here. The embedded catalog's ``index/sources/architectures.csv`` is checked against it
by the tests.

Sources: the ViT paper (arXiv 2010.11929, Table 1), "How to train your ViT?"
(arXiv 2106.10270, Tables 1-2), the MLP-Mixer paper (arXiv 2105.01601, Table 1) and
``vit_jax/configs/models.py`` in github.com/google-research/vision_transformer, and for the
other families' ViTs (DeiT, DINO, DINOv2, MAE, CLIP, SigLIP) timm 1.0.31's model definitions
(``index/tools/timm_families.py`` reads them); see
``docs/CHECKPOINT_LAYOUT.md`` for what the widths mean in the files.
Pure Python on purpose: every command imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["vit", "hybrid", "mixer"]


@dataclass(frozen=True)
class Architecture:
    """One network of the zoo and the collections it was released in.

    ``resnet_blocks``: ``None`` for plain ViT and Mixer, ``()`` for the stem-only hybrid
    ``R+Ti/16``, otherwise the units per ResNet stage. ``tokens_mlp`` only for Mixer.
    ``augreg``: released in ``gs://vit_models/augreg/``; ``legacy``: released in the older
    collections (``imagenet21k/``, ``imagenet21k+imagenet2012/``, ``gs://mixer_models``).
    """

    name: str
    family: Family
    hidden: int
    mlp: int
    layers: int
    patch: int
    heads: int = 0
    resnet_blocks: tuple[int, ...] | None = None
    tokens_mlp: int | None = None
    augreg: bool = False
    legacy: bool = False

    @property
    def file_form(self) -> str:
        """The AugReg filename prefix: ``R26+S/32`` -> ``R26_S_32``."""
        return self.name.replace("+", "_").replace("/", "_")

    @property
    def legacy_stem(self) -> str:
        """The file stem of the older collections: ``ViT-B_16``, ``R50+ViT-B_16``, ``Mixer-B_16``."""
        if self.family == "mixer":
            return self.name.replace("/", "_")
        if "+" in self.name:
            stem, tail = self.name.split("+", 1)
            return f"{stem}+ViT-{tail.replace('/', '_')}"
        return f"ViT-{self.name.replace('/', '_')}"


def _vit(name: str, hidden: int, mlp: int, heads: int, layers: int, patch: int, *,
         augreg: bool, legacy: bool, resnet_blocks: tuple[int, ...] | None = None) -> Architecture:
    family: Family = "vit" if resnet_blocks is None else "hybrid"
    return Architecture(name, family, hidden, mlp, layers, patch, heads, resnet_blocks,
                        augreg=augreg, legacy=legacy)


def _mixer(name: str, hidden: int, blocks: int, tokens_mlp: int, channels_mlp: int,
           patch: int) -> Architecture:
    return Architecture(name, "mixer", hidden, channels_mlp, blocks, patch,
                        tokens_mlp=tokens_mlp, legacy=True)


#: Every architecture, in the order the tool lists them (AugReg first, as in the paper).
ARCHITECTURES: tuple[Architecture, ...] = (
    _vit("Ti/16", 192, 768, 3, 12, 16, augreg=True, legacy=True),
    _vit("S/32", 384, 1536, 6, 12, 32, augreg=True, legacy=True),
    _vit("S/16", 384, 1536, 6, 12, 16, augreg=True, legacy=True),
    _vit("B/32", 768, 3072, 12, 12, 32, augreg=True, legacy=True),
    _vit("B/16", 768, 3072, 12, 12, 16, augreg=True, legacy=True),
    _vit("B/8", 768, 3072, 12, 12, 8, augreg=True, legacy=False),
    _vit("L/16", 1024, 4096, 16, 24, 16, augreg=True, legacy=True),
    _vit("R+Ti/16", 192, 768, 3, 12, 8, augreg=True, legacy=False, resnet_blocks=()),
    _vit("R26+S/32", 384, 1536, 6, 12, 1, augreg=True, legacy=False, resnet_blocks=(2, 2, 2, 2)),
    _vit("R50+L/32", 1024, 4096, 16, 24, 1, augreg=True, legacy=False, resnet_blocks=(3, 4, 6, 3)),
    _vit("L/32", 1024, 4096, 16, 24, 32, augreg=False, legacy=True),
    _vit("H/14", 1280, 5120, 16, 32, 14, augreg=False, legacy=True),
    _vit("R50+B/16", 768, 3072, 12, 12, 1, augreg=False, legacy=True, resnet_blocks=(3, 4, 9)),
    _mixer("Mixer-B/16", 768, 12, 384, 3072, 16),
    _mixer("Mixer-B/32", 768, 12, 384, 3072, 32),
    _mixer("Mixer-L/16", 1024, 24, 512, 4096, 16),
    # Other families' plain ViTs served by timm (index/sources/timm_families.csv): shapes read
    # off timm's model definitions. Names follow the paper letters where one exists; otherwise
    # the name their authors use (So400m: SigLIP's shape-optimised 400M, arXiv 2305.13035;
    # g-opt: SigLIP 2's; g and bigG: OpenCLIP's; XS, M, B-plus, Betwixt: timm's xsmall,
    # medium, base_plus, betwixt).
    _vit("S/8", 384, 1536, 6, 12, 8, augreg=False, legacy=False),
    _vit("S/14", 384, 1536, 6, 12, 14, augreg=False, legacy=False),
    _vit("B/14", 768, 3072, 12, 12, 14, augreg=False, legacy=False),
    _vit("L/14", 1024, 4096, 16, 24, 14, augreg=False, legacy=False),
    _vit("XS/16", 256, 1024, 4, 10, 16, augreg=False, legacy=False),
    _vit("M/16", 512, 2048, 8, 12, 16, augreg=False, legacy=False),
    _vit("M/32", 512, 2048, 8, 12, 32, augreg=False, legacy=False),
    _vit("Betwixt/32", 640, 2560, 10, 12, 32, augreg=False, legacy=False),
    _vit("B-plus/16", 896, 3584, 14, 12, 16, augreg=False, legacy=False),
    _vit("So400m/14", 1152, 4304, 16, 27, 14, augreg=False, legacy=False),
    _vit("So400m/16", 1152, 4304, 16, 27, 16, augreg=False, legacy=False),
    _vit("g/14", 1408, 6144, 16, 40, 14, augreg=False, legacy=False),
    _vit("g-opt/16", 1536, 6144, 16, 40, 16, augreg=False, legacy=False),
    _vit("bigG/14", 1664, 8192, 16, 48, 14, augreg=False, legacy=False),
)

BY_NAME: dict[str, Architecture] = {a.name: a for a in ARCHITECTURES}
