"""An interrupted export leaves the previous export whole (or, documented, nothing), never a mix.

Faults are injected at every file-system step of an export (the k-th write, rename, removal,
fsync... raises), for both ways of swapping the folder in (the kernel's exchange and the
two-rename fallback), and real kills (SIGKILL) are sent right after the new weights land and
in the middle of the swap. After each, the folder is read by an oracle that knows only the
file formats: the weights' head shape must agree with what the configs say (hidden size and
classes), and the whole folder must be the old export or the new one. The next export
removes every leftover.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import vitzoo.atomic
import vitzoo.weights.export
from tests.support.adapt_helpers import run_python
from tests.support.ckpt_factory import write_tiny_vit
from vitzoo.errors import VitzooError
from vitzoo.weights.export import export_checkpoint, open_source

OLD = {"hidden": 32, "heads": 2, "mlp": 64, "num_classes": 3, "names": ["cat", "dog", "bird"]}
NEW = {"hidden": 48, "heads": 4, "mlp": 96, "num_classes": 5, "names": ["a", "b", "c", "d", "e"]}
#: The lock exports to ``exports/model`` take turns on (kept beside the folder, not a leftover).
LOCK = ".model.lock"
FILES = {"timm": {"model.safetensors", "config.json"},
         "transformers": {"model.safetensors", "config.json", "preprocessor_config.json"},
         "npz": {"model.npz", "class_names.json"}}


def _run(folder: Path, spec: dict) -> Path:
    write_tiny_vit(folder / "final.npz", num_classes=spec["num_classes"], image_size=32, patch=8,
                   hidden=spec["hidden"], heads=spec["heads"], mlp=spec["mlp"], seed=spec["hidden"])
    (folder / "run.json").write_text(json.dumps({"class_names": spec["names"]}))
    return folder


@pytest.fixture()
def runs(tmp_path):
    return _run(tmp_path / "old", OLD), _run(tmp_path / "new", NEW)


def whole(folder: Path, fmt: str) -> tuple[int, int]:
    """(hidden, classes) of an export, asserting that its weights and its configs agree.

    Hidden names (a temporary an older vitzoo left inside the folder) are not the export's.
    """
    names = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert names == FILES[fmt], sorted(names)
    if fmt == "npz":
        with np.load(folder / "model.npz") as npz:
            hidden, classes = npz["head/kernel"].shape
        names = json.loads((folder / "class_names.json").read_text())["class_names"]
        assert len(names) == classes, (names, classes)
        return hidden, classes
    config = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    if fmt == "timm":
        classes, hidden = state["head.weight"].shape
        assert (config["num_classes"], config["model_args"]["embed_dim"]) == (classes, hidden)
        assert len(config["label_names"]) == classes
    else:
        classes, hidden = state["classifier.weight"].shape
        assert (len(config["id2label"]), config["hidden_size"]) == (classes, hidden)
        assert json.loads((folder / "preprocessor_config.json").read_text())["size"]["height"] == 32
    return hidden, classes


def snapshot(folder: Path) -> dict[str, str]:
    """name -> digest of the file's content (arrays by value: zip timestamps differ between runs)."""
    digests = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix == ".npz":
            with np.load(path) as npz:
                content = b"".join(k.encode() + npz[k].tobytes() for k in sorted(npz.files))
        else:
            content = path.read_bytes()
        digests[path.name] = hashlib.sha256(content).hexdigest()
    return digests


def _states(runs, tmp_path, fmt):
    """The two exports a reader may find, each made by a clean export elsewhere."""
    states = {}
    for label, run in zip(("old", "new"), runs, strict=True):
        export_checkpoint(open_source(run), fmt, tmp_path / "clean" / label)
        states[label] = snapshot(tmp_path / "clean" / label)
    return states


class Fault(Exception):
    pass


class FailAt:
    """Wraps file-system calls; the ``k``-th call (counting all of them) raises ``error``."""

    def __init__(self, k: int, error: type[BaseException]) -> None:
        self.k, self.error, self.calls = k, error, 0

    def wrap(self, function):
        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls == self.k:
                raise self.error(errno.EIO, "injected") if self.error is OSError else self.error()
            return function(*args, **kwargs)
        return wrapped


def _inject(monkeypatch, fail: FailAt) -> None:
    import safetensors.numpy

    for module, name in [(os, "replace"), (os, "rename"), (os, "chmod"), (os, "fsync"), (os, "unlink"),
                         (os, "mkdir"), (os, "rmdir"), (shutil, "rmtree"),
                         (vitzoo.atomic, "_exchange"), (vitzoo.atomic.tempfile, "mkdtemp"),
                         (vitzoo.atomic.tempfile, "mkstemp"), (safetensors.numpy, "save_file"),
                         (vitzoo.weights.export, "save_npz")]:
        monkeypatch.setattr(module, name, fail.wrap(getattr(module, name)))
    monkeypatch.setattr(vitzoo.weights.export, "open", fail.wrap(open), raising=False)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("fmt", ["timm", "transformers", "npz"])
def test_a_fault_at_any_step_leaves_the_old_export_or_the_new_one(runs, tmp_path, monkeypatch, fmt,
                                                                   exchange):
    old_run, new_run = runs
    states = _states(runs, tmp_path, fmt)
    if not exchange:
        monkeypatch.setattr(vitzoo.atomic, "_exchange", lambda a, b: False)
    out = tmp_path / "exports" / "model"
    seen = {"old": 0, "new": 0}
    for k in range(1, 100):
        shutil.rmtree(tmp_path / "exports", ignore_errors=True)
        export_checkpoint(open_source(old_run), fmt, out)
        (out / f".{next(iter(FILES[fmt]))}.x1y2.tmp").write_bytes(b"litter of an older vitzoo")
        error = (OSError, KeyboardInterrupt)[k % 2]
        fail = FailAt(k, error)
        with monkeypatch.context() as patch:
            _inject(patch, fail)
            with contextlib.suppress(error, VitzooError):
                export_checkpoint(open_source(new_run), fmt, out)
        if fail.calls < k:  # every step passed: the sweep is complete
            assert snapshot(out) == states["new"]
            break
        # one fault per export, so a failed second rename of the fallback is always undone
        assert out.exists(), (k, error, sorted(p.name for p in out.parent.iterdir()))
        label = "old" if whole(out, fmt) == (OLD["hidden"], OLD["num_classes"]) else "new"
        assert whole(out, fmt) == (NEW["hidden"], NEW["num_classes"]) or label == "old"
        assert snapshot(out) == states[label], (k, error)
        seen[label] += 1
        export_checkpoint(open_source(new_run), fmt, out)  # the next export cleans up
        assert sorted(p.name for p in out.parent.iterdir()) in (["model"], [LOCK, "model"]), k
        assert sorted(os.listdir(out)) == sorted(FILES[fmt]) and snapshot(out) == states["new"]
    else:
        pytest.fail("the export never finished without hitting a fault")
    assert seen["old"] > 0 and seen["new"] > 0, seen  # faults fell both before and after the swap


KILL_CODE = """
import os, signal, sys
from pathlib import Path
import vitzoo.atomic as atomic
import vitzoo.weights.export as export

def die():
    os.kill(os.getpid(), signal.SIGKILL)

where, fmt, source, out = sys.argv[1:]
if where == "after-weights":
    factory = export._npz_file if fmt == "npz" else export._safetensors_file
    def killing(arrays):
        write = factory(arrays)
        def write_then_die(path):
            write(path)
            die()
        return write_then_die
    if fmt == "npz":
        export._npz_file = killing
    else:
        export._safetensors_file = killing
elif where == "after-exchange":
    real = atomic._exchange
    def exchange_then_die(a, b):
        real(a, b)
        die()
    atomic._exchange = exchange_then_die
elif where == "between-renames":
    atomic._exchange = lambda a, b: False
    real_replace = os.replace
    def replace(a, b):
        real_replace(a, b)
        if str(a) == out:
            die()
    os.replace = replace
export.export_checkpoint(export.open_source(source), fmt, out)
print("finished")
"""


@pytest.mark.parametrize("where", ["after-weights", "after-exchange", "between-renames"])
@pytest.mark.parametrize("fmt", ["timm", "npz"])
def test_a_killed_export_leaves_one_whole_export_and_the_next_export_cleans_up(runs, tmp_path, fmt, where):
    old_run, new_run = runs
    states = _states(runs, tmp_path, fmt)
    out = tmp_path / "exports" / "model"
    export_checkpoint(open_source(old_run), fmt, out)
    code = "import sys; sys.argv = [''] + %r\n" % [where, fmt, str(new_run), str(out)] + KILL_CODE
    done = run_python(code, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name not in ("model", LOCK))
    assert leftovers, "a kill mid-export leaves its temporary folder"
    if where == "between-renames":  # the documented window of the fallback: no folder at all
        assert not out.exists()
    else:  # before the swap the old export, after it the new one: whole either way
        label, spec = ("old", OLD) if where == "after-weights" else ("new", NEW)
        assert whole(out, fmt) == (spec["hidden"], spec["num_classes"])
        assert snapshot(out) == states[label]
    export_checkpoint(open_source(new_run), fmt, out)
    assert sorted(p.name for p in out.parent.iterdir()) == [LOCK, "model"]
    assert sorted(os.listdir(out)) == sorted(FILES[fmt])
    assert whole(out, fmt) == (NEW["hidden"], NEW["num_classes"]) and snapshot(out) == states["new"]


def test_a_folder_with_other_files_is_refused_and_left_alone(runs, tmp_path, capsys):
    from tests.support.cli_helpers import run_cli

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, stdout, err = run_cli(capsys, "export", str(runs[1]), "--to", "timm", "--out", str(out))
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1
    assert "notes.txt" in err and "not part of an export" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and sorted(os.listdir(tmp_path)) == [
        "mine", "new", "old"]
