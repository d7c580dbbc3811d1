"""The fake bucket's index.csv is pinned to names written without vitzoo's formatter.

``tests/support/bucket_factory.py`` spells every filename with ``vitzoo.names``; if that
grammar had a bug, the "faithful" index.csv would carry the same bug and every test
built on it would still pass. So its names are checked here against (a) every
filename the published sources print (index/sources: README, notebook, paper, timm)
and (b) a hand-typed sample of the grid covering the parts no published name shows,
parsed with a regular expression written here, not with ``vitzoo.names``.
"""

from __future__ import annotations

import csv
import re

import pytest

from tests.support import REPO_ROOT
from tests.support.bucket_factory import fake_index_rows
from vitzoo import names

SOURCES = REPO_ROOT / "index" / "sources"

#: Typed by hand from the grammar the release uses ({arch}-{ds}-{epochs}ep-lr_..-aug_..-wd_..-do_..-sd_..
#: then --{dataset}-steps_{k}k-lr_..-res_..), chosen to cover what no published name shows:
#: kitti, cifar100, resisc45, steps_10k, adaptation lr 0.001, do/sd 0.1, the strong/light tokens.
HAND_WRITTEN = (
    "Ti_16-i1k-300ep-lr_0.001-aug_light0-wd_0.1-do_0.1-sd_0.1--kitti-steps_0k-lr_0.001-res_224",
    "S_32-i21k-300ep-lr_0.001-aug_strong2-wd_0.03-do_0.0-sd_0.0--cifar100-steps_10k-lr_0.03-res_384",
    "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--resisc45-steps_2k-lr_0.003-res_224",
    "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.03-do_0.1-sd_0.1--kitti-steps_2k-lr_0.01-res_384",
    "R26_S_32-i1k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--resisc45-steps_10k-lr_0.001-res_384",
    "R50_L_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--cifar100-steps_2k-lr_0.001-res_224",
    "R_Ti_16-i1k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.1-sd_0.1--oxford_iiit_pet-steps_0k-lr_0.03-res_384",
    "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224",
    "B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--cifar100-steps_10k-lr_0.01-res_224",
)
#: File form -> the index's ``name`` column, typed by hand.
ARCH = {"Ti_16": "Ti/16", "S_32": "S/32", "S_16": "S/16", "B_32": "B/32", "B_16": "B/16", "B_8": "B/8",
        "L_16": "L/16", "R_Ti_16": "R+Ti/16", "R26_S_32": "R26+S/32", "R50_L_32": "R50+L/32"}
STEPS = {"0k": 500, "2k": 2500, "10k": 10000, "20k": 20000}
_NAME = re.compile(
    r"(?P<arch>[A-Za-z0-9_]+?)-(?P<ds>i1k|i21k)-(?P<epochs>\d+)ep-lr_(?P<lr>[0-9.]+)-aug_(?P<aug>\w+?)"
    r"-wd_(?P<wd>[0-9.]+)-do_(?P<do>[0-9.]+)-sd_(?P<sd>[0-9.]+)"
    r"--(?P<adapt_ds>\w+)-steps_(?P<steps>\d+k)-lr_(?P<adapt_lr>[0-9.]+)-res_(?P<res>\d+)"
)


def published_filenames() -> set[str]:
    found = set()
    for file, column in (("published_metrics.csv", "filename"), ("timm_checkpoints.csv", "augreg_filename")):
        with (SOURCES / file).open(newline="", encoding="utf-8") as handle:
            found |= {row[column] for row in csv.DictReader(handle) if row[column]}
    return found


def grammar_mismatches(rows: list[dict]) -> list[str]:
    """Hand-typed and published names the fake index lacks, or whose columns disagree with them."""
    by_name = {r["adapt_filename"]: r for r in rows}
    upstreams = {r["filename"] for r in rows}
    problems = [n for n in sorted(published_filenames())
                if n not in (by_name if "--" in n else upstreams)]
    for name in HAND_WRITTEN:
        row = by_name.get(name)
        if row is None:
            problems.append(f"absent: {name}")
            continue
        parts = _NAME.fullmatch(name).groupdict()
        expected = {
            "name": ARCH[parts["arch"]], "ds": parts["ds"], "epochs": int(parts["epochs"]),
            "lr": float(parts["lr"]), "aug": parts["aug"], "wd": float(parts["wd"]),
            "do": float(parts["do"]), "sd": float(parts["sd"]), "adapt_ds": parts["adapt_ds"],
            "adapt_steps": STEPS[parts["steps"]], "adapt_lr": float(parts["adapt_lr"]),
            "adapt_resolution": int(parts["res"]), "filename": name.split("--")[0],
        }
        actual = {k: row[k] for k in expected}
        if actual != expected:
            problems.append(f"columns of {name}: {actual} != {expected}")
    return problems


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return fake_index_rows(seed=1)


def test_fake_index_carries_every_published_name_and_the_hand_written_sample(rows):
    assert len(published_filenames()) > 50
    assert grammar_mismatches(rows) == []
    assert len(rows) == 51_509 and len({r["filename"] for r in rows}) == 759
    steps = {(r["adapt_steps"], re.search(r"-steps_(\w+?)-", r["adapt_filename"]).group(1)) for r in rows}
    assert steps == {(v, k) for k, v in STEPS.items()}


def test_a_consistent_grammar_bug_in_vitzoo_would_be_caught(monkeypatch):
    """The check above is not circular: break the shared formatter and it fails."""
    real = names.AdaptedName.format

    def steps_in_thousands(self) -> str:  # "steps_0.5k" instead of the release's "steps_0k"
        return real(self).replace("-steps_0k-", "-steps_0.5k-")

    monkeypatch.setattr(names.AdaptedName, "format", steps_in_thousands)
    broken = fake_index_rows(seed=1)
    problems = grammar_mismatches(broken)
    assert any("steps_0k" in p for p in problems)
    assert "absent: " + HAND_WRITTEN[0] in problems
