"""Verified, resumable, locked downloads from the cache, mirrors, GCS (emulator) and the Hub."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tests.support.ckpt_factory import tiny_vit_arrays
from tests.support.gcs_emulator import GatewayServer, closed_port_url, deny_paths
from vitzoo.download import cache
from vitzoo.download import resolve as fetch
from vitzoo.errors import VitzooError

BUCKET = "vit_models"
NAME = "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--cifar100-steps_2k-lr_0.01-res_224"


def npz_payload(seed: int = 0, n: int = 20_000) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, **{"head/kernel": rng.standard_normal((n // 10, 10)).astype(np.float32),
                     "head/bias": rng.standard_normal(10).astype(np.float32)})
    return buf.getvalue()


PAYLOAD = npz_payload()


@dataclass(frozen=True)
class FakeInfo:
    """The attributes of vitzoo.catalog.api.CheckpointInfo that fetch uses."""

    filename: str
    collection: str = "augreg"
    url: str | None = None
    size_bytes: int | None = None
    md5: str | None = None
    crc32c: str | None = None
    hf_repo: str | None = None
    local_path: str | None = None
    name: str | None = None


@pytest.fixture
def bucket(gcs):
    gcs.create_bucket(BUCKET)
    gcs.upload(BUCKET, f"augreg/{NAME}.npz", PAYLOAD)
    return gcs


@pytest.fixture
def gateway(bucket, monkeypatch):
    """GCS reads go through a counting gateway in front of the emulator."""
    gw = GatewayServer(bucket.url)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gw.url)
    yield gw
    gw.stop()


def info(**overrides) -> FakeInfo:
    values = {"filename": NAME, "url": f"gs://{BUCKET}/augreg/{NAME}.npz"}
    values.update(overrides)
    return FakeInfo(**values)


def get(inf: FakeInfo, **kwargs) -> Path:
    target = fetch.target_for(inf, **kwargs)
    return target if isinstance(target, Path) else fetch.fetch(target, progress=False)


def test_download_is_verified_recorded_and_then_served_from_cache(gateway):
    inf = info(size_bytes=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest())
    path = get(inf)
    assert path == cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    assert path.read_bytes() == PAYLOAD
    record = json.loads(cache.sidecar_of(path).read_text())
    assert record["source"] == "gcs" and record["size"] == len(PAYLOAD)
    assert record["md5"] == hashlib.md5(PAYLOAD).hexdigest()
    assert record["remote"]["generation"] > 0
    assert not cache.part_of(path).exists()
    assert gateway.media_bytes() == len(PAYLOAD)

    gateway.reset_counts()
    assert get(inf) == path
    assert gateway.requests == [], "a verified cache hit must not touch the network"


def test_catalog_name_resolves_through_the_real_catalog(gcs):
    from vitzoo.catalog.api import find_checkpoint

    found = find_checkpoint("S/16")
    assert found.url.startswith("gs://vit_models/augreg/")
    gcs.create_bucket(BUCKET)
    gcs.upload(BUCKET, found.url.removeprefix("gs://vit_models/"), PAYLOAD)
    path = fetch.resolve_checkpoint("S/16", progress=False)
    assert path.name == f"{found.filename}.npz"
    assert path.parent.name == "augreg" and path.read_bytes() == PAYLOAD


def test_corrupted_cache_file_is_detected_and_fetched_again(gateway):
    path = get(info())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "md5" in cache.check(path)
    gateway.reset_counts()
    assert get(info()).read_bytes() == PAYLOAD
    assert gateway.media_bytes() == len(PAYLOAD)


def test_truncated_cache_file_is_refetched(gateway):
    path = get(info())
    path.write_bytes(PAYLOAD[:1000])
    assert cache.check(path).startswith("size 1000 bytes")
    assert get(info()).read_bytes() == PAYLOAD


def test_html_error_page_in_cache_is_never_returned(gateway):
    path = cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>AccessDenied</html>")
    assert cache.check(path) == "not an npz file (no zip signature)"
    assert get(info()).read_bytes() == PAYLOAD


def test_catalog_hash_disagreeing_with_source_is_refused(gateway):
    with pytest.raises(VitzooError, match="but the catalog says"):
        get(info(md5="0" * 32), source="gcs")
    dest = cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    assert not dest.exists()


def test_interrupted_download_resumes_with_only_the_missing_bytes(bucket, monkeypatch):
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    served = {"n": 0}

    def fail_after_three(path: str) -> int | None:
        if path.startswith("/download/"):
            served["n"] += 1
            return 403 if served["n"] > 3 else None
        return None

    flaky = GatewayServer(bucket.url, deny=fail_after_three)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", flaky.url)
    try:
        with pytest.raises(VitzooError, match="access denied"):
            get(info(), source="gcs")
    finally:
        flaky.stop()
    dest = cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    part = cache.part_of(dest)
    assert part.stat().st_size == 3 * 4096 and not dest.exists()
    assert cache.entries()[0].state == "partial"

    healthy = GatewayServer(bucket.url)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", healthy.url)
    try:
        path = get(info(), source="gcs")
    finally:
        healthy.stop()
    assert path.read_bytes() == PAYLOAD
    ranges = [r.range for r in healthy.requests if r.path.startswith("/download/")]
    assert ranges[0].startswith(f"bytes={3 * 4096}-")
    assert healthy.media_bytes() == len(PAYLOAD) - 3 * 4096
    assert not part.exists() and not cache.sidecar_of(part).exists()


def test_corrupt_partial_download_is_restarted_not_trusted(gateway, monkeypatch, capsys):
    dest = cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    dest.parent.mkdir(parents=True)
    from vitzoo import storage

    meta = storage.stat(f"gs://{BUCKET}/augreg/{NAME}.npz")
    cache.part_of(dest).write_bytes(b"PK\x03\x04" + b"\x00" * 5000)  # wrong bytes
    cache.atomic_write_text(cache.sidecar_of(cache.part_of(dest)), json.dumps(meta))
    assert get(info()).read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "resuming" in err and "starting over" in err
    assert gateway.media_bytes() == (len(PAYLOAD) - 5004) + len(PAYLOAD)


def test_part_of_another_object_version_is_not_resumed(gateway, bucket):
    dest = cache.path_for(cache.safe_relpath(["augreg", f"{NAME}.npz"]))
    dest.parent.mkdir(parents=True)
    cache.part_of(dest).write_bytes(PAYLOAD[:5000])
    cache.atomic_write_text(cache.sidecar_of(cache.part_of(dest)), json.dumps(
        {"url": f"gs://{BUCKET}/augreg/{NAME}.npz", "size": len(PAYLOAD), "generation": 1}))
    assert get(info()).read_bytes() == PAYLOAD
    ranged = [r for r in gateway.requests if r.path.startswith("/download/") and r.range]
    assert ranged[0].range.startswith("bytes=0-")


def test_403_from_a_mirror_falls_through_to_gcs(bucket, monkeypatch, capsys):
    bucket.create_bucket("mirror")
    refusing = GatewayServer(bucket.url, deny=deny_paths(("/mirror/",)))
    monkeypatch.setenv("VITZOO_MIRRORS", f"{refusing.url}/mirror")
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", bucket.url)
    try:
        path = get(info())
    finally:
        refusing.stop()
    assert path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert f"mirror: access denied by {refusing.url}/mirror/augreg/{NAME}.npz (HTTP 403)" in err
    assert f"trying gcs gs://{BUCKET}/augreg/{NAME}.npz" in err
    assert "got " in err and "from gcs" in err
    assert json.loads(cache.sidecar_of(path).read_text())["source"] == "gcs"


def test_a_mirror_is_used_before_gcs(bucket, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "augreg").mkdir(parents=True)
    (mirror / "augreg" / f"{NAME}.npz").write_bytes(PAYLOAD)
    monkeypatch.setenv("VITZOO_MIRRORS", f"file://{mirror}")
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", closed_port_url())  # GCS would fail
    path = get(info(md5=hashlib.md5(PAYLOAD).hexdigest()))
    assert path.read_bytes() == PAYLOAD
    assert json.loads(cache.sidecar_of(path).read_text())["source"] == "mirror"


def test_every_source_failing_gives_one_error_listing_them(bucket, monkeypatch, tmp_path):
    refusing = GatewayServer(bucket.url, deny=deny_paths(("/storage/", "/download/")))
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", refusing.url)
    monkeypatch.setenv("VITZOO_MIRRORS", str(tmp_path / "empty-mirror"))
    try:
        with pytest.raises(VitzooError) as err:
            get(info(hf_repo="timm/not-in-the-offline-cache"))
    finally:
        refusing.stop()
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"could not fetch {NAME} from any source (")
    assert "cache: missing" in text
    assert "mirror: not found" in text
    assert "gcs: access denied by gs://" in text and "(HTTP 403)" in text
    assert "hf: hf://timm/not-in-the-offline-cache/model.safetensors is not in the local " \
           "Hugging Face cache" in text
    assert "VITZOO_MIRRORS" in text and "--gcs-auth" in text


# --- Hugging Face -------------------------------------------------------------


def _tiny_timm_ti16() -> tuple[dict, dict]:
    """Ti/16-shaped weights (real layer sizes, 2 classes, 16 px) in release and timm layout."""
    from vitzoo.models.configs import infer_config
    from vitzoo.weights.timm import release_to_timm

    release = tiny_vit_arrays(num_classes=2, image_size=16, patch=16, hidden=192, depth=12,
                              heads=3, mlp=768)
    config, _ = infer_config(release, "Ti/16")
    return release, release_to_timm(release, config)


def _populate_hf_cache(repo: str, state: dict) -> str:
    """Lay out a file in the Hugging Face cache exactly as hf_hub_download leaves it."""
    from safetensors.numpy import save_file

    from vitzoo.download import hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = hub.hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return commit


def test_403_from_gcs_falls_through_to_hugging_face_offline_cache(bucket, monkeypatch, capsys):
    pytest.importorskip("vitzoo.weights.timm")
    from vitzoo.weights.release import load_npz

    repo = "timm/vit_tiny_patch16_224.augreg_in21k"
    release, state = _tiny_timm_ti16()
    _populate_hf_cache(repo, state)
    refusing = GatewayServer(bucket.url, deny=deny_paths(("/storage/v1/b/vit_models",)))
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", refusing.url)
    try:
        path = get(info(hf_repo=repo, name="Ti/16", size_bytes=len(PAYLOAD)))
    finally:
        refusing.stop()
    err = capsys.readouterr().err
    assert "gcs: access denied by gs://" in err and f"trying hf {repo}" in err
    loaded = load_npz(path)
    assert sorted(loaded) == sorted(release)
    for key, value in release.items():
        np.testing.assert_array_equal(loaded[key], value)
    record = json.loads(cache.sidecar_of(path).read_text())
    assert record["source"] == "hf" and record["converted_from"] == f"hf:{repo}"
    # the catalog size describes the release file, not this conversion: still trusted
    assert cache.check(path, cache.Expected.of(size=len(PAYLOAD)), full=True) is None


def _serve_hub(repo: str, blob: bytes) -> tuple[object, str, list[str]]:
    """A tiny Hugging Face endpoint: HEAD/GET /<repo>/resolve/<rev>/model.safetensors."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    etag = hashlib.sha256(blob).hexdigest()

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            if not (self.path.startswith(f"/{repo}/resolve/")
                    and self.path.endswith("/model.safetensors")):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(blob)

        do_GET = do_HEAD = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", seen


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from vitzoo.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(extra)
    return env


@pytest.mark.slow
def test_cli_downloads_from_a_hugging_face_endpoint(tmp_path):
    pytest.importorskip("vitzoo.weights.timm")
    from safetensors.numpy import save

    from vitzoo.catalog.api import find_checkpoint

    found = find_checkpoint("Ti/16")
    assert found.hf_repo, "the catalog should know timm's copy of the recommended Ti/16"
    release, state = _tiny_timm_ti16()
    server, url, seen = _serve_hub(found.hf_repo, save(state))
    try:
        result = _cli(["download", "Ti/16", "--source", "hf", "--no-progress"],
                      _env(HF_ENDPOINT=url, VITZOO_HOME=str(tmp_path / "home"),
                           HF_HOME=str(tmp_path / "hf")))
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.name == f"{found.filename}.npz" and path.is_file()
    assert any(s.startswith("GET ") for s in seen)
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["embedding/kernel"], release["embedding/kernel"])


# --- concurrency, local files, safety -------------------------------------------


def test_two_processes_fetching_the_same_file_get_one_valid_copy(bucket, tmp_path):
    slow = GatewayServer(bucket.url, delay_s=1.0)
    code = ("import sys; from vitzoo.download.resolve import resolve_checkpoint; "
            "print(resolve_checkpoint(sys.argv[1], progress=False))")
    env = _env(VITZOO_GCS_ENDPOINT=slow.url, VITZOO_HOME=str(tmp_path / "home"))
    url = f"gs://{BUCKET}/augreg/{NAME}.npz"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        slow.stop()
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    path = Path(paths.pop())
    assert path.read_bytes() == PAYLOAD
    assert slow.media_bytes() == len(PAYLOAD), "the second process must reuse the first's file"
    assert any("waiting for another process" in err for _, err in outs)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []


def test_local_paths_are_returned_as_is(tmp_path):
    good = tmp_path / "mine.npz"
    good.write_bytes(PAYLOAD)
    assert fetch.resolve_checkpoint(str(good)) == good.resolve()
    assert fetch.resolve_checkpoint(f"file://{good}") == good.resolve()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(VitzooError, match="no zip signature"):
        fetch.resolve_checkpoint(str(bad))
    with pytest.raises(VitzooError, match="no such file"):
        fetch.resolve_checkpoint(str(tmp_path / "missing.npz"))


def test_registered_local_fine_tune(tmp_path):
    own = tmp_path / "run" / "final.npz"
    own.parent.mkdir()
    own.write_bytes(PAYLOAD)
    assert get(FakeInfo(filename="my-run", collection="local", local_path=str(own))) == own
    with pytest.raises(VitzooError, match="registered checkpoint my-run is missing"):
        get(FakeInfo(filename="my-run", collection="local", local_path=str(tmp_path / "x.npz")))


@pytest.mark.parametrize("field", ["filename", "collection"])
def test_unsafe_catalog_values_never_become_paths(field):
    bad = {"filename": "../../etc/passwd"} if field == "filename" else {"collection": "../x",
                                                                      "url": None}
    with pytest.raises(VitzooError, match="unsafe"):
        fetch.target_for(info(**bad))


def test_unsafe_object_path_in_url():
    with pytest.raises(VitzooError, match="unsafe"):
        fetch.target_for(info(url=f"gs://{BUCKET}/../escape/{NAME}.npz"))


def test_to_directory_copies_from_a_valid_cache_without_network(gateway, tmp_path):
    get(info())
    gateway.reset_counts()
    out = get(info(), to=tmp_path / "out")
    assert out == tmp_path / "out" / f"{NAME}.npz"
    assert out.read_bytes() == PAYLOAD and gateway.requests == []
    assert json.loads(cache.sidecar_of(out).read_text())["source"] == "cache"


def test_forced_source_prefix_url(bucket, tmp_path, monkeypatch):
    mirror = tmp_path / "m"
    (mirror / "augreg").mkdir(parents=True)
    (mirror / "augreg" / f"{NAME}.npz").write_bytes(PAYLOAD)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", closed_port_url())
    assert get(info(), source=f"file://{mirror}").read_bytes() == PAYLOAD
    with pytest.raises(VitzooError, match="unknown --source"):
        get(info(), source="ftp")
    with pytest.raises(VitzooError, match="no known Hugging Face copy"):
        get(info(), source="hf")


def test_url_download_goes_to_the_bucket_layout(gateway):
    path = fetch.resolve_checkpoint(f"gs://{BUCKET}/augreg/{NAME}.npz", progress=False)
    assert path.relative_to(cache.path_for(cache.safe_relpath(["augreg"])).parent).as_posix() \
        == f"augreg/{NAME}.npz"


def test_http_url_download_is_verified_by_archive_crcs(bucket, tmp_path):
    bucket.create_bucket("public")
    broken = bytearray(PAYLOAD)
    broken[2000] ^= 0xFF
    bucket.upload("public", "good.npz", PAYLOAD)
    bucket.upload("public", "broken.npz", bytes(broken))
    good = fetch.resolve_checkpoint(f"{bucket.url}/public/good.npz", progress=False)
    assert good.read_bytes() == PAYLOAD and "urls" in good.parts
    with pytest.raises(VitzooError, match="failed verification: archive member"):
        fetch.resolve_checkpoint(f"{bucket.url}/public/broken.npz", progress=False)


def test_one_download_through_emulator_and_gateway_moves_the_payload_once(gateway):
    path = get(info())
    assert path.read_bytes() == PAYLOAD
    assert gateway.media_bytes() == len(PAYLOAD)


# --- command line -------------------------------------------------------------


def _vitzoo(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    return _cli(args, _env(**env_extra), timeout=60)


def test_cli_download_prints_the_path(gateway):
    from typer.testing import CliRunner

    from vitzoo.cli import app

    result = CliRunner().invoke(app, ["download", f"gs://{BUCKET}/augreg/{NAME}.npz",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.read_bytes() == PAYLOAD


def test_cli_download_errors_are_one_line_without_traceback(bucket, tmp_path):
    env = {"VITZOO_GCS_ENDPOINT": bucket.url, "VITZOO_HOME": str(tmp_path / "home")}
    result = _vitzoo(["download", f"gs://{BUCKET}/augreg/missing.npz", "--source", "gcs"], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not fetch gs://vit_models/augreg/missing.npz from any "
                           "source (gcs: not found: gs://vit_models/augreg/missing.npz")
    assert result.stdout == ""


def test_cli_download_several_names_reports_each_failure(bucket, tmp_path):
    env = {"VITZOO_GCS_ENDPOINT": bucket.url, "VITZOO_HOME": str(tmp_path / "home")}
    result = _vitzoo(["download", f"gs://{BUCKET}/augreg/{NAME}.npz", "no-such-checkpoint",
                      "--no-progress"], env)
    assert result.returncode == 2, result.stderr
    assert Path(result.stdout.strip()).read_bytes() == PAYLOAD
    assert "error: unknown checkpoint 'no-such-checkpoint'" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 1 of 2 downloads failed: no-such-checkpoint. See the messages above.")
    assert "Traceback" not in result.stderr


def test_cli_cache_list_verify_clear(gateway, tmp_path):
    from typer.testing import CliRunner

    from vitzoo.cli import app

    runner = CliRunner()
    path = get(info())
    listed = runner.invoke(app, ["cache", "list"])
    assert listed.exit_code == 0
    assert NAME[:30] in listed.output and "recorded" in listed.output and "gcs" in listed.output

    verified = runner.invoke(app, ["cache", "verify"]).output.strip().splitlines()
    assert verified[0].endswith(": ok") and verified[-1].startswith("checked 1 file(s) in ")
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    assert "modified" in runner.invoke(app, ["cache", "list"]).output
    env = {"VITZOO_HOME": os.environ["VITZOO_HOME"]}
    verify = _vitzoo(["cache", "verify"], env)
    assert verify.returncode == 2
    assert f"augreg/{NAME}.npz: BAD: md5" in verify.stdout
    assert verify.stderr.strip() == ("error: 1 of 1 cached files failed verification. Delete "
                                     "them (--delete) and download again.")
    assert _vitzoo(["cache", "verify", "--delete"], env).returncode == 2
    assert not path.exists() and not cache.sidecar_of(path).exists()

    get(info())
    refused = _vitzoo(["cache", "clear"], env)  # stdin is not a terminal: no silent deletes
    assert refused.returncode == 2 and "without confirmation" in refused.stderr
    assert path.exists()
    missing = _vitzoo(["cache", "clear", "nope", "--yes"], env)
    assert missing.returncode == 2 and "'nope' is not in the cache" in missing.stderr
    cleared = runner.invoke(app, ["cache", "clear", NAME, "--yes"])
    assert cleared.exit_code == 0 and f"deleted {path}" in cleared.output
    assert not path.exists() and not cache.sidecar_of(path).exists()
    assert "cache is empty" in runner.invoke(app, ["cache", "list"]).output


def test_cache_verify_without_record_uses_archive_crcs(tmp_path):
    from typer.testing import CliRunner

    from vitzoo.cli import app

    dest = cache.path_for(cache.safe_relpath(["augreg", "manual.npz"]))
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    result = CliRunner().invoke(app, ["cache", "verify"])
    assert result.exit_code == 0
    assert "augreg/manual.npz: ok (no download record; archive CRCs checked)" in result.output
