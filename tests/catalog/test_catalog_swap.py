"""The catalog swap: a build stopped at any step leaves the old catalog or the new one, never a mix.

Every step of a build that writes, renames or deletes is counted in a clean build;
then, for each step i, a build is failed at step i in two ways: an exception (the
build's own clean-up runs) and a kill (the folder is copied as it stands just before
step i, so nothing after it runs). Readers of both folders must see the old
catalog or the new one, whole; the next build must leave only the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vitzoo.catalog import build as build_mod
from vitzoo.catalog import store
from vitzoo.catalog.build import build_catalog
from vitzoo.catalog.frame import sha256_file
from vitzoo.config import EMBEDDED_INDEX_DIR
from vitzoo.errors import VitzooError

TINY_GRID = {
    "archs": ["Ti/16"], "datasets": ["i1k"], "augmentations": ["none"],
    "weight_decays": [0.03], "dropout_stochastic_depth": [0.0],
}


def _sources(tmp_path: Path, name: str, augmentations: list[str]) -> Path:
    """A copy of the embedded sources with a grid small enough to build in milliseconds."""
    folder = tmp_path / name
    shutil.copytree(EMBEDDED_INDEX_DIR / "sources", folder)
    grid = json.loads((folder / "augreg_grid.json").read_text())
    grid["pretraining"].update(TINY_GRID, augmentations=augmentations)
    grid["partial_archs"] = {}
    grid["adaptation"]["datasets"] = {"oxford_iiit_pet": {"steps": [500], "lrs": [0.001, 0.01]}}
    (folder / "augreg_grid.json").write_text(json.dumps(grid))
    return folder


def _view(root: Path) -> tuple[tuple, tuple]:
    """What a reader sees: the manifest's fingerprints and the rows; both files must agree."""
    location = store.locate(root)
    manifest = store.read_manifest(location)
    fast = store.read_frame(location).to_pydict()
    slow = pq.read_table(location.path).to_pydict()
    assert fast == slow, "the column file and the parquet disagree"
    assert manifest["catalog_sha256"] == sha256_file(location.path), "manifest of another parquet"
    assert manifest["rows"] == len(slow["checkpoint"])
    fingerprints = tuple(tuple(f) for f in manifest["fingerprints"])
    return fingerprints, tuple(slow["checkpoint"])


class StepFaults:
    """Counts (and fails at one of) the build's file-system steps, in call order."""

    TARGETS = (
        (os, "replace"), (shutil, "rmtree"), (Path, "unlink"),
        (build_mod.pq, "write_table"), (build_mod, "write_column_file"), (build_mod.json, "dump"),
    )

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None,
                 kill_copy: Path | None = None, root: Path | None = None) -> None:
        self.steps: list[str] = []
        self.fail_at, self.kill_copy, self.root = fail_at, kill_copy, root
        self.paused = False
        for owner, name in self.TARGETS:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), name))

    def _wrap(self, real, name: str):
        def step(*args, **kwargs):
            if self.paused:
                return real(*args, **kwargs)
            if len(self.steps) == self.fail_at:
                self.paused = True
                try:
                    shutil.copytree(self.root, self.kill_copy, symlinks=True)
                finally:
                    self.paused = False
                self.steps.append(name)
                raise OSError(f"injected failure at step {self.fail_at} ({name})")
            self.steps.append(name)
            return real(*args, **kwargs)
        return step


@pytest.fixture
def two_sources(tmp_path) -> tuple[Path, Path]:
    return _sources(tmp_path, "old_sources", ["none"]), _sources(tmp_path, "new_sources", ["none", "light0"])


def _build(root: Path, sources: Path):
    return build_catalog(root, index_csv=None, listing=None, sources_dir=sources)


def _expected_views(tmp_path: Path, old: Path, new: Path) -> tuple[tuple, tuple]:
    reference = tmp_path / "reference"
    _build(reference / "old", old)
    _build(reference / "new", new)
    return _view(reference / "old"), _view(reference / "new")


def _assert_only_the_new_version(root: Path, new_view) -> None:
    assert _view(root) == new_view
    names = sorted(p.name for p in root.iterdir())
    assert len(names) == 2 and names[0] == store.POINTER_FILE and store.is_version_name(names[1]), names
    assert sorted(p.name for p in (root / names[1]).iterdir()) == sorted(store.CATALOG_FILES)


def _flat_layout(root: Path, sources: Path) -> None:
    """A catalog folder as vitzoo 0.1 wrote it: the three files side by side, no pointer."""
    version = _build(root, sources).version_dir
    for name in store.CATALOG_FILES:
        os.replace(version / name, root / name)
    version.rmdir()
    (root / store.POINTER_FILE).unlink()


@pytest.mark.parametrize("old_layout", ["versioned", "flat"])
def test_a_build_stopped_at_any_step_leaves_old_or_new_and_the_next_build_repairs(
        tmp_path, two_sources, monkeypatch, old_layout):
    old, new = two_sources
    old_view, new_view = _expected_views(tmp_path, old, new)
    assert old_view != new_view and old_view[0] != new_view[0]

    def prepare(root: Path) -> None:
        if old_layout == "flat":
            _flat_layout(root, old)
        else:
            _build(root, old)
        assert _view(root) == old_view

    # A clean build, counted: these are the steps to fail at.
    counted_root = tmp_path / "counted"
    prepare(counted_root)
    with monkeypatch.context() as patch:
        counter = StepFaults(patch)
        _build(counted_root, new)
    assert _view(counted_root) == new_view
    steps = counter.steps
    cleanup = "unlink" if old_layout == "flat" else "rmtree"  # the old files go after the switch
    assert steps.count("replace") >= 3 and "write_table" in steps and cleanup in steps, steps

    outcomes = []
    for i in range(len(steps)):
        root, killed = tmp_path / f"step{i}", tmp_path / f"step{i}-killed"
        prepare(root)
        with monkeypatch.context() as patch:
            StepFaults(patch, fail_at=i, kill_copy=killed, root=root)
            with pytest.raises(OSError, match=f"injected failure at step {i} "):
                _build(root, new)
        for folder in (root, killed):
            seen = _view(folder)
            assert seen in (old_view, new_view), (i, steps[i], folder.name)
            outcomes.append((i, folder.name.endswith("killed"), seen == new_view))
            repaired = _build(folder, new)
            assert repaired.changed is (seen == old_view), (i, steps[i])
            _assert_only_the_new_version(folder, new_view)
    # The switch is one step: every failure before it shows the old catalog, every one after the new.
    switched = [new for _, _, new in outcomes]
    assert switched == sorted(switched) and switched[0] is False and switched[-1] is True


def test_a_forced_rebuild_of_identical_rows_never_writes_into_the_version_in_use(tmp_path, two_sources):
    old, _ = two_sources
    root = tmp_path / "cat"
    first = _build(root, old).version_dir
    again = build_catalog(root, index_csv=None, listing=None, sources_dir=old, force=True)
    assert again.changed and again.version_dir != first
    assert again.version_dir.name.startswith(first.name + "-")
    assert not first.exists()
    assert store.locate(root).path == again.version_dir / store.CATALOG_FILE


def test_a_pointer_to_a_missing_version_is_one_clear_error(tmp_path, two_sources):
    old, _ = two_sources
    root = tmp_path / "cat"
    _build(root, old)
    (root / store.POINTER_FILE).write_text("catalog-000000000000\n")
    with pytest.raises(VitzooError, match="not a complete catalog folder") as err:
        store.locate(root)
    assert "vitzoo index build --out" in str(err.value) and "\n" not in str(err.value)
    (root / store.POINTER_FILE).write_text("../../etc\n")
    with pytest.raises(VitzooError, match="not a complete catalog folder"):
        store.locate(root)
    # The next build does not trust it: it rebuilds and points at a real version.
    assert _build(root, old).changed is True
    assert store.read_manifest(store.locate(root))["rows"] > 0


def test_a_reader_whose_version_was_replaced_meanwhile_is_told_to_rerun(tmp_path, two_sources):
    old, new = two_sources
    root = tmp_path / "cat"
    _build(root, old)
    located = store.locate(root)  # a reader found the old version...
    _build(root, new)  # ...and a build replaced it before the reader opened the files
    for read in (store.read_frame, store.read_manifest):
        with pytest.raises(VitzooError, match="was replaced by a `vitzoo index build` while it was read"):
            read(located)
    fresh = store.locate(root)  # a fresh look finds the new catalog
    assert fresh.folder != located.folder
    assert store.read_manifest(fresh)["fingerprints"][0][1] == str(new.resolve())


def test_the_embedded_index_uses_the_versioned_layout():
    version = store.current_version(EMBEDDED_INDEX_DIR)
    assert version is not None and version != EMBEDDED_INDEX_DIR
    assert sorted(p.name for p in version.iterdir()) == sorted(store.CATALOG_FILES)
    manifest = store.read_manifest(version)
    assert manifest["catalog_sha256"] == sha256_file(version / store.CATALOG_FILE)
    leftovers = [p.name for p in EMBEDDED_INDEX_DIR.iterdir()  # tools: scripts that made sources
                 if p.name not in (store.POINTER_FILE, version.name, "sources", "tools")]
    assert leftovers == []
