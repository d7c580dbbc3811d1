"""The marker convention: caveat codes as footnote marks in tables (with a legend naming only
the codes shown), a ``caveats`` column in CSV/JSON, hollow points in plots."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from tests.support.cli_helpers import table_at
from vitzoo.catalog.api import load_table
from vitzoo.catalog.caveats import CAVEATS, QUALIFIES
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.query import Filters
from vitzoo.cli.render import CAVEAT_MARKS, _marked_rows, caveat_legend
from vitzoo.plot import draw_scatter, new_figure, scatter_data

THROUGHPUT, UNCONFIRMED, B8, MISSING, EXPECTED = (
    CAVEAT_MARKS[c] for c in ("per_arch_throughput", "unconfirmed_name", "b8_candidate",
                              "possibly_missing", "expected_value"))


def legend_codes(out: str) -> list[str]:
    marks = {mark: code for code, mark in CAVEAT_MARKS.items()}
    return [marks[line[0]] for line in out.splitlines()
            if line[:1] in marks and line[1:2] == " " and ":" in line]


def machine(capsys, *args: str, fmt: str) -> str:
    code, out, err = run(capsys, *args, "--format", fmt)
    assert code == 0, err
    return out


def test_every_code_that_qualifies_a_column_has_its_own_mark():
    assert set(QUALIFIES) == set(CAVEATS)
    marked = {code for code, columns in QUALIFIES.items() if columns}
    assert set(CAVEAT_MARKS) == marked  # res224_figure qualifies a published fact, not a cell
    assert len(set(CAVEAT_MARKS.values())) == len(CAVEAT_MARKS)
    assert all(len(mark) == 1 for mark in CAVEAT_MARKS.values())


@pytest.mark.parametrize("width", [80, 200])
def test_per_architecture_throughput_and_possibly_missing_files_are_marked(capsys, monkeypatch, width):
    args = ("list", "--arch", "S/16", "--ds", "i21k", "--limit", "5")
    _, body, out = table_at(capsys, monkeypatch, width, *args)
    rows = json.loads(machine(capsys, *args, fmt="json"))
    assert [r["caveats"] for r in rows] == ["per_arch_throughput"] * 3 + [
        "per_arch_throughput,possibly_missing", "per_arch_throughput"]
    for line, row in zip(body, rows, strict=True):
        name = line.split()[0]
        assert name.endswith(MISSING) == ("possibly_missing" in row["caveats"])
        assert f"{row['infer_samples_per_sec']:,.1f}{THROUGHPUT}" in line
    assert legend_codes(out) == ["per_arch_throughput", "possibly_missing"]
    assert f"{THROUGHPUT} per_arch_throughput: {CAVEATS['per_arch_throughput']}"[:60] in out


def test_the_legend_names_only_the_codes_whose_marks_are_shown(capsys, monkeypatch):
    _, body, out = table_at(capsys, monkeypatch, 200, "list", "--arch", "S/16", "--ds", "i21k",
                            "--limit", "3")
    assert MISSING not in "".join(body)
    assert legend_codes(out) == ["per_arch_throughput"]
    # a column that is not shown has no marks and no legend line
    _, body, out = table_at(capsys, monkeypatch, 200, "list", "--arch", "S/16", "--ds", "i21k",
                            "--limit", "3", "--columns", "checkpoint,adapt_ds")
    assert THROUGHPUT not in "".join(body) and legend_codes(out) == []
    assert "caveats" not in out  # the codes are marks in a table, never a column


@pytest.mark.parametrize("width", [80, 200])
def test_unconfirmed_b8_candidates_are_marked_on_their_names(capsys, monkeypatch, width):
    _, body, out = table_at(capsys, monkeypatch, width, "list", "--arch", "B/8", "--ds", "i21k",
                            "--aug", "none", "--limit", "3")
    assert len(body) == 3 and all(line.split()[0].endswith(B8) for line in body)
    assert "b8_candidate" in legend_codes(out)
    rows = list(csv.DictReader(io.StringIO(machine(capsys, "list", "--arch", "B/8", "--ds", "i21k",
                                                   "--aug", "none", "--limit", "3", fmt="csv"))))
    assert {r["caveats"] for r in rows} == {"b8_candidate"}


@pytest.mark.parametrize("width", [80, 200])
def test_unverified_i21k_30_spellings_are_marked_in_the_pretrained_view(capsys, monkeypatch, width):
    args = ("list", "--pretrained", "--ds", "i21k_30", "--arch", "Ti/16", "--limit", "3")
    _, body, out = table_at(capsys, monkeypatch, width, *args)
    assert all(line.split()[0].endswith(UNCONFIRMED) for line in body)
    assert legend_codes(out) == ["unconfirmed_name"]  # not the fine-tunes' throughput
    rows = json.loads(machine(capsys, *args, fmt="json"))
    assert [r["caveats"] for r in rows] == ["unconfirmed_name"] * 3
    _, body, _ = table_at(capsys, monkeypatch, 200, "list", "--pretrained", "--ds", "i21k",
                          "--arch", "Ti/16", "--limit", "3")
    assert not any(line.split()[0].endswith(UNCONFIRMED) for line in body)


def test_expected_legacy_values_are_marked_on_the_value(capsys, monkeypatch):
    _, body, out = table_at(capsys, monkeypatch, 80, "list", "--collection",
                            "imagenet21k+imagenet2012", "--where", "notnull(adapt_final_test)",
                            "--columns", "checkpoint,name,adapt_final_test")
    # fractions 0.812 and 0.827 in data, percentages in the table (the unit rule)
    assert [line.split()[-1] for line in body] == [f"81.20%{EXPECTED}", f"82.70%{EXPECTED}"]
    assert legend_codes(out) == ["expected_value"]


def test_recommend_carries_the_caveats_column_and_marks_its_rows(capsys, monkeypatch):
    rows = json.loads(machine(capsys, "recommend", fmt="json"))
    assert all("caveats" in row for row in rows)
    header = machine(capsys, "recommend", fmt="csv").splitlines()[0].split(",")
    assert "caveats" in header
    _, body, out = table_at(capsys, monkeypatch, 80, "recommend", "--pareto", "--metric", "final_val")
    # one table per dataset, throughput right after the name: its mark follows the number
    assert body and all(line.split()[1].endswith(THROUGHPUT) for line in body)
    assert legend_codes(out) == ["per_arch_throughput"]


def test_marks_keep_numbers_aligned_and_fall_on_the_first_column_without_a_name():
    table = Frame({"name": ["B/16", "B/8"], "infer_samples_per_sec": [137.9, 12.5],
                   "caveats": ["", "per_arch_throughput,b8_candidate"]})
    cells, marks = _marked_rows(table, ["name", "infer_samples_per_sec"])
    assert cells == [["B/16", "137.9"], ["B/8", "12.5"]]
    assert marks == [["", " "], [B8, THROUGHPUT]]  # the unmarked number is padded to align
    assert caveat_legend(B8 + " ")[0].startswith(f"{B8} b8_candidate: ")


def test_plot_draws_caveated_points_hollow_with_a_legend_entry():
    table = load_table()
    data = scatter_data(table, filters=Filters())
    hollow = [bool(codes) for codes in data.caveats]
    assert sum(hollow) == 67 and {c for codes in data.caveats for c in codes} == {"per_arch_throughput"}
    assert any(note.startswith("67 hollow points: per_arch_throughput") for note in data.notes)
    fig = new_figure((800, 600))
    ax = fig.add_subplot()
    draw_scatter(ax, data)
    drawn_hollow = sum(len(c.get_offsets()) for c in ax.collections[:-1]
                       if len(c.get_facecolors()) == 0)
    assert drawn_hollow == 67
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "hollow: caveat per_arch_throughput" in legend
    # The published ImageNet results at 384 px carry no caveat: all filled, no hollow entry.
    clean = scatter_data(table, y="adapt_final_test",
                         filters=Filters(adapt_ds=["imagenet2012"], res=[384]))
    assert not any(clean.caveats)
    ax = new_figure((800, 600)).add_subplot()
    draw_scatter(ax, clean)
    assert not any(t.get_text().startswith("hollow") for t in ax.get_legend().get_texts())


def test_the_readme_states_the_marks_the_tables_use():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    convention = readme[readme.index("How they are shown"):]
    convention = " ".join(convention[:convention.index("\n\n")].split())
    for code, mark in CAVEAT_MARKS.items():
        assert f"`{mark}` {code}" in convention, code
    assert "hollow" in convention and "`caveats` column" in convention
