"""The Python API: DataFrames with proper dtypes, the same filters as the CLI, name resolution."""

from __future__ import annotations

import pytest

import vitzoo
from tests.support import REPO_ROOT
from vitzoo.catalog.api import find_checkpoint
from vitzoo.errors import VitzooError

B16 = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"


def test_catalog_is_a_dataframe_with_nullable_dtypes():
    df = vitzoo.load_catalog()
    assert len(df) > 51_509
    assert list(df.columns[:3]) == ["name", "ds", "epochs"]
    assert str(df["epochs"].dtype) == "Int64"
    assert str(df["adapt_resolution"].dtype) == "Int64"
    assert str(df["final_val"].dtype) == "float64"
    assert str(df["exists"].dtype) == "boolean"
    assert str(df["name"].dtype).startswith("string")
    assert df["final_val"].isna().sum() > 50_000  # unknown stays unknown


def test_query_takes_the_cli_filters():
    df = vitzoo.query(arch="B/16", aug="medium1", pretrained=True)
    assert len(df) == 12 and set(df["finetunes"]) == {68}
    pets = vitzoo.query(arch=["R26+S/32"], adapt_ds="oxford_iiit_pet",
                        where="notnull(adapt_final_val)", sort="adapt_final_val", desc=True,
                        columns=["adapt_lr", "adapt_steps", "adapt_final_val"])
    assert len(pets) == 16 and pets["adapt_final_val"].iloc[0] == pytest.approx(0.967391)
    with pytest.raises(VitzooError, match="unknown filter"):
        vitzoo.query(architecture="B/16")


def test_recommend_breaks_a_tie_by_its_stated_rule_whatever_the_row_order():
    """R26+S/32's two best Pets fine-tunes share val 0.967391: the cheaper run is kept, the rule
    is said in the notes, and applying the stated rule by hand gives the same row."""
    from vitzoo.catalog.api import load_table, run_recommend
    from vitzoo.catalog.recommend import TIE_BREAK, TIE_RULE

    df = vitzoo.recommend(arch="R26+S/32", adapt_ds="oxford_iiit_pet")
    [note] = [n for n in df.attrs["notes"] if "share the best" in n]
    assert note.startswith("R26+S/32: 2 candidates share the best adapt_final_val 0.967391; ")
    assert TIE_RULE in note and df["checkpoint"].iloc[0] in note
    pets = vitzoo.query(arch="R26+S/32", adapt_ds="oxford_iiit_pet", where="notnull(adapt_final_val)")
    tied = pets[pets["adapt_final_val"] == pets["adapt_final_val"].max()]
    assert sorted(tied["adapt_resolution"]) == [224, 384]
    by_hand = tied.sort_values(list(TIE_BREAK)).iloc[0]["checkpoint"]
    assert df["checkpoint"].iloc[0] == by_hand and by_hand.endswith("res_224")
    table = load_table()
    backwards = table.take(list(range(table.num_rows - 1, -1, -1)))
    chosen = run_recommend(backwards, arch=["R26+S/32"], adapt_ds="oxford_iiit_pet").table
    assert chosen.column("checkpoint") == [by_hand]


def test_recommend_carries_its_notes():
    df = vitzoo.recommend(arch="B/16")
    assert df["filename"].tolist() == [B16]
    assert any("published recommendation" in note for note in df.attrs["notes"])


def test_published_picks_are_attributed_to_the_sources_in_the_data():
    """B/8's pick comes from the reference notebook; the nine others from the README table."""
    notes = vitzoo.recommend().attrs["notes"]
    [note] = [n for n in notes if "showing the published recommendation" in n]
    assert ("(vit_jax README recommended table: Ti/16, S/32, S/16, B/32, B/16, L/16, R+Ti/16, "
            "R26+S/32, R50+L/32; vit_jax_augreg notebook stored output (best i21k upstream per "
            "model): B/8)") in note
    assert "(vit_jax README)" not in note


@pytest.mark.parametrize(("name", "filename", "kind", "collection"), [
    ("B/16", B16, "pretrained", "augreg"),
    ("ViT-B_16", "ViT-B_16", "pretrained", "imagenet21k"),  # legacy stem: its i21k pre-training
    ("imagenet21k+imagenet2012/ViT-B_16", "ViT-B_16", "finetuned", "imagenet21k+imagenet2012"),
    ("L/32", "ViT-L_32", "pretrained", "imagenet21k"),  # no AugReg L/32: the legacy one
    ("Mixer-B/16", "Mixer-B_16", "pretrained", "imagenet21k"),
    (B16 + ".npz", B16, "pretrained", "augreg"),
    (B16 + "--cifar100-steps_10k-lr_0.01-res_224", B16 + "--cifar100-steps_10k-lr_0.01-res_224",
     "finetuned", "augreg"),
])
def test_find_checkpoint_resolves_every_kind_of_name(name, filename, kind, collection):
    info = find_checkpoint(name)
    assert (info.filename, info.kind, info.collection) == (filename, kind, collection)
    assert info.url.endswith(f"/{filename}.npz")


def test_find_checkpoint_carries_hf_copies():
    info = find_checkpoint("B/16")
    assert info.hf_repo == "timm/vit_base_patch16_224.augreg_in21k"
    tuned = find_checkpoint(B16 + "--imagenet2012-steps_20k-lr_0.01-res_384")
    assert tuned.hf_repo == "timm/vit_base_patch16_384.augreg_in21k_ft_in1k"
    assert tuned.resolution == 384 and tuned.adapt_ds == "imagenet2012"


def test_the_readme_states_recommend_s_tie_rule():
    from vitzoo.catalog.recommend import TIE_BREAK

    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    words = {"adapt_steps": "fewer steps", "adapt_lr": "lower learning rate",
             "adapt_resolution": "lower resolution"}
    stated = "On equal accuracy it keeps the cheaper run (" + ", then ".join(
        words[c] for c in TIE_BREAK if c in words) + ")"
    assert stated in readme
