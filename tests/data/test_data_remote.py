"""Image folders in a bucket (``--dataset gs://...``) against the GCS emulator.

The same folder read locally and from the bucket must give the same dataset (classes,
labels, bytes, skipped files, splits); a refusing gateway is one clear line; an object
replaced or deleted between the listing and the read is skipped with its generations;
over the memory budget the objects are copied once to ``VITZOO_HOME/remote`` (ordinary
local files, which the pipeline reads as for any local folder) and never downloaded again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.adapt_helpers import color_image, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli
from tests.support.gcs_emulator import GatewayServer, closed_port_url, deny_paths
from tests.support.images import mixed_image_folder
from vitzoo.data import open_dataset
from vitzoo.data.folder import load_folder
from vitzoo.data.remote import RemotePath, dataset_folder
from vitzoo.errors import VitzooError

BUCKET = "photos"


def _upload(gcs, root: Path, prefix: str) -> str:
    """Upload every file under ``root`` to ``gs://photos/<prefix>/...``; return that URL."""
    gcs.create_bucket(BUCKET)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        gcs.upload(BUCKET, f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return f"gs://{BUCKET}/{prefix}"


def test_bucket_folder_is_the_same_dataset_as_the_local_folder(gcs, tmp_path):
    local = write_folder(tmp_path / "pets", color_image, ["cat", "dog", "eel"], train=3, test=2)
    url = _upload(gcs, local, "pets")
    here, there = open_dataset(str(local)), open_dataset(url)
    assert there.class_names == here.class_names == ["cat", "dog", "eel"]
    assert (there.train_split, there.eval_split, there.kind) == ("train", "test", "folder")
    for a, b in ((here.train, there.train), (here.eval, there.eval)):
        assert b.labels.tolist() == a.labels.tolist()
        assert b.payload == a.payload and isinstance(b.payload[0], bytes)  # same bytes, in memory
    assert there.name == url
    listed = there.notes[0]
    assert listed.startswith(f"listed 15 objects under {url}; fingerprint ") and "generation" in listed
    # gcs:// is the same bucket; the fingerprint names the same listing.
    again = open_dataset(f"gcs://{BUCKET}/pets/")
    assert again.notes[0] == listed and again.eval.payload == there.eval.payload


def test_mixed_formats_corrupt_file_and_carved_split_match_local(gcs, tmp_path):
    local = mixed_image_folder(tmp_path / "mixed")
    url = _upload(gcs, local, "mixed")
    here, there = open_dataset(str(local), val_fraction=0.3), open_dataset(url, val_fraction=0.3)
    assert there.skipped == here.skipped == [("dog/broken.jpg", here.skipped[0][1])]
    assert there.eval.labels.tolist() == here.eval.labels.tolist()
    assert there.train.payload == here.train.payload  # conversions (CMYK, palette BMP...) identical
    assert there.notes[1:] == here.notes


def test_over_the_memory_budget_objects_are_copied_once(gcs, tmp_path, monkeypatch):
    from vitzoo.config import vitzoo_home

    local = write_folder(tmp_path / "pets", color_image, ["r", "g"], train=4, test=2, size=20)
    url = _upload(gcs, local, "big")
    monkeypatch.setenv("VITZOO_MEMORY_BUDGET", "1")
    gateway = GatewayServer(gcs.url)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
    try:
        data = open_dataset(url)
        first = gateway.media_bytes()
        gateway.reset_counts()
        resumed = open_dataset(url)
        second = gateway.media_bytes()
    finally:
        gateway.stop()
    assert data.train.from_files and data.eval.from_files
    copies = sorted((vitzoo_home() / "remote").iterdir())
    assert len(copies) == 12 and all(c.suffix == ".png" for c in copies)
    assert sorted(data.train.payload + data.eval.payload) == [str(c) for c in copies]
    assert first == sum(p.stat().st_size for p in local.rglob("*.png"))
    assert second == 0 and resumed.eval.payload == data.eval.payload  # a resumed run reads the copies
    originals = [(local / "test" / c / f"{i}.png").read_bytes() for c in ("g", "r") for i in (0, 1)]
    assert [Path(p).read_bytes() for p in data.eval.payload] == originals
    assert data.eval.labels.tolist() == [0, 0, 1, 1]


def test_object_replaced_or_deleted_after_listing_is_skipped_with_its_generations(gcs, tmp_path):
    local = write_folder(tmp_path / "pets", color_image, ["cat", "dog"], train=3, test=None)
    url = _upload(gcs, local, "live")
    folder = dataset_folder(url)
    assert isinstance(folder, RemotePath)
    listed = folder.listing.objects["cat/1.png"]["generation"]
    write_folder(tmp_path / "new", color_image, ["x"], train=1, test=None, seed=7)
    replacement = (tmp_path / "new" / "x" / "0.png").read_bytes()
    now = gcs.upload(BUCKET, "live/cat/1.png", replacement)["generation"]
    gcs.delete(BUCKET, "live/dog/2.png")
    data = load_folder(folder, val_fraction=0.5)
    reasons = dict(data.skipped)
    assert reasons["cat/1.png"] == (f"ObjectChanged: changed during the run (generation {listed} "
                                    f"listed, generation {now} now)")
    assert reasons["dog/2.png"] == f"ObjectChanged: deleted during the run (generation " \
        f"{folder.listing.objects['dog/2.png']['generation']} listed)"
    assert len(data.train) + len(data.eval) == 4
    assert replacement not in data.train.payload + data.eval.payload
    assert "skipped 2 unreadable file(s)" in data.notes


def test_refusing_bucket_is_one_line_naming_gcs_auth(gcs, tmp_path, monkeypatch):
    local = write_folder(tmp_path / "pets", color_image, ["cat", "dog"], train=2, test=None)
    url = _upload(gcs, local, "private")
    for refused, action in ((("/",), "listing the image folder gs://photos/private"),
                            (("/download/",), "reading gs://photos/private/")):
        gateway = GatewayServer(gcs.url, deny=deny_paths(refused, status=403))
        monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gateway.url)
        try:
            with pytest.raises(VitzooError) as caught:
                open_dataset(url)
        finally:
            gateway.stop()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"access denied {action}")
        assert "(HTTP 403)" in message and "--gcs-auth" in message


@pytest.mark.parametrize("dataset, message", [
    ("gs://photos/nothing-here", "no objects under gs://photos/nothing-here"),
    ("https://example.org/photos", "https:// has no listing"),
    ("gs://photos/one", "has only one class"),
])
def test_bad_bucket_folders_fail_with_clear_errors(gcs, tmp_path, dataset, message):
    gcs.create_bucket(BUCKET)
    gcs.upload(BUCKET, "one/only/a.png", (write_folder(tmp_path / "x", color_image, ["a", "b"],
                                                       train=1, test=None) / "a" / "0.png").read_bytes())
    with pytest.raises(VitzooError, match=message):
        open_dataset(dataset)


def test_unreachable_endpoint_and_file_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", closed_port_url())
    with pytest.raises(VitzooError, match="cannot reach"):
        open_dataset("gs://photos/pets")
    local = write_folder(tmp_path / "pets", color_image, ["cat", "dog"], train=2, test=1)
    assert open_dataset(f"file://{local}").eval.payload == open_dataset(str(local)).eval.payload


def test_every_command_that_reads_a_dataset_takes_gcs_auth(gcs, capsys, monkeypatch, tmp_path):
    """The folder is read with credentials requested: a missing credentials file says so."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    ckpt = str(tiny_checkpoint(tmp_path / "tiny.npz"))
    for command in (["evaluate", ckpt], ["finetune", "B/16"], ["probe", "--candidates", ckpt],
                    ["finetune", ckpt, "--head-only", "--workdir", str(tmp_path / "head")],
                    ["recommend", "--candidates", ckpt]):
        code, _, err = run_cli(capsys, *command, "--dataset", "gs://photos/pets", "--gcs-auth")
        assert code != 0
        assert "--gcs-auth: no usable Google credentials" in err and "Traceback" not in err


@pytest.mark.slow
def test_finetune_and_evaluate_from_the_bucket(gcs, tmp_path):
    from tests.support.adapt_helpers import cli

    local = write_folder(tmp_path / "pets", color_image, ["red", "green"], train=6, test=2, size=36)
    url = _upload(gcs, local, "pets")
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work = tmp_path / "run"
    env = {"VITZOO_HOME": str(tmp_path / "home"), "VITZOO_MEMORY_BUDGET": "1"}
    proc = cli(["finetune", str(ckpt), "--dataset", url, "--workdir", str(work), "--steps", "3",
                "--warmup", "1", "--batch", "4", "--res", "32", "--eval-every", "0",
                "--no-progress", "--no-register"], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    run = json.loads((work / "run.json").read_text())
    assert run["dataset"]["name"] == url and run["dataset"]["train_examples"] == 12
    assert run["dataset"]["notes"][0].startswith(f"listed 16 objects under {url}")
    proc = cli(["evaluate", str(work / "final.npz"), "--dataset", url, "--format", "json"], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["examples"] == 4 and report["dataset"] == url


def test_objects_are_read_in_parallel(gcs, tmp_path, monkeypatch):
    """Four reads must be in flight at once to pass the barrier; sequential reads would break it."""
    import threading

    local = write_folder(tmp_path / "pets", color_image, ["cat", "dog"], train=4, test=None)
    folder = dataset_folder(_upload(gcs, local, "par"))
    barrier = threading.Barrier(4, timeout=30)
    read = folder.listing.fs.cat_file
    calls: list[str] = []
    lock = threading.Lock()

    def gated(path, **kwargs):
        with lock:
            index = len(calls)
            calls.append(path)
        if index < 4:
            barrier.wait()
        return read(path, **kwargs)

    monkeypatch.setattr(folder.listing.fs, "cat_file", gated)
    data = load_folder(folder, val_fraction=0.25)
    assert data.skipped == [] and len(calls) == 8 and not barrier.broken
