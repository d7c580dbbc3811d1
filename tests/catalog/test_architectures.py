"""The architecture registry is the one source of the name tables, the model configs and
(checked here) the embedded catalog's ``index/sources/architectures.csv``."""

from __future__ import annotations

import csv

import pytest

from tests.support import REPO_ROOT
from vitzoo.arch_registry import ARCHITECTURES, BY_NAME
from vitzoo.models.configs import CONFIGS, differing_fields, get_config, match_table_name
from vitzoo.names import ALL_ARCHS, AUGREG_ARCHS

CSV_PATH = REPO_ROOT / "index" / "sources" / "architectures.csv"


def _csv_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_lists_exactly_the_augreg_architectures_of_the_registry():
    names = [row["name"] for row in _csv_rows()]
    assert names == list(AUGREG_ARCHS)


@pytest.mark.parametrize("row", _csv_rows(), ids=lambda r: r["name"])
def test_csv_row_agrees_with_the_registry(row):
    arch = BY_NAME[row["name"]]
    config = CONFIGS[row["name"]]
    assert row["file_form"] == arch.file_form
    assert row["family"] == arch.family
    assert int(row["hidden"]) == arch.hidden
    assert int(row["mlp"]) == arch.mlp
    assert int(row["heads"]) == arch.heads
    assert int(row["layers"]) == arch.layers
    assert int(row["patch"]) == arch.patch
    blocks = tuple(int(b) for b in row["resnet_blocks"].split("-")) if row["resnet_blocks"] else None
    if arch.family == "hybrid" and blocks is None:
        blocks = ()  # the stem-only hybrid has no stages: an empty cell
    assert blocks == arch.resnet_blocks
    assert int(row["effective_stride"]) == config.stride
    assert int(row["tokens_224"]) == config.num_tokens(224)
    if row["tokens_384"]:
        assert int(row["tokens_384"]) == config.num_tokens(384)


def test_configs_and_names_cover_the_same_architectures_in_the_same_order():
    assert tuple(CONFIGS) == ALL_ARCHS == tuple(a.name for a in ARCHITECTURES)
    for arch in ARCHITECTURES:
        config = CONFIGS[arch.name]
        assert (config.hidden_size, config.mlp_dim, config.num_layers, config.patch_size,
                config.num_heads, config.resnet_blocks, config.tokens_mlp_dim) == (
            arch.hidden, arch.mlp, arch.layers, arch.patch, arch.heads, arch.resnet_blocks,
            arch.tokens_mlp)
        assert config.classifier == ("gap" if arch.family == "mixer" else "token")


def test_config_comparison_names_the_differences_and_honours_the_ignore_set():
    from dataclasses import replace

    b16 = get_config("B/16")
    wider = replace(b16, name="x", hidden_size=1024, classifier="gap", representation_size=768)
    assert differing_fields(wider, b16) == {"hidden_size": (1024, 768)}
    assert differing_fields(wider, b16, frozenset()) == {
        "name": ("x", "B/16"), "hidden_size": (1024, 768), "classifier": ("gap", "token"),
        "representation_size": (768, None)}
    assert match_table_name(replace(b16, name="?", representation_size=768)) == "B/16"
    assert match_table_name(replace(b16, num_heads=1)) is None
    assert match_table_name(replace(b16, num_heads=1), frozenset({"name", "num_heads"})) == "B/16"
