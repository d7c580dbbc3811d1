"""Readable ImageNet class names for 1000- and 21843-class heads, shipped as data files.

A head's outputs are in sorted WordNet-id order for both ImageNet-1k (the TFDS
``imagenet2012`` label list) and Google's ImageNet-21k (21,843 classes: the 21,841 of the
fall 2011 release plus two more). The lists and the WordNet lemmas are taken verbatim from
timm's data files (see ``PROVENANCE.md`` beside this module), which timm itself uses for the
same checkpoints. Pure Python, read lazily: importing this costs nothing.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources

#: Head size -> synset list file (one WordNet id per line, in head order).
SYNSET_FILES: dict[int, str] = {
    1000: "imagenet_synsets.txt",
    21843: "imagenet21k_goog_synsets.txt",
}
LEMMA_FILE = "imagenet_synset_to_lemma.txt"
#: Human names of the lists, for messages and label sources.
DATASET_NAMES: dict[int, str] = {1000: "ImageNet-1k", 21843: "ImageNet-21k"}


def _read(filename: str) -> str:
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")


@cache
def imagenet_synsets(num_classes: int) -> tuple[str, ...] | None:
    """The WordNet ids of a ``num_classes`` ImageNet head in output order, or ``None``."""
    filename = SYNSET_FILES.get(num_classes)
    if filename is None:
        return None
    synsets = tuple(_read(filename).split())
    if len(synsets) != num_classes:  # a damaged installation, not a user error
        raise RuntimeError(f"{filename} lists {len(synsets)} synsets, expected {num_classes}")
    return synsets


@lru_cache(maxsize=1)
def _lemmas() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read(LEMMA_FILE).splitlines():
        synset, _, lemma = line.partition("\t")
        out[synset] = lemma.strip()
    return out


def readable(synset: str) -> str:
    """``Egyptian cat (n02124075)``: the WordNet lemmas with the id (the id alone if unknown)."""
    lemma = _lemmas().get(synset)
    return f"{lemma} ({synset})" if lemma else synset


def imagenet_labels(num_classes: int) -> list[str] | None:
    """Readable names of a 1000- or 21843-class ImageNet head; ``None`` for other sizes."""
    synsets = imagenet_synsets(num_classes)
    return None if synsets is None else [readable(s) for s in synsets]
