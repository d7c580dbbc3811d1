"""The feature cache is keyed on content: a checkpoint rewritten in place with the same size and
mtime, or an image of a folder read from disk rewritten, gives fresh features; the checkpoint hash
memo is updated under a lock, so concurrent processes lose no entry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from tests.support.adapt_helpers import color_image, tiny_checkpoint, write_folder


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path``'s bytes through the same inode, then put its times back."""
    before = path.stat()
    assert len(data) == before.st_size
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (before.st_ino, before.st_size, before.st_mtime_ns)


def _extract(ckpt: Path, source):
    from vitzoo.probe.features import Extractor, load_backbone

    entry = Extractor(load_backbone(ckpt), batch=4).extract(source)
    return entry, entry.load()[0]


def _on_disk_folder(root: Path, monkeypatch: pytest.MonkeyPatch):
    """A class folder that ``load_folder`` reads from disk (the memory budget is 0 bytes)."""
    import vitzoo.data.folder as folder
    from vitzoo.data import open_dataset

    write_folder(root, color_image, ["a", "b", "c"], train=3, test=2, size=32)
    monkeypatch.setattr(folder, "memory_budget", lambda: 0)
    data = open_dataset(str(root), need_train=False)
    assert data.eval.from_files and all(isinstance(p, str) for p in data.eval.payload)
    return data.eval


def test_memo_rehashes_a_checkpoint_rewritten_in_place_with_the_same_size_and_mtime(tmp_path):
    from vitzoo.probe.cache import checkpoint_sha256

    ckpt = tmp_path / "ckpt.npz"
    ckpt.write_bytes(b"A" * 4096)
    assert checkpoint_sha256(ckpt) == hashlib.sha256(b"A" * 4096).hexdigest()
    _rewrite_in_place(ckpt, b"B" * 4096)
    assert checkpoint_sha256(ckpt) == hashlib.sha256(b"B" * 4096).hexdigest()
    assert checkpoint_sha256(ckpt) == hashlib.sha256(b"B" * 4096).hexdigest()  # memo hit


@pytest.mark.slow
def test_checkpoint_rewritten_in_place_gives_fresh_features(tmp_path, monkeypatch):
    source = _on_disk_folder(tmp_path / "data", monkeypatch)
    ckpt = tiny_checkpoint(tmp_path / "vit.npz", num_classes=3)
    other = tiny_checkpoint(tmp_path / "other.npz", num_classes=3, seed=1)
    entry, stale = _extract(ckpt, source)
    _rewrite_in_place(ckpt, other.read_bytes())
    fresh_entry, fresh = _extract(ckpt, source)
    # the oracle: the new weights' features from a file the cache has never seen
    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "clean-home"))
    _, expected = _extract(other, source)
    assert fresh_entry.dir != entry.dir
    np.testing.assert_array_equal(fresh, expected)
    assert np.abs(fresh - stale).max() > 1e-3


@pytest.mark.slow
def test_folder_read_from_disk_rewritten_gives_new_fingerprint_and_features(tmp_path, monkeypatch):
    from PIL import Image

    from vitzoo.probe.cache import split_fingerprint

    source = _on_disk_folder(tmp_path / "data", monkeypatch)
    ckpt = tiny_checkpoint(tmp_path / "vit.npz", num_classes=3)
    first_print = split_fingerprint(source)
    assert first_print["kind"] == "files"
    entry, first = _extract(ckpt, source)

    # an ordinary rewrite (new pixels, new size and mtime) of the 4th eval image (class b);
    # uncompressed PNG, so the next rewrite can keep the size
    changed = Path(source.payload[3])
    pixels = color_image(1, 32, np.random.default_rng(7))
    Image.fromarray(pixels).save(changed, compress_level=0)
    second_print = split_fingerprint(source)
    assert second_print["sha256"] != first_print["sha256"]
    second_entry, second = _extract(ckpt, source)
    assert second_entry.dir != entry.dir
    assert np.flatnonzero(np.abs(second - first).max(axis=1) > 1e-6).tolist() == [3]

    # a rewrite in place that keeps size and mtime: only the change time tells
    buffer = io.BytesIO()
    Image.fromarray(pixels[::-1].copy()).save(buffer, format="PNG", compress_level=0)
    _rewrite_in_place(changed, buffer.getvalue())
    assert split_fingerprint(source)["sha256"] != second_print["sha256"]
    third_entry, third = _extract(ckpt, source)
    assert third_entry.dir not in (entry.dir, second_entry.dir)
    assert np.flatnonzero(np.abs(third - second).max(axis=1) > 1e-6).tolist() == [3]


_WORKER = """
import sys
from pathlib import Path
from vitzoo.probe.cache import checkpoint_sha256
for path in sorted(Path(sys.argv[1]).glob(sys.argv[2] + "-*.bin")):
    checkpoint_sha256(path)
"""


def test_concurrent_processes_lose_no_memo_entry(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    workers, per_worker = 4, 25
    for w in range(workers):
        for i in range(per_worker):
            (files / f"w{w}-{i:03d}.bin").write_bytes(f"{w}/{i}".encode() * 64)
    env = {**os.environ, "VITZOO_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(files), f"w{w}"], env=env)
             for w in range(workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    memo = json.loads((tmp_path / "home" / "features" / "checkpoint_sha256.json").read_text())
    expected = {str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in files.glob("*.bin")}
    assert {k: v["sha256"] for k, v in memo.items()} == expected


def test_damaged_memo_is_a_one_line_error_not_silently_dropped(tmp_path, monkeypatch):
    from vitzoo.errors import VitzooError
    from vitzoo.probe.cache import checkpoint_sha256, features_root

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    features_root().mkdir(parents=True)
    (features_root() / "checkpoint_sha256.json").write_text("{not json")
    ckpt = tmp_path / "c.npz"
    ckpt.write_bytes(b"x")
    with pytest.raises(VitzooError, match=r"checkpoint_sha256\.json is not valid JSON"):
        checkpoint_sha256(ckpt)


@pytest.mark.slow
def test_probe_scores_after_an_in_place_rewrite_are_fresh_not_cached(tmp_path, monkeypatch):
    """Issue 17's reproduction: ``cached True`` with the old file's scores must not happen."""
    from vitzoo.probe.candidates import Candidate
    from vitzoo.probe.run import ProbeSettings, probe

    root = write_folder(tmp_path / "data", color_image, ["a", "b", "c"], train=4, test=2, size=32)
    settings = ProbeSettings(shots=(1,), seeds=1, batch=4)
    ckpt = tiny_checkpoint(tmp_path / "vit.npz", num_classes=3)
    other = tiny_checkpoint(tmp_path / "other.npz", num_classes=3, seed=1)
    (first,) = probe(str(root), [Candidate(str(ckpt))], settings).results
    (again,) = probe(str(root), [Candidate(str(ckpt))], settings).results
    assert not first.cached and again.cached  # the cache works for an unchanged file
    _rewrite_in_place(ckpt, other.read_bytes())
    (after,) = probe(str(root), [Candidate(str(ckpt))], settings).results
    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "clean-home"))
    (oracle,) = probe(str(root), [Candidate(str(other))], settings).results
    assert not after.cached
    assert after.scores == oracle.scores
