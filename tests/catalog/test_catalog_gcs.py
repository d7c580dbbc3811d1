"""``vitzoo index build`` against a real GCS JSON API (the local emulator)."""

from __future__ import annotations

import hashlib
import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.bucket_factory import fake_index_rows, index_csv_bytes
from tests.support.gcs_emulator import GatewayServer, deny_paths
from vitzoo.catalog.build import build_catalog
from vitzoo.cli import app

INDEX_URL = "gs://vit_models/augreg/index.csv"


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    return index_csv_bytes(fake_index_rows(seed=3))


@pytest.fixture
def bucket(gcs, csv_bytes):
    gcs.create_bucket("vit_models")
    gcs.upload("vit_models", "augreg/index.csv", csv_bytes)
    rows = fake_index_rows(seed=3)
    present = rows[0]["adapt_filename"], rows[0]["filename"]
    for name in present:
        gcs.upload("vit_models", f"augreg/{name}.npz", b"PK\x03\x04" + name.encode())
    return gcs, present


def test_build_from_the_bucket_with_listing(bucket, tmp_path, csv_bytes):
    _, (adapt, upstream) = bucket
    result = build_catalog(tmp_path, index_csv=INDEX_URL)
    kinds = [s["kind"] for s in result.manifest["sources"]]
    assert kinds == ["embedded", "index.csv", "listing"]
    csv_source = result.manifest["sources"][1]
    assert csv_source["url"] == INDEX_URL
    assert csv_source["md5"] == hashlib.md5(csv_bytes).hexdigest()
    assert csv_source["generation"]
    assert result.manifest["sources"][2]["objects"] == 2
    table = pq.read_table(result.catalog_path)
    augreg = table.filter(pc.equal(table.column("collection"), "augreg"))
    assert augreg.num_rows == 51_509
    row = augreg.filter(pc.equal(augreg.column("adapt_filename"), adapt)).to_pylist()[0]
    assert row["exists"] is True and row["exists_source"].startswith("bucket listing")
    assert row["size_bytes"] == 4 + len(adapt)
    assert row["md5"] == hashlib.md5(b"PK\x03\x04" + adapt.encode()).hexdigest()
    assert row["upstream_size_bytes"] == 4 + len(upstream)
    absent = augreg.filter(pc.equal(augreg.column("exists"), False))
    assert absent.num_rows == 51_508
    again = build_catalog(tmp_path, index_csv=INDEX_URL)
    assert again.changed is False


def test_bucket_refusing_access_is_one_clear_line(bucket, tmp_path, monkeypatch):
    gcs, _ = bucket
    gateway = GatewayServer(gcs.url, deny=deny_paths(("/",), status=403))
    try:
        monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
        out = tmp_path / "home"
        out.mkdir()
        (out / "manifest.json").write_text(json.dumps({"keep": "me"}))
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, ["index", "build", "--source", INDEX_URL, "--out", str(out)])
    finally:
        gateway.stop()
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception)
    from vitzoo.errors import VitzooError

    assert isinstance(result.exception, VitzooError)
    message = str(result.exception)
    assert "403" in message and INDEX_URL in message and "\n" not in message
    assert json.loads((out / "manifest.json").read_text()) == {"keep": "me"}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_missing_object_is_not_found(bucket, tmp_path):
    from vitzoo.errors import VitzooError

    with pytest.raises(VitzooError, match="not found"):
        build_catalog(tmp_path, index_csv="gs://vit_models/augreg/nope.csv")


def test_build_from_an_https_copy(bucket, tmp_path):
    gcs, _ = bucket
    url = f"{gcs.url}/vit_models/augreg/index.csv"  # the emulator serves public media over http
    result = build_catalog(tmp_path, index_csv=url)
    assert [s["kind"] for s in result.manifest["sources"]] == ["embedded", "index.csv"]
    assert result.manifest["rows_by_source"]["index.csv"] == 51_509
    assert any("bucket listing not read" in m for m in result.manifest["missing"])


def test_unreachable_bucket_is_a_clear_error(tmp_path):
    # conftest points GCS at a closed local port: the network is "down".
    from vitzoo.errors import VitzooError

    with pytest.raises(VitzooError) as err:
        build_catalog(tmp_path, index_csv=INDEX_URL)
    message = str(err.value)
    assert "cannot reach" in message and INDEX_URL in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
