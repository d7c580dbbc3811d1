"""Atomic writes: all or nothing, no temporary files left behind."""

from __future__ import annotations

import stat

import pytest

from vitzoo.atomic import atomic_path, atomic_write


def test_success_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_the_old_file_and_leaves_no_litter(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_write(target, fsync=True) as handle:
        handle.write(b"half of the new")
        raise error
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_for_libraries_that_write_by_name(tmp_path):
    target = tmp_path / "table.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
