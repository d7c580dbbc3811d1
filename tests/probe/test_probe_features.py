"""Feature extraction and its cache (that the features are what the head reads is checked
against a NumPy forward in tests/backbone/test_backbone.py): the cache is keyed by content
(a changed image or checkpoint is never served stale features), a killed extraction
resumes to the same features, and extraction is data-parallel over devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.adapt_helpers import color_image, run_python, tiny_checkpoint, write_folder

pytestmark = pytest.mark.slow


def _folder(root: Path, train: int = 6, test: int = 3) -> Path:
    return write_folder(root, color_image, ["a", "b", "c"], train=train, test=test, size=32)


def _extract(ckpt: Path, source, **kwargs):
    from vitzoo.probe.features import Extractor, load_backbone

    extractor = Extractor(load_backbone(ckpt), **kwargs)
    entry = extractor.extract(source)
    return entry, *entry.load()


def test_cache_hits_and_invalidation_on_changed_file_and_checkpoint(tmp_path):
    from PIL import Image

    from vitzoo.data import open_dataset

    root = _folder(tmp_path / "data")
    ckpt = tiny_checkpoint(tmp_path / "vit.npz")
    entry, first, _ = _extract(ckpt, open_dataset(str(root)).train, batch=4)
    chunk_time = entry.chunk_path(0).stat().st_mtime_ns
    again, same, _ = _extract(ckpt, open_dataset(str(root)).train, batch=4)
    assert again.dir == entry.dir and again.chunk_path(0).stat().st_mtime_ns == chunk_time
    np.testing.assert_array_equal(first, same)

    changed = root / "train" / "b" / "2.png"
    Image.fromarray(color_image(2, 32, np.random.default_rng(99))).save(changed)
    after_file, features, _ = _extract(ckpt, open_dataset(str(root)).train, batch=4)
    assert after_file.dir != entry.dir
    differs = np.flatnonzero(np.abs(features - first).max(axis=1) > 1e-6)
    assert differs.tolist() == [8]  # class b, file 2: only its row changed

    tiny_checkpoint(ckpt, seed=1)  # same path, new weights
    after_ckpt, new_weights, _ = _extract(ckpt, open_dataset(str(root)).train, batch=4)
    assert after_ckpt.dir not in (entry.dir, after_file.dir)
    assert after_ckpt.spec["checkpoint_sha256"] != after_file.spec["checkpoint_sha256"]
    assert np.abs(new_weights - features).max() > 1e-3


def test_sigkill_during_extraction_then_rerun_gives_the_same_features(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", train=8)
    ckpt = tiny_checkpoint(tmp_path / "vit.npz")
    home = tmp_path / "home"
    killed = run_python(f"""
        import os, signal
        from vitzoo.data import open_dataset
        from vitzoo.probe.cache import split_fingerprint
        from vitzoo.probe.features import Extractor, load_backbone

        ex = Extractor(load_backbone({str(ckpt)!r}), batch=4, chunk_rows=4)
        source = open_dataset({str(root)!r}).train
        entry = ex.entry(source, split_fingerprint(source))
        print(entry.dir, flush=True)

        def progress(done, total):
            if done == 2:  # a half-written next chunk, then the kill
                (entry.dir / ".chunk-00002.npz.half.tmp").write_bytes(b"PK\\x03\\x04 torn")
                os.kill(os.getpid(), signal.SIGKILL)

        ex.extract(source, progress=progress)
    """, env={"VITZOO_HOME": str(home)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    entry_dir = Path(killed.stdout.split()[0])
    assert sorted(p.name for p in entry_dir.glob("chunk-*.npz")) == ["chunk-00000.npz",
                                                                     "chunk-00001.npz"]

    from vitzoo.data import open_dataset

    source = open_dataset(str(root)).train
    monkeypatch.setenv("VITZOO_HOME", str(home))
    resumed, features, labels = _extract(ckpt, source, batch=4, chunk_rows=4)
    assert resumed.dir == entry_dir and resumed.num_chunks == 6
    assert not list(entry_dir.glob(".*.tmp"))
    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "fresh"))
    _, fresh, fresh_labels = _extract(ckpt, source, batch=4, chunk_rows=4)
    np.testing.assert_array_equal(features, fresh)
    np.testing.assert_array_equal(labels, fresh_labels)


def test_damaged_chunk_is_recomputed_not_served(tmp_path):
    from vitzoo.data import open_dataset

    source = open_dataset(str(_folder(tmp_path / "data"))).train
    ckpt = tiny_checkpoint(tmp_path / "vit.npz")
    entry, features, _ = _extract(ckpt, source, batch=4, chunk_rows=8)
    entry.chunk_path(1).write_bytes(b"not an npz")
    assert entry.missing() == [1] and not entry.chunk_path(1).exists()
    _, again, _ = _extract(ckpt, source, batch=4, chunk_rows=8)
    np.testing.assert_array_equal(features, again)


def test_extraction_over_two_devices_equals_one(tmp_path):
    root = _folder(tmp_path / "data", train=5)
    ckpt = tiny_checkpoint(tmp_path / "vit.npz")
    code = f"""
        import numpy as np, jax
        from vitzoo.data import open_dataset
        from vitzoo.probe.features import Extractor, load_backbone
        ex = Extractor(load_backbone({str(ckpt)!r}), batch=4)
        f, _ = ex.extract(open_dataset({str(root)!r}).train).load()
        np.save({str(tmp_path)!r} + f"/f{{jax.local_device_count()}}.npy", f)
        print(ex.global_batch, len(ex.devices))
    """
    for devices in (1, 2):
        proc = run_python(code, devices=devices, env={"VITZOO_HOME": str(tmp_path / f"h{devices}")})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == ["4", str(devices)]
    np.testing.assert_allclose(np.load(tmp_path / "f1.npy"), np.load(tmp_path / "f2.npy"),
                               atol=1e-5)  # per-device batch 4 vs 2: float rounding only


def test_extraction_through_many_chunks_writes_each_and_keeps_no_images(tmp_path, monkeypatch):
    """Chunks of 4 rows: one file per chunk, the same features as one chunk, and no pipeline
    caches the decoded images (a cache per chunk grew the peak memory with the dataset)."""
    from vitzoo.data import open_dataset
    from vitzoo.data.tfdata import EvalBatches

    built: list[EvalBatches] = []
    build = EvalBatches.__init__

    def recording(self, *args, **kwargs):
        build(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(EvalBatches, "__init__", recording)
    source = open_dataset(str(_folder(tmp_path / "data"))).train  # 18 images, 3 classes
    ckpt = tiny_checkpoint(tmp_path / "vit.npz")
    entry, features, labels = _extract(ckpt, source, batch=4, chunk_rows=4)
    assert entry.num_chunks == 5 and features.shape == (18, 32)
    rows = []
    for i in range(5):
        with np.load(entry.chunk_path(i), allow_pickle=False) as chunk:
            rows.append(len(chunk["features"]))
    assert rows == [4, 4, 4, 4, 2]
    assert sorted(p.name for p in entry.dir.glob("chunk-*.npz")) == [f"chunk-{i:05d}.npz"
                                                                    for i in range(5)]
    assert len(built) == 5 and not any(batches.cached for batches in built)

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "one-chunk"))
    whole, same, same_labels = _extract(ckpt, source, batch=4)
    assert whole.num_chunks == 1
    np.testing.assert_allclose(features, same, atol=1e-6)
    np.testing.assert_array_equal(labels, same_labels)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 6))
