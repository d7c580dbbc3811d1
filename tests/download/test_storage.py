"""vitzoo.storage against a real GCS emulator, a refusing gateway and a dead port."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys

import google_crc32c
import pytest

from tests.support.gcs_emulator import GatewayServer, closed_port_url, deny_paths
from vitzoo import storage
from vitzoo.errors import VitzooError

BUCKET = "vit_models"
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def bucket(gcs):
    gcs.create_bucket(BUCKET)
    gcs.upload(BUCKET, "augreg/index.csv", b"filename,size\nB_16,1\n")
    gcs.upload(BUCKET, "augreg/B_16-test.npz", PAYLOAD)
    gcs.upload(BUCKET, "augreg/sub/deep.txt", b"deep")
    gcs.upload(BUCKET, "other/outside.txt", b"outside")
    return gcs


def test_read_bytes_returns_content_and_normalised_metadata(bucket):
    data, meta = storage.read_bytes(f"gs://{BUCKET}/augreg/B_16-test.npz")
    assert data == PAYLOAD
    assert meta["size"] == len(PAYLOAD)
    assert meta["md5"] == hashlib.md5(PAYLOAD).hexdigest()  # GCS base64 -> hex
    expected_crc = base64.b64encode(
        google_crc32c.Checksum(PAYLOAD).digest()).decode()
    assert meta["crc32c"] == expected_crc
    assert isinstance(meta["generation"], int) and meta["generation"] > 0
    assert meta["etag"]
    assert meta["url"] == f"gs://{BUCKET}/augreg/B_16-test.npz"
    assert set(meta) == set(storage.META_KEYS)


def test_stat_matches_read(bucket):
    meta = storage.stat(f"gs://{BUCKET}/augreg/index.csv")
    data, read_meta = storage.read_bytes(f"gs://{BUCKET}/augreg/index.csv")
    assert meta == read_meta
    assert meta["size"] == len(data) == 21


def test_list_objects_is_recursive_and_relative(bucket):
    entries = storage.list_objects(f"gs://{BUCKET}/augreg/")
    names = [e["name"] for e in entries]
    assert names == ["B_16-test.npz", "index.csv", "sub/deep.txt"]
    npz = entries[0]
    assert npz["size"] == len(PAYLOAD)
    assert npz["md5"] == hashlib.md5(PAYLOAD).hexdigest()
    assert npz["crc32c"] and npz["generation"] and npz["etag"]


def test_list_objects_of_empty_prefix_is_empty(bucket):
    assert storage.list_objects(f"gs://{BUCKET}/no-such-prefix") == []


def test_iter_chunks_from_offset_reads_only_the_rest(bucket, monkeypatch):
    gateway = GatewayServer(bucket.url)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
    try:
        chunks = list(storage.iter_chunks(f"gs://{BUCKET}/augreg/B_16-test.npz",
                                          start=10_000, chunk_size=100))
    finally:
        gateway.stop()
    assert b"".join(chunks) == PAYLOAD[10_000:]
    ranged = [r for r in gateway.requests if r.range]
    assert ranged and all(r.range.startswith("bytes=") for r in ranged)
    assert int(ranged[0].range.split("=")[1].split("-")[0]) == 10_000
    media = sum(r.body_bytes for r in gateway.requests if r.path.startswith("/download/"))
    assert media == len(PAYLOAD) - 10_000


def test_emulator_reads_twice_through_one_filesystem(bucket):
    """Reads go through the plain JSON-API client (no gRPC bucket-type probe, see below)."""
    url = f"gs://{BUCKET}/augreg/index.csv"
    first, meta = storage.read_bytes(url)
    second, _ = storage.read_bytes(url)
    assert first == second and len(first) == meta["size"] > 0


def test_filesystem_is_the_plain_json_api_class(gcs):
    from gcsfs.core import GCSFileSystem

    fs, path = storage.filesystem("gs://vit_models/augreg/x.npz")
    assert type(fs) is GCSFileSystem
    assert path == "vit_models/augreg/x.npz"
    assert fs._endpoint == gcs.url
    assert fs.credentials.token == "anon"


def test_endpoint_changes_are_honoured(gcs, monkeypatch):
    first, _ = storage.filesystem("gs://b/o")
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", "http://127.0.0.1:1")
    second, _ = storage.filesystem("gs://b/o")
    assert first is not second
    assert second._endpoint == "http://127.0.0.1:1"


def test_storage_emulator_host_without_scheme(gcs_emulator, monkeypatch):
    monkeypatch.delenv("VITZOO_GCS_ENDPOINT", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url.removeprefix("http://"))
    gcs_emulator.create_bucket("plainhost")
    gcs_emulator.upload("plainhost", "x.txt", b"x")
    assert storage.read_bytes("gs://plainhost/x.txt")[0] == b"x"


@pytest.mark.parametrize("call", ["stat", "read_bytes", "list_objects", "iter_chunks"])
def test_403_is_one_clear_line(bucket, monkeypatch, call):
    gateway = GatewayServer(bucket.url, deny=deny_paths(
        (f"/storage/v1/b/{BUCKET}", f"/download/storage/v1/b/{BUCKET}")))
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
    url = f"gs://{BUCKET}/augreg/B_16-test.npz"
    try:
        with pytest.raises(VitzooError) as info:
            result = getattr(storage, call)(url)
            if call == "iter_chunks":
                list(result)
    finally:
        gateway.stop()
    text = str(info.value)
    assert "\n" not in text
    assert "access denied by gs://vit_models/augreg/B_16-test.npz" in text
    assert "(HTTP 403)" in text
    assert "refuses anonymous reads since Feb 2026" in text
    assert "VITZOO_MIRRORS" in text and "--gcs-auth" in text and "Hugging Face" in text
    refused = [r.path for r in gateway.requests if r.status == 403]
    assert refused and len(refused) == len(set(refused)), "a 403 must not be retried"


def test_401_is_access_denied_too(bucket, monkeypatch):
    gateway = GatewayServer(bucket.url, deny=deny_paths(("/storage/v1/b/",), status=401))
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
    try:
        with pytest.raises(VitzooError, match=r"access denied by .*\(HTTP 401\)"):
            storage.stat(f"gs://{BUCKET}/augreg/index.csv")
    finally:
        gateway.stop()


def test_404_object_and_bucket(bucket):
    with pytest.raises(VitzooError, match=r"^not found: gs://vit_models/augreg/missing.npz"):
        storage.stat(f"gs://{BUCKET}/augreg/missing.npz")
    with pytest.raises(VitzooError, match="not found: gs://no-such-bucket/x"):
        storage.read_bytes("gs://no-such-bucket/x")


def test_connection_refused_is_immediate_and_clear(monkeypatch):
    dead = closed_port_url()
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", dead)
    with pytest.raises(VitzooError) as info:
        storage.read_bytes("gs://vit_models/augreg/index.csv")
    text = str(info.value)
    assert text.startswith(f"cannot reach {dead.removeprefix('http://')}")
    assert "connection refused" in text and "VITZOO_GCS_ENDPOINT" in text
    assert "\n" not in text


def test_unresolvable_host_is_cannot_reach(monkeypatch):
    with pytest.raises(VitzooError, match=r"cannot reach no-such-host\.invalid:80"):
        storage.stat("http://no-such-host.invalid/file.npz")


def test_local_paths_and_file_urls(tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a.bin").write_bytes(b"abc")
    (tmp_path / "dir" / "sub" / "b.bin").write_bytes(b"de")
    data, meta = storage.read_bytes(f"file://{tmp_path}/dir/a.bin")
    assert data == b"abc" and meta["size"] == 3 and meta["md5"] is None
    assert [e["name"] for e in storage.list_objects(str(tmp_path / "dir"))] == [
        "a.bin", "sub/b.bin"]
    with pytest.raises(VitzooError, match="not found"):
        storage.stat(str(tmp_path / "nope"))
    with pytest.raises(VitzooError, match="is a folder"):
        storage.stat(str(tmp_path / "dir"))


def test_http_source_and_its_errors(bucket):
    """https:// URLs go through fsspec's HTTP filesystem; the emulator serves public media."""
    gateway = GatewayServer(bucket.url, deny=deny_paths(("/vit_models/other/",)))
    try:
        data, meta = storage.read_bytes(f"{gateway.url}/{BUCKET}/augreg/B_16-test.npz")
        assert data == PAYLOAD and meta["size"] == len(PAYLOAD)
        with pytest.raises(VitzooError, match=r"access denied by http://.*\(HTTP 403\)"):
            storage.read_bytes(f"{gateway.url}/{BUCKET}/other/outside.txt")
        with pytest.raises(VitzooError, match="not found"):
            storage.read_bytes(f"{gateway.url}/{BUCKET}/augreg/missing")
    finally:
        gateway.stop()


def test_s3_without_s3fs_says_what_to_install():
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(VitzooError, match="s3:// needs the s3fs package"):
            storage.filesystem("s3://bucket/key")
    else:
        _fs, path = storage.filesystem("s3://bucket/key")
        assert path == "bucket/key"


def test_unknown_scheme():
    with pytest.raises(VitzooError, match="unsupported URL scheme"):
        storage.filesystem("ftp2://x/y")


@pytest.mark.parametrize(("given", "expected"), [
    ("PyP+hpDZLiUAD8d92w0vUg==", "3f23fe8690d92e25000fc77ddb0d2f52"),
    ("3F23FE8690D92E25000FC77DDB0D2F52", "3f23fe8690d92e25000fc77ddb0d2f52"),
    (None, None),
])
def test_md5_hex(given, expected):
    assert storage.md5_hex(given) == expected


@pytest.mark.parametrize(("given", "expected"), [
    ("CNb0NA==", "CNb0NA=="),
    ("08d6f434", "CNb0NA=="),
    (0x08D6F434, "CNb0NA=="),
    (None, None),
])
def test_crc32c_b64(given, expected):
    assert storage.crc32c_b64(given) == expected


def test_malformed_hashes_are_user_errors():
    with pytest.raises(VitzooError, match="malformed md5"):
        storage.md5_hex("zz")
    with pytest.raises(VitzooError, match="malformed crc32c"):
        storage.crc32c_b64("nope!")


def test_import_is_cheap():
    code = ("import sys, vitzoo.storage; "
            "bad = [m for m in ('gcsfs', 'fsspec', 'aiohttp', 'jax', 'flax', 'tensorflow') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gcs_auth_without_credentials_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(VitzooError, match=r"^--gcs-auth: no usable Google credentials .*"
                                          r"gcloud auth application-default login"):
        storage.filesystem("gs://vit_models/augreg/index.csv", gcs_auth=True)
