"""Readable ImageNet class names shipped as data (vitzoo.labels)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest

from vitzoo.labels import (
    LEMMA_FILE,
    SYNSET_FILES,
    imagenet_labels,
    imagenet_synsets,
    readable,
)


def test_imagenet_1k_names_in_head_order():
    names = imagenet_labels(1000)
    assert len(names) == 1000
    assert names[0] == "tench, Tinca tinca (n01440764)"
    assert names[285] == "Egyptian cat (n02124075)"
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue (n15075141)"
    assert len(set(names)) == 1000  # lemmas repeat ("crane"), lemma + id never does


def test_imagenet_21k_list_has_the_checkpoint_head_size_and_order():
    synsets = imagenet_synsets(21843)
    assert len(synsets) == 21843 == len(set(synsets))
    assert list(synsets) == sorted(synsets)  # Google's i21k head: sorted WordNet ids
    assert all(re.fullmatch(r"n\d{8}", s) for s in synsets)
    one_k = set(imagenet_synsets(1000))
    assert one_k - set(synsets) == {"n04399382"}  # teddy bear: not in the fall11 release
    names = imagenet_labels(21843)
    assert names[0] == "organism, being (n00004475)"
    assert names[synsets.index("n02124075")] == "Egyptian cat (n02124075)"
    assert all(n.endswith(f"({s})") and len(n) > len(s) + 3 for n, s in zip(names, synsets, strict=True))


@pytest.mark.parametrize("num_classes", [0, 10, 999, 21841, 21842])
def test_other_head_sizes_have_no_imagenet_names(num_classes):
    assert imagenet_labels(num_classes) is None and imagenet_synsets(num_classes) is None


def test_unknown_synset_falls_back_to_the_id():
    assert readable("n99999999") == "n99999999"


def test_data_files_match_their_recorded_provenance():
    folder = resources.files("vitzoo.labels")
    provenance = folder.joinpath("PROVENANCE.md").read_text()
    for filename in [*SYNSET_FILES.values(), LEMMA_FILE]:
        digest = hashlib.sha256(folder.joinpath(filename).read_bytes()).hexdigest()
        assert f"| `{filename}` | `timm/data/_info/{filename}` |" in provenance
        assert digest in provenance, filename


def test_1k_list_equals_tfds_imagenet2012_labels_when_installed():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None:
        pytest.skip("tensorflow-datasets is not installed")
    labels = Path(spec.submodule_search_locations[0]) / "datasets" / "imagenet2012" / "labels.txt"
    assert labels.read_text().split() == list(imagenet_synsets(1000))
