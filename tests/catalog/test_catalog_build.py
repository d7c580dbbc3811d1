"""``vitzoo index build``: sources, validation, atomicity, provenance."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.bucket_factory import fake_index_rows, index_csv_bytes
from vitzoo.catalog import build as build_mod
from vitzoo.catalog import store
from vitzoo.catalog.build import build_catalog
from vitzoo.catalog.recommend import recommend_table
from vitzoo.catalog.schema import INDEX_CSV_NAMES
from vitzoo.errors import VitzooError

README_TABLE = {  # vit_jax README "recommended checkpoints": arch -> (aug, wd, do)
    "L/16": ("strong1", 0.1, 0.0), "B/16": ("medium1", 0.1, 0.0), "S/16": ("light1", 0.03, 0.0),
    "R50+L/32": ("medium1", 0.1, 0.1), "R26+S/32": ("light1", 0.1, 0.0),
    "Ti/16": ("none", 0.03, 0.0), "B/32": ("light1", 0.1, 0.0), "S/32": ("none", 0.1, 0.0),
    "R+Ti/16": ("none", 0.03, 0.0), "B/8": ("medium2", 0.1, 0.0),
}


@pytest.fixture(scope="module")
def fake_rows() -> list[dict]:
    return fake_index_rows(seed=7)


@pytest.fixture(scope="module")
def fake_csv(fake_rows, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bucket") / "index.csv"
    path.write_bytes(index_csv_bytes(fake_rows))
    return path


@pytest.fixture(scope="module")
def embedded_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embedded")
    build_catalog(out, index_csv=None, listing=None)
    return out


def _read(out: Path):
    return pq.read_table(store.locate(out).path)


def test_embedded_catalog_covers_the_release(embedded_build):
    table = _read(embedded_build)
    augreg = table.filter(pc.equal(table.column("collection"), "augreg"))
    assert augreg.num_rows >= 51_509
    assert pc.count_distinct(augreg.column("filename")).as_py() == 756 + 28
    legacy = table.filter(pc.equal(table.column("row_source"), "legacy"))
    assert legacy.num_rows > 0
    assert "imagenet21k+imagenet2012" in set(legacy.column("collection").to_pylist())
    assert any("/imagenet21k/ViT-B_16.npz" in (u or "") for u in legacy.column("url").to_pylist())
    manifest = store.read_manifest(store.locate(embedded_build))
    assert manifest["rows"] == table.num_rows
    assert manifest["sources"][0]["kind"] == "embedded"
    assert any("index.csv not read" in m for m in manifest["missing"])


def test_no_invented_values_in_the_embedded_catalog(embedded_build):
    rows = _read(embedded_build).to_pylist()
    for row in rows:
        for column in ("best_val", "final_val", "final_test", "adapt_final_val",
                       "adapt_final_test", "infer_samples_per_sec", "params"):
            if row[column] is not None and row["row_source"] != "index.csv":
                assert f"{column}=" in (row["value_sources"] or ""), (row["checkpoint"], column)
    # best_val, final_test and params are never published per checkpoint: all unknown; the
    # other families' files have timm's parameter count (its model, counted; sourced above).
    assert all(r["best_val"] is None for r in rows)
    assert all((r["params"] is None) == (r["family"] is None) for r in rows)


def test_published_values_land_on_the_right_rows(embedded_build):
    table = _read(embedded_build)
    name = ("R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"
            "--oxford_iiit_pet-steps_0k-lr_0.003-res_384")
    row = table.filter(pc.equal(table.column("checkpoint"), name)).to_pylist()[0]
    assert row["adapt_final_val"] == pytest.approx(0.967391)
    assert row["adapt_final_test"] == pytest.approx(0.941946)
    assert row["exists"] is True
    rti = table.filter(pc.equal(table.column("filename"),
                                "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"))
    assert set(rti.column("final_val").to_pylist()) == {0.39}


def test_uncertain_i21k_30_spelling_is_flagged(embedded_build):
    table = _read(embedded_build)
    i21k_30 = table.filter(pc.equal(table.column("ds"), "i21k_30"))
    assert i21k_30.num_rows == 9 * 28 * 68
    assert set(i21k_30.column("filename_verified").to_pylist()) == {False}
    assert all("i21k_30" in n for n in i21k_30.column("note").to_pylist())


def test_embedded_recommendation_is_the_readme_table(embedded_build):
    chosen, notes = recommend_table(_read(embedded_build))
    rows = {r["name"]: r for r in chosen.to_pylist()}
    assert set(rows) == set(README_TABLE)
    for arch, (aug, wd, do) in README_TABLE.items():
        assert (rows[arch]["aug"], rows[arch]["wd"], rows[arch]["do"]) == (aug, wd, do)
        assert rows[arch]["basis"].startswith("published recommendation")
    assert [r["name"] for r in chosen.to_pylist()][:3] == ["L/16", "B/16", "S/16"]
    assert any("not in this index" in n for n in notes)


def test_build_from_a_real_index_csv_ranks_by_final_val(fake_csv, fake_rows, tmp_path):
    result = build_catalog(tmp_path, index_csv=str(fake_csv), listing=None)
    table = _read(tmp_path)
    augreg = table.filter(pc.equal(table.column("collection"), "augreg"))
    assert augreg.num_rows == 51_509
    assert set(augreg.column("row_source").to_pylist()) == {"index.csv"}
    assert result.manifest["rows_by_source"]["index.csv"] == 51_509
    csv_source = result.manifest["sources"][1]
    assert csv_source["kind"] == "index.csv" and csv_source["rows"] == 51_509 and csv_source["md5"]
    # 28 B/8 grid candidates, minus the 3 the index has, are dropped with their fine-tunes.
    assert any("were dropped" in m for m in result.messages)
    chosen, notes = recommend_table(table)
    expected = {}
    for row in fake_rows:
        if row["ds"] == "i21k":
            best = expected.get(row["name"])
            if best is None or row["final_val"] > best["final_val"]:
                expected[row["name"]] = row
    for row in chosen.to_pylist():
        assert row["filename"] == expected[row["name"]]["filename"]
        assert row["basis"].startswith("best final_val")
    assert notes == []


def test_rebuild_with_unchanged_sources_is_a_no_op(fake_csv, tmp_path):
    build_catalog(tmp_path, index_csv=str(fake_csv), listing=None)
    location = store.locate(tmp_path)
    before = location.path.stat().st_mtime_ns, location.manifest_path.read_bytes()
    again = build_catalog(tmp_path, index_csv=str(fake_csv), listing=None)
    assert again.changed is False and "catalog is up to date" in again.messages
    assert store.locate(tmp_path) == location
    after = location.path.stat().st_mtime_ns, location.manifest_path.read_bytes()
    assert before == after
    forced = build_catalog(tmp_path, index_csv=str(fake_csv), listing=None, force=True)
    assert forced.changed is True


def _csv_with(fake_rows, mutate) -> bytes:
    rows = [dict(r) for r in fake_rows[:300]]
    mutate(rows)
    return index_csv_bytes(rows)


def _expect_failure(tmp_path, data: bytes, fragment: str, embedded_build) -> str:
    out = tmp_path / "out"
    shutil.copytree(embedded_build, out)
    before = _tree(out)
    source = tmp_path / "index.csv"
    source.write_bytes(data)
    with pytest.raises(VitzooError) as err:
        build_catalog(out, index_csv=str(source), listing=None)
    message = str(err.value)
    assert fragment in message, message
    assert str(source) in message and "\n" not in message
    assert _tree(out) == before  # nothing lost, no temp files
    return message


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_truncated_csv_is_refused(fake_csv, tmp_path, embedded_build):
    data = fake_csv.read_bytes()
    cut = data[: len(data) // 2]
    cut = cut[: cut.rfind(b",") + 1]  # stop in the middle of a row
    _expect_failure(tmp_path, cut, "truncated", embedded_build)


def test_missing_columns_are_named(fake_rows, tmp_path, embedded_build):
    buffer = io.StringIO()
    names = [n for n in INDEX_CSV_NAMES if n not in ("final_val", "adapt_filename")]
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(fake_rows[:10])
    message = _expect_failure(tmp_path, buffer.getvalue().encode(), "missing columns", embedded_build)
    assert "final_val" in message and "adapt_filename" in message


def test_non_numeric_accuracy_names_row_and_column(fake_rows, tmp_path, embedded_build):
    def mutate(rows):
        rows[41]["adapt_final_val"] = "n/a%"
    message = _expect_failure(tmp_path, _csv_with(fake_rows, mutate), "row 42 (line 43)", embedded_build)
    assert "'adapt_final_val'" in message and "'n/a%'" in message


def test_accuracy_out_of_range(fake_rows, tmp_path, embedded_build):
    def mutate(rows):
        rows[5]["final_val"] = 47.7
    _expect_failure(tmp_path, _csv_with(fake_rows, mutate), "final_val=47.7 is not an accuracy",
                    embedded_build)


def test_malicious_filename_is_refused(fake_rows, tmp_path, embedded_build):
    def mutate(rows):
        rows[3]["adapt_filename"] = "../../../../etc/cron.d/owned"
    message = _expect_failure(tmp_path, _csv_with(fake_rows, mutate), "unsafe adapt_filename", embedded_build)
    assert "row 4" in message


def test_filename_inconsistent_with_columns(fake_rows, tmp_path, embedded_build):
    def mutate(rows):
        rows[10]["aug"] = "strong2"
    message = _expect_failure(tmp_path, _csv_with(fake_rows, mutate), "disagrees with", embedded_build)
    assert "aug='strong2'" in message and "row 11" in message


def test_unknown_resolution(fake_rows, tmp_path, embedded_build):
    def mutate(rows):
        rows[0]["adapt_resolution"] = 500
    _expect_failure(tmp_path, _csv_with(fake_rows, mutate), "unknown adapt_resolution 500", embedded_build)


def test_html_error_page_is_not_a_csv(tmp_path, embedded_build):
    _expect_failure(tmp_path, b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
                    "HTML/XML page", embedded_build)


def test_interrupted_build_leaves_the_old_catalog(fake_csv, tmp_path, embedded_build, monkeypatch):
    out = tmp_path / "out"
    build_catalog(out, index_csv=None, listing=None)
    before = _tree(out)
    real_write = build_mod.pq.write_table

    def write_then_die(table, where, **kwargs):
        real_write(table.slice(0, 10), where, **kwargs)  # a partial file on disk...
        raise KeyboardInterrupt  # ...and the process is interrupted

    monkeypatch.setattr(build_mod.pq, "write_table", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_catalog(out, index_csv=str(fake_csv), listing=None)
    assert _tree(out) == before


def test_column_file_mirrors_the_parquet_and_stale_ones_are_ignored(embedded_build, tmp_path):
    from vitzoo.catalog.frame import read_column_file
    from vitzoo.catalog.store import CatalogLocation, read_frame

    table = _read(embedded_build)
    location = store.locate(embedded_build)
    fast = read_column_file(location.columns_path, location.path, None)
    assert fast is not None
    assert fast.to_pydict() == table.to_pydict()
    subset = read_frame(location, ["name", "adapt_final_val"])
    assert subset.column_names == ["name", "adapt_final_val"]
    assert subset.column("adapt_final_val") == table.column("adapt_final_val").to_pylist()
    # A column file that belongs to another parquet is not trusted: the parquet is read.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "catalog.parquet").write_bytes(_read_bytes_with_one_change(embedded_build))
    (copy / "catalog.cols").write_bytes(location.columns_path.read_bytes())
    stale = CatalogLocation(copy / "catalog.parquet", "option")
    assert read_column_file(stale.columns_path, stale.path, None) is None
    assert read_frame(stale, ["name"]).column("name")[0] == "changed"
    (copy / "catalog.cols").write_bytes(b"garbage")
    assert read_frame(stale, ["name"]).column("name")[0] == "changed"


def _read_bytes_with_one_change(out: Path) -> bytes:
    import pyarrow as pa

    table = _read(out)
    names = table.column("name").to_pylist()
    names[0] = "changed"
    table = table.set_column(table.schema.get_field_index("name"), "name", pa.array(names))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
