"""The filename grammar and architecture aliases."""

from __future__ import annotations

import pytest

from vitzoo.catalog.embedded import grid_rows, load_grid
from vitzoo.config import EMBEDDED_INDEX_DIR
from vitzoo.errors import VitzooError
from vitzoo.names import (
    AdaptedName,
    PretrainedName,
    canonical_arch,
    canonical_pretrain_ds,
    parse_adapted,
    parse_any,
    parse_pretrained,
    validate_path_component,
)

B16 = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
PETS = ("R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"
        "--oxford_iiit_pet-steps_0k-lr_0.003-res_384")


def test_every_grid_filename_round_trips():
    rows = grid_rows(load_grid(EMBEDDED_INDEX_DIR / "sources"))
    assert len(rows) == 52_360
    upstream = {r["filename"] for r in rows}
    assert len(upstream) == 756 + 28
    for name in upstream:
        assert parse_pretrained(name).format() == name
    for row in rows:
        parsed = parse_adapted(row["adapt_filename"])
        assert parsed.format() == row["adapt_filename"]
        assert (parsed.adapt_ds, parsed.steps, parsed.lr, parsed.res) == (
            row["adapt_ds"], row["adapt_steps"], row["adapt_lr"], row["adapt_resolution"])


def test_parse_fields_of_a_published_name():
    parsed = parse_adapted(PETS)
    assert parsed.pretrained == PretrainedName(
        "R26+S/32", "i21k", 300, 0.001, "light1", 0.1, 0.0, 0.0, "i21k")
    assert (parsed.adapt_ds, parsed.steps, parsed.lr, parsed.res) == ("oxford_iiit_pet", 500, 0.003, 384)


@pytest.mark.parametrize(("token", "steps"), [("0k", 500), ("2k", 2500), ("10k", 10000), ("20k", 20000)])
def test_steps_tokens(token, steps):
    name = f"{B16}--cifar100-steps_{token}-lr_0.01-res_224"
    assert parse_adapted(name).steps == steps
    assert AdaptedName(parse_pretrained(B16), "cifar100", steps, 0.01, 224).format() == name


def test_i21k_30_both_spellings_round_trip():
    for spelling in ("i21k-30ep", "i21k_30-30ep"):
        name = f"S_16-{spelling}-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0"
        parsed = parse_pretrained(name)
        assert parsed.ds == "i21k_30" and parsed.epochs == 30
        assert parsed.format() == name


def test_npz_suffix_is_ignored():
    assert parse_any(B16 + ".npz").format() == B16


@pytest.mark.parametrize(("name", "fragment"), [
    ("Q_99-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "architecture 'Q_99'"),
    ("B_16-i5k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "dataset/epochs i5k-300ep"),
    ("B_16-i21k-300ep-lr_0.001-aug_medium3-wd_0.1-do_0.0-sd_0.0", "augmentation 'aug_medium3'"),
    ("B_16-i21k-300ep-lr_x-aug_none-wd_0.1-do_0.0-sd_0.0", "'lr_x' should be lr_<number>"),
    ("B_16-i21k-300ep-lr_0.001-aug_none-wd_0.10-do_0.0-sd_0.0", "canonical form"),
    ("B_16-i21k-300ep-lr_0.001-aug_none", "expected 8"),
    (f"{B16}--cifar100-steps_3k-lr_0.01-res_224", "steps 'steps_3k'"),
    (f"{B16}--cifar100-steps_2k-lr_0.01-res_big", "resolution 'res_big'"),
    (f"{B16}--cifar100-steps_2k-lr_0.01", "adaptation 'cifar100-steps_2k-lr_0.01'"),
    (f"{B16}--a--b", "exactly one '--'"),
])
def test_bad_names_say_which_part_is_wrong(name, fragment):
    with pytest.raises(VitzooError) as err:
        parse_any(name)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["../B_16", "a/b", "..", "", "x\\y"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(VitzooError, match="unsafe"):
        parse_any(name)
    with pytest.raises(VitzooError, match="unsafe"):
        validate_path_component(name)


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("B/16", "B/16"), ("B_16", "B/16"), ("ViT-B_16", "B/16"), ("vit-b/16", "B/16"),
    ("R26+S/32", "R26+S/32"), ("R26_S_32", "R26+S/32"), ("R26+ViT-S_32", "R26+S/32"),
    ("R+Ti/16", "R+Ti/16"), ("R_Ti_16", "R+Ti/16"), ("R50_L_32", "R50+L/32"),
    ("R50+ViT-B_16", "R50+B/16"), ("Mixer-B_16", "Mixer-B/16"), ("ViT-H_14", "H/14"),
    ("b_8", "B/8"),
])
def test_architecture_aliases(spelling, canonical):
    assert canonical_arch(spelling) == canonical


def test_unknown_architecture_lists_choices():
    with pytest.raises(VitzooError) as err:
        canonical_arch("Q/99")
    message = str(err.value)
    assert "'Q/99'" in message and "B/16" in message and "R26+S/32" in message


def test_pretraining_dataset_aliases():
    assert canonical_pretrain_ds("imagenet21k") == "i21k"
    assert canonical_pretrain_ds("I1K") == "i1k"
    assert canonical_pretrain_ds("i21k_30") == "i21k_30"
    with pytest.raises(VitzooError, match="unknown pre-training dataset 'jft'"):
        canonical_pretrain_ds("jft")


# Written out by hand (not derived from vitzoo.arch_registry), so a slip in the registry's
# spelling rules shows up here: the AugReg prefixes and the older collections' file stems.
PUBLISHED_AUGREG_PREFIXES = {
    "Ti/16": "Ti_16", "S/32": "S_32", "S/16": "S_16", "B/32": "B_32", "B/16": "B_16",
    "B/8": "B_8", "L/16": "L_16", "R+Ti/16": "R_Ti_16", "R26+S/32": "R26_S_32",
    "R50+L/32": "R50_L_32",
}
PUBLISHED_LEGACY_STEMS = {
    "B/16": "ViT-B_16", "B/32": "ViT-B_32", "L/16": "ViT-L_16", "L/32": "ViT-L_32",
    "H/14": "ViT-H_14", "R50+B/16": "R50+ViT-B_16", "S/16": "ViT-S_16", "S/32": "ViT-S_32",
    "Ti/16": "ViT-Ti_16", "Mixer-B/16": "Mixer-B_16", "Mixer-B/32": "Mixer-B_32",
    "Mixer-L/16": "Mixer-L_16",
}


#: The other families' architectures (timm's model definitions), typed from timm's names:
#: name -> (width, mlp, heads, depth, patch).
OTHER_FAMILY_ARCHS = {
    "S/8": (384, 1536, 6, 12, 8), "S/14": (384, 1536, 6, 12, 14), "B/14": (768, 3072, 12, 12, 14),
    "L/14": (1024, 4096, 16, 24, 14), "XS/16": (256, 1024, 4, 10, 16),
    "M/16": (512, 2048, 8, 12, 16), "M/32": (512, 2048, 8, 12, 32),
    "Betwixt/32": (640, 2560, 10, 12, 32), "B-plus/16": (896, 3584, 14, 12, 16),
    "So400m/14": (1152, 4304, 16, 27, 14), "So400m/16": (1152, 4304, 16, 27, 16),
    "g/14": (1408, 6144, 16, 40, 14), "g-opt/16": (1536, 6144, 16, 40, 16),
    "bigG/14": (1664, 8192, 16, 48, 14),
}


def test_other_family_architectures_have_their_shapes_and_spellings():
    from vitzoo.arch_registry import BY_NAME

    for name, shape in OTHER_FAMILY_ARCHS.items():
        arch = BY_NAME[name]
        assert (arch.hidden, arch.mlp, arch.heads, arch.layers, arch.patch) == shape, name
        assert not arch.augreg and not arch.legacy and arch.family == "vit"
        assert canonical_arch(name.replace("/", "_").lower()) == name
        assert canonical_arch(f"ViT-{name}") == name


def test_name_tables_derived_from_the_registry_match_the_published_spellings():
    from vitzoo.names import ALL_ARCHS, AUGREG_ARCHS, LEGACY_ARCHS

    assert AUGREG_ARCHS == PUBLISHED_AUGREG_PREFIXES
    assert list(AUGREG_ARCHS) == list(PUBLISHED_AUGREG_PREFIXES)  # the order the tool lists
    assert LEGACY_ARCHS == PUBLISHED_LEGACY_STEMS
    assert set(ALL_ARCHS) == (set(PUBLISHED_AUGREG_PREFIXES) | set(PUBLISHED_LEGACY_STEMS)
                              | set(OTHER_FAMILY_ARCHS))
    assert ALL_ARCHS[:10] == tuple(PUBLISHED_AUGREG_PREFIXES)
