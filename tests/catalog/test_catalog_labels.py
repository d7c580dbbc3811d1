"""Counts, units and caveat labels of the embedded catalog, checked against its own data."""

from __future__ import annotations

import csv
import re
from collections import Counter
from decimal import Decimal

import pytest

from tests.support import REPO_ROOT
from vitzoo.catalog import store
from vitzoo.catalog.caveats import CAVEATS, add_caveat, legend, split_caveats
from vitzoo.catalog.embedded import fraction
from vitzoo.catalog.schema import ACCURACY_COLUMNS

SOURCES = REPO_ROOT / "index" / "sources"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return store.read_frame(store.locate(REPO_ROOT / "index")).to_pylist()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return store.read_manifest(store.locate(REPO_ROOT / "index"))


def _with(rows, code):
    return [r for r in rows if code in split_caveats(r["caveats"])]


def test_counts_differ_from_the_paper_by_exactly_the_marked_rows(rows, manifest):
    augreg = [r for r in rows if r["collection"] == "augreg"]
    pretrained = {r["filename"] for r in augreg}
    assert (len(pretrained), len(augreg)) == (784, 52_360)
    candidates = {r["filename"] for r in _with(augreg, "b8_candidate")}
    assert len(candidates) == 26 and all(f.startswith("B_8-") for f in candidates)
    per_candidate = Counter(r["filename"] for r in _with(augreg, "b8_candidate"))
    assert set(per_candidate.values()) == {34}  # 4 ImageNet + 64 small-dataset runs, 224 px only
    gap = [r for r in augreg if (r["adapt_ds"], r["adapt_resolution"], r["adapt_lr"]) == (
        "imagenet2012", 384, 0.03) and r["name"] != "B/8"]
    assert len(gap) == 756
    maybe_missing = _with(augreg, "possibly_missing")
    confirmed = [r for r in gap if r["exists"] is True]  # a published file cannot be the missing one
    assert 0 < len(confirmed) < 20
    assert sorted(r["checkpoint"] for r in maybe_missing) == sorted(
        r["checkpoint"] for r in gap if r["exists"] is not True)
    # 3 B/8 configurations were released, 2 are known: 1 of the 26 candidates exists, 25 do not.
    unreleased = len(candidates) - (3 - 2)
    assert len(pretrained) - unreleased == 759
    assert len(augreg) - unreleased * 34 - 1 == 51_509
    counts = manifest["counts"]
    assert (counts["catalog_pretrained"], counts["catalog_finetunes"]) == (784, 52_360)
    assert (counts["published_pretrained"], counts["published_finetunes"]) == (759, 51_509)
    assert "25 of them x 34 fine-tunes = 850 rows" in counts["explanation"]
    assert "possibly_missing" in counts["explanation"]


def test_index_info_explains_the_counts(manifest):
    from typer.testing import CliRunner

    from vitzoo.cli import app

    result = CliRunner().invoke(app, ["index", "info", "--index", str(REPO_ROOT / "index")],
                                env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert f"counts: {manifest['counts']['explanation']}" in result.output
    assert "17,136 rows have a reconstructed filename spelling" in result.output
    as_json = CliRunner().invoke(app, ["index", "info", "--format", "json",
                                       "--index", str(REPO_ROOT / "index")])
    assert '"published_finetunes": 51509' in as_json.output and "fractions in [0, 1]" in as_json.output


def test_every_caveat_code_is_known_and_marks_what_it_says(rows):
    used = Counter(code for r in rows for code in split_caveats(r["caveats"]))
    assert set(used) == set(CAVEATS)
    assert all(r["caveats"] is not None for r in rows)  # '' means none, never unknown
    for row in rows:
        codes = split_caveats(row["caveats"])
        per_arch = "[per architecture and resolution]" in (row["value_sources"] or "")
        assert ("per_arch_throughput" in codes) == per_arch, row["checkpoint"]
        assert ("unconfirmed_name" in codes) == (row["filename_verified"] is False), row["checkpoint"]
    expected = {r["checkpoint"]: r["adapt_final_test"] for r in _with(rows, "expected_value")}
    assert expected == {"imagenet21k+imagenet2012/ViT-B_16-224": 0.812,
                        "imagenet21k+imagenet2012/ViT-L_16-224": 0.827}
    res224 = _with(rows, "res224_figure")
    assert len(res224) == 18  # 9 recommended upstreams x 2 learning rates
    assert {(r["adapt_ds"], r["adapt_resolution"]) for r in res224} == {("imagenet2012", 384)}
    assert {r["recommended"] is not None for r in res224} == {True}


def test_recommended_rows_are_counted_and_attributed_to_their_real_source(rows, manifest):
    marked = [r for r in rows if r["recommended"]]
    assert len(marked) == manifest["sources"][0]["stats"]["recommended_rows"] == 9 * 68 + 34
    b8 = {r["value_sources"].split("recommended=")[1].split(";")[0] for r in marked if r["name"] == "B/8"}
    assert b8 == {"vit_jax_augreg notebook stored output (best i21k upstream per model)"}
    b16 = {r["value_sources"].split("recommended=")[1].split(";")[0] for r in marked if r["name"] == "B/16"}
    assert len(b16) == 1 and next(iter(b16)).startswith("vit_jax README recommended table")


def test_accuracies_are_fractions_at_their_published_precision(rows):
    for row in rows:
        for column in ACCURACY_COLUMNS:
            value = row[column]
            if value is not None:
                assert 0 <= value <= 1, (row["checkpoint"], column, value)
                assert round(value, 8) == value, (row["checkpoint"], column, value)  # no 0.827000..01
    assert fraction("82.7", "percent") == 0.827 and repr(fraction("82.7", "percent")) == "0.827"
    assert fraction("0.8122", "fraction") == 0.8122


def test_published_facts_are_stored_as_fractions_with_what_was_printed():
    with (SOURCES / "published_metrics.csv").open(newline="", encoding="utf-8") as handle:
        facts = list(csv.DictReader(handle))
    assert {f["unit"] for f in facts} == {"fraction", "images/s", "MiB", "millions"}
    converted = [f for f in facts if f["published_as"].endswith("%")]
    assert len(converted) > 1000
    for fact in converted:
        assert fact["unit"] == "fraction"
        assert Decimal(fact["value"]) * 100 == Decimal(fact["published_as"][:-1]), fact
    for fact in facts:
        if fact["unit"] == "fraction":
            assert 0 <= Decimal(fact["value"]) <= 1, fact
    assert not any("pct" in f["metric"] for f in facts)


def test_sources_cite_only_what_a_reader_can_open():
    unreadable = re.compile(r"npz_layout\.md|augreg_facts\.md|shared/reference|section 3\.2")
    for path in sorted(SOURCES.iterdir()):
        assert not unreadable.search(path.read_text(encoding="utf-8")), path.name


def test_add_caveat_keeps_codes_once_and_in_order_and_refuses_unknown_ones():
    row = {"caveats": ""}
    add_caveat(row, "b8_candidate")
    add_caveat(row, "per_arch_throughput")
    add_caveat(row, "b8_candidate")
    assert row["caveats"] == "b8_candidate,per_arch_throughput"
    with pytest.raises(ValueError, match="unknown caveat code 'made_up'"):
        add_caveat(row, "made_up")
    assert legend(["per_arch_throughput", "per_arch_throughput", "nope"]) == [
        f"per_arch_throughput: {CAVEATS['per_arch_throughput']}"]
