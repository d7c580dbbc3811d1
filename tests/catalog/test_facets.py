"""Facets: ``list --distinct COLUMN`` and, for an empty answer, the nearest combinations.

The oracle is pandas over the catalog file (value_counts, boolean masks), not vitzoo's query.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from vitzoo.catalog import api

INDEX = str(REPO_ROOT / "index")


@pytest.fixture(scope="module")
def catalog():
    return api.load_dataframe(INDEX)


@pytest.mark.parametrize(("column", "filters", "mask"), [
    ("name", (), lambda df: df["name"].notna() | df["name"].isna()),
    ("adapt_ds", ("--arch", "B/8"), lambda df: df["name"] == "B/8"),
    ("adapt_final_test", ("--res", "384"), lambda df: df["adapt_resolution"] == 384),
    # --collection sam also answers for the files in a sam/ folder (mixer_models/sam/...)
    ("imagenet_r_top1", ("--collection", "sam"), lambda df: df["url"].str.contains("/sam/")),
])
def test_distinct_counts_equal_pandas_value_counts(capsys, catalog, column, filters, mask):
    code, out, err = run(capsys, "list", "--distinct", column, *filters, "--format", "json",
                         "--index", INDEX)
    assert code == 0, err
    got = {(r[column], r["rows"]) for r in json.loads(out)}
    counts = catalog[mask(catalog).fillna(False).astype(bool)][column].astype(object).value_counts(
        dropna=False)
    expected = {(None if pd.isna(value) else value, int(n))
                for value, n in counts.items()}
    assert got == expected
    rows = [r["rows"] for r in json.loads(out)]
    assert rows == sorted(rows, reverse=True)  # most rows first


def test_distinct_as_csv_and_its_errors(capsys):
    code, out, err = run(capsys, "list", "--distinct", "ds", "--pretrained", "--collection", "augreg",
                         "--format", "csv", "--index", INDEX)
    assert code == 0, err
    assert list(csv.DictReader(io.StringIO(out))) == [  # B/8 was pre-trained on i21k only
        {"ds": ds, "rows": n} for ds, n in (("i21k", "280"), ("i1k", "252"), ("i21k_30", "252"))]
    code, _, err = run(capsys, "list", "--distinct", "nmae", "--index", INDEX)
    assert code == 2 and "unknown column 'nmae'" in err and "name" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "list", "--distinct", "name", "--columns", "name", "--index", INDEX)
    assert code == 2 and "do not go together" in err


def test_an_empty_answer_names_the_filters_to_drop_with_their_counts(capsys, catalog):
    """B/8 was never fine-tuned with a known Pets validation accuracy: dropping --arch gives the
    16 runs of R26+S/32 the notebook printed; dropping --where gives every B/8 Pets run."""
    code, out, err = run(capsys, "list", "--arch", "B/8", "--adapt-ds", "oxford_iiit_pet",
                         "--where", "notnull(adapt_final_val)", "--format", "json", "--index", INDEX)
    assert code == 0 and json.loads(out) == []
    pets = catalog["adapt_ds"] == "oxford_iiit_pet"
    b8 = catalog["name"] == "B/8"
    known = catalog["adapt_final_val"].notna()
    assert int((b8 & pets & known).sum()) == 0
    note = err.strip()
    assert note.startswith("note: nothing matches all filters; nearest combinations that exist:")
    assert f"without --arch B/8: {int((pets & known).sum()):,} rows" in note
    assert f"without --where 'notnull(adapt_final_val)': {int((b8 & pets).sum()):,} rows" in note
    assert "still none without --adapt-ds oxford_iiit_pet" in note
    assert int((b8 & known).sum()) == 0


def test_when_no_single_filter_helps_pairs_are_tried(capsys, catalog):
    code, _, err = run(capsys, "list", "--arch", "B/8", "--aug", "strong2", "--res", "384",
                       "--adapt-ds", "oxford_iiit_pet", "--where", "notnull(adapt_final_val)",
                       "--format", "json", "--index", INDEX)
    assert code == 0
    pets = catalog["adapt_ds"] == "oxford_iiit_pet"
    known = catalog["adapt_final_val"].notna()
    expected = int((pets & known & (catalog["adapt_resolution"] == 384)).sum())
    assert "dropping any one filter still gives nothing; dropping two:" in err
    assert f"without --arch B/8 and --aug strong2: {expected:,} rows" in err
