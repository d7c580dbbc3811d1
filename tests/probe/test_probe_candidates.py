"""Probe candidates from the public catalog API: recommended, filtered, downloadable
(cache/mirror/Hub), explicit names; published numbers carried alongside."""

from __future__ import annotations

import pytest

from vitzoo.errors import VitzooError
from vitzoo.probe.candidates import select

TI16 = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"


def test_recommended_is_the_default_with_published_numbers():
    chosen, notes = select(None, arch=["Ti/16"])
    assert [(c.name, c.architecture) for c in chosen] == [(TI16, "Ti/16")] and notes == []
    assert chosen[0].published["adapt_ds"] == "imagenet2012"
    assert chosen[0].published["infer_samples_per_sec"] > 0


def test_filters_select_pretrained_checkpoints_and_limit_says_so():
    chosen, notes = select(None, arch=["Ti/16"], ds=["i21k"], where='aug == "none"')
    assert len(chosen) == 4 and chosen[0].name == TI16 and notes == []
    assert all(c.name.startswith("Ti_16-i21k-300ep-lr_0.001-aug_none-") for c in chosen)
    chosen, notes = select(None, arch=["Ti/16"], ds=["i21k"], where='aug == "none"', limit=2)
    assert len(chosen) == 2 and notes == ["kept the first 2 of 4 candidates (--limit)"]


def test_downloadable_means_a_source_can_serve_it_now(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "augreg").mkdir(parents=True)
    (mirror / "augreg" / f"{TI16}.npz").write_bytes(b"PK\x03\x04")
    monkeypatch.setenv("VITZOO_MIRRORS", str(mirror))
    chosen, notes = select(["downloadable"], arch=["Ti/16"])
    assert [c.name for c in chosen] == [TI16]
    # 84 AugReg Ti/16 files and the two DeiT-Ti of timm-families (offline here: no Hub)
    assert notes == ["1 of 86 matching checkpoints can be served now (cache, mirrors, Hugging Face)"]


def test_names_are_kept_in_order_without_duplicates_and_errors(tmp_path):
    chosen, _ = select([f"{tmp_path}/a.npz,Ti/16", "Ti/16", f"{tmp_path}/a.npz"])
    assert [c.name for c in chosen] == [f"{tmp_path}/a.npz", "Ti/16"]
    assert chosen[0].published == {}  # not in the catalog: nothing published to show
    with pytest.raises(VitzooError, match="--limit must be positive"):
        select(["Ti/16"], limit=0)
    with pytest.raises(VitzooError, match="no candidates match"):
        select(None, arch=["Ti/16"], where='aug == "nothing"')


def test_published_side_carries_timm_measured_top1_columns():
    from vitzoo.catalog.schema import MEASURED_SETS
    from vitzoo.probe.candidates import PUBLISHED, _published

    row = {"final_val": 0.5, "imagenet_top1": 0.8, "imagenet_r_top1": 0.3, "imagenet_a_top1": None,
           "imagenet_top5": 0.95}
    published = _published(row)
    assert published == {"final_val": 0.5, "imagenet_top1": 0.8, "imagenet_r_top1": 0.3}
    assert {f"{p}_top1" for p in MEASURED_SETS} <= set(PUBLISHED)
