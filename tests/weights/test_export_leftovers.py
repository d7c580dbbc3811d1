"""Exports that tell the truth and take turns: a run trained from ``random:ARCH`` is labelled
untrained in its exported config (read from its run.json, written here by hand), and exports
racing to one folder leave one whole export and no temporaries.

The race: four processes wait at a file barrier, then each exports to the same folder several
times, alternating two runs of different shapes. Without the lock, one export's clean-up of
"stale" temporaries removes another's folder while it is being written (or two swaps
interleave), so some process fails or a temporary is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.ckpt_factory import write_tiny_vit
from tests.weights.test_export_atomic import FILES, LOCK, NEW, OLD, _run, whole
from vitzoo.weights.export import export_checkpoint, open_source


def _source(run: dict, folder: Path) -> Path:
    """A finished run folder: final.npz and a run.json as a fine-tune writes its source section."""
    write_tiny_vit(folder / "final.npz", num_classes=3, image_size=32, patch=8, hidden=32,
                   heads=2, mlp=64)
    (folder / "run.json").write_text(json.dumps({"class_names": ["a", "b", "c"], **run}))
    return folder


@pytest.mark.parametrize("fmt", ["timm", "transformers"])
def test_a_run_from_random_weights_is_exported_as_untrained(tmp_path, fmt):
    started_random = _source({"source": {"model": "random:Ti/16", "untrained": True}},
                             tmp_path / "random")
    started_trained = _source({"source": {"model": "Ti/16", "untrained": False}},
                              tmp_path / "released")
    no_source = _source({}, tmp_path / "bare")
    expected = {started_random: True, started_trained: False, no_source: False}
    for run, untrained in expected.items():
        export_checkpoint(open_source(run), fmt, tmp_path / "out" / run.name)
        note = json.loads((tmp_path / "out" / run.name / "config.json").read_text())["vitzoo"]
        assert note["untrained"] is untrained, run.name
        assert ("random:Ti/16" in note.get("untrained_because", "")) is untrained


BARRIER_CODE = """
import sys, time
from pathlib import Path
from vitzoo.weights.export import export_checkpoint, open_source

me, parties, fmt, out, barrier, *runs = sys.argv[1:]
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < int(parties):
    time.sleep(0.005)
for i in range(6):
    export_checkpoint(open_source(runs[(int(me) + i) % 2]), fmt, out)
print("done")
"""


@pytest.mark.parametrize("fmt", ["timm", "npz"])
def test_concurrent_exports_to_one_folder_leave_one_whole_export(tmp_path, fmt):
    runs = [str(_run(tmp_path / "old", OLD)), str(_run(tmp_path / "new", NEW))]
    out = tmp_path / "exports" / "model"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", BARRIER_CODE, str(i), "4", fmt, str(out),
                               str(barrier), *runs], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0 and stdout.strip() == "done", stderr[-2000:]
    assert sorted(p.name for p in out.parent.iterdir()) == [LOCK, "model"]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES[fmt])
    assert whole(out, fmt) in ((OLD["hidden"], OLD["num_classes"]),
                               (NEW["hidden"], NEW["num_classes"]))
    export_checkpoint(open_source(runs[1]), fmt, out)  # and it loads as an export source again
    assert whole(out, fmt) == (NEW["hidden"], NEW["num_classes"])
