"""Every command that writes: an output location it cannot write is one line, exit 2, nothing written.

One table lists each command with the place it writes (a folder, a file, or ``VITZOO_HOME``).
Each row is run with that place broken three ways: it is a file where a folder belongs (or a
folder where a file belongs), it lies under a file, and it is not writable. The command must
exit 2 with one line on stderr, no traceback, and leave the test's folder exactly as it was.

Not writable: a folder with mode 0o500, unless the tests run as root, for whom permission bits
do not stop writes; then a path under ``/sys`` (sysfs refuses to create entries even for root,
with EPERM). Where neither is available the read-only variant is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.adapt_helpers import color_image, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli

ROOT = os.geteuid() == 0
#: Unwritable even for root: sysfs creates no entries on request.
SYSFS_PARENT = Path("/sys/vitzoo-unwritable")


@dataclass(frozen=True)
class Env:
    ckpt: str
    data: str
    image: str
    run: str


@dataclass(frozen=True)
class Row:
    """A command, what it writes (``folder``, ``file`` or ``home``) and its arguments given that place."""

    id: str
    kind: str
    args: Callable[[Env, str], list[str]]


ROWS = [
    Row("export --out", "folder", lambda e, o: ["export", e.ckpt, "--to", "npz", "--out", o]),
    Row("predict --attention", "folder", lambda e, o: ["predict", e.ckpt, e.image, "--attention", o]),
    Row("finetune --workdir", "folder", lambda e, o: [
        "finetune", e.ckpt, "--dataset", e.data, "--workdir", o, "--steps", "1", "--warmup", "0",
        "--batch", "2", "--res", "32", "--no-progress", "--no-register"]),
    Row("finetune --head-only --workdir", "folder", lambda e, o: [
        "finetune", e.ckpt, "--dataset", e.data, "--head-only", "--workdir", o, "--res", "32",
        "--no-progress", "--no-register"]),
    Row("download --to", "folder", lambda e, o: ["download", "http://127.0.0.1:9/x.npz", "--to", o]),
    Row("index build --out", "folder", lambda e, o: [
        "index", "build", "--source", "embedded", "--listing", "none", "--out", o]),
    Row("probe --plot", "file", lambda e, o: [
        "probe", "--candidates", e.ckpt, "--dataset", e.data, "--plot", o]),
    Row("plot --out", "file", lambda e, o: ["plot", "--out", o]),
    Row("plot-run --out", "file", lambda e, o: ["plot-run", e.run, "--out", o]),
    Row("probe (VITZOO_HOME)", "home", lambda e, o: ["probe", "--candidates", e.ckpt, "--dataset", e.data]),
    Row("finetune (VITZOO_HOME)", "home", lambda e, o: [
        "finetune", e.ckpt, "--dataset", e.data, "--workdir", str(Path(e.run).parent / "w"), "--steps",
        "1", "--warmup", "0", "--batch", "2", "--res", "32", "--no-progress"]),
    Row("download (VITZOO_HOME)", "home", lambda e, o: ["download", "http://127.0.0.1:9/x.npz"]),
    Row("index build (VITZOO_HOME)", "home", lambda e, o: [
        "index", "build", "--source", "embedded", "--listing", "none"]),
]
BREAKS = ["in-the-way", "under-a-file", "read-only"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("inputs")
    ckpt = tiny_checkpoint(root / "tiny.npz", num_classes=3)
    data = write_folder(root / "data", color_image, ["r", "g", "b"], train=4, test=2, size=32)
    run = root / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train_loss": 1.0 / s, "lr": 0.01}) + "\n" for s in (1, 2, 3)))
    return Env(str(ckpt), str(data), str(next((data / "test" / "r").iterdir())), str(run))


def _unwritable(tmp_path: Path) -> Path:
    """A folder nothing can be created in, or skip saying why there is none here."""
    if not ROOT:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return folder
    try:
        SYSFS_PARENT.mkdir()
    except OSError:
        return SYSFS_PARENT
    SYSFS_PARENT.rmdir()
    pytest.skip("running as root, where permission bits do not stop writes, and /sys accepts "
                "new entries here: no unwritable location to test")


def _location(tmp_path: Path, kind: str, broken: str) -> str:
    """The output place of ``kind`` broken the ``broken`` way."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    name = "out.png" if kind == "file" else "out"
    if broken == "in-the-way":
        if kind == "file":
            (tmp_path / "out.png").mkdir()
            return str(tmp_path / "out.png")
        return str(a_file)
    if broken == "under-a-file":
        return str(a_file / name)
    return str(_unwritable(tmp_path) / name)


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path with its size and mode, but JAX's compile cache: a cache, not an output."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mode) for p in folder.rglob("*")
            if "compile-cache" not in p.parts}


@pytest.mark.parametrize("broken", BREAKS)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_an_unwritable_output_is_one_line_and_writes_nothing(row, broken, env, tmp_path, capsys,
                                                             monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    place = _location(work, row.kind, broken)
    monkeypatch.setenv("VITZOO_COMPILE_CACHE", "0")
    if row.kind != "home":
        (work / "home").mkdir()  # writable; where JAX's compile cache may go
    monkeypatch.setenv("VITZOO_HOME", place if row.kind == "home" else str(work / "home"))
    monkeypatch.chdir(work)
    before = _tree(work)
    code, out, err = run_cli(capsys, *row.args(env, place))
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert place in err or str(Path(place).parent) in err, err  # names the place
    assert _tree(work) == before  # nothing partial, no temporaries
    if broken == "read-only" and not ROOT:
        Path(place).parent.chmod(0o700)


def test_each_location_error_has_its_own_words(tmp_path):
    """The translation table, one errno at a time (the oracle: the errno's meaning, not the code)."""
    import errno

    from vitzoo.atomic import output_error

    (tmp_path / "f").write_text("x")
    words = {errno.EROFS: "read-only", errno.EACCES: "permission denied", errno.ENOSPC: "no space left",
             errno.EISDIR: "is a folder, not a file", errno.ENAMETOOLONG: "too long",
             errno.EDQUOT: "quota", errno.EPERM: "not permitted"}
    for number, word in words.items():
        error = output_error(OSError(number, "x"), tmp_path / "out", "the thing")
        assert error is not None and word in error.one_line(), (number, error)
        assert error.one_line().startswith(f"cannot write the thing {tmp_path / 'out'}: ")
    under = output_error(OSError(errno.ENOTDIR, "x"), tmp_path / "f" / "out", "the thing")
    assert f"{tmp_path / 'f'} is a file, not a folder" in under.one_line()
    assert output_error(OSError(errno.EIO, "x"), tmp_path, "the thing") is None  # not about the place


def test_reading_commands_work_with_an_unwritable_home(env, tmp_path, capsys, monkeypatch):
    """predict and evaluate write nothing of their own: an unwritable VITZOO_HOME only turns the
    compile cache off."""
    home = _unwritable(tmp_path)
    monkeypatch.setenv("VITZOO_HOME", str(home / "home"))
    monkeypatch.delenv("VITZOO_COMPILE_CACHE", raising=False)
    for args in (["predict", env.ckpt, env.image, "--format", "jsonl"],
                 ["evaluate", env.ckpt, "--dataset", env.data, "--res", "32", "--format", "json"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        assert json.loads(out.splitlines()[-1]) and "Traceback" not in err


@pytest.mark.parametrize("number", ["ENOSPC", "EROFS"])
def test_a_disk_that_fills_up_mid_run_is_one_line(number, env, tmp_path, capsys, monkeypatch):
    """The entry point's last net: a full (or newly read-only) disk wherever it strikes."""
    import errno

    import vitzoo.weights.export

    def full(*args, **kwargs):
        raise OSError(getattr(errno, number), os.strerror(getattr(errno, number)), "/data/half.bin")

    monkeypatch.setattr(vitzoo.weights.export, "load_npz", full)
    code, _, err = run_cli(capsys, "export", env.ckpt, "--to", "npz", "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.splitlines()) == 1 and "/data/half.bin" in err, err
    assert ("no space left" if number == "ENOSPC" else "read-only") in err
    monkeypatch.setattr(vitzoo.weights.export, "load_npz",
                        lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error", "x")))
    with pytest.raises(OSError):  # anything else is not hidden behind a one-liner
        run_cli(capsys, "export", env.ckpt, "--to", "npz", "--out", str(tmp_path / "o"))
