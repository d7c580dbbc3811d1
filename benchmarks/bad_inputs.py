"""The bad-input table: every command tried with inputs a user gets wrong, in-process, offline.

Why: issue 17's closing note asks, for every command, how many bad inputs were tried and how
many ended in a clean error (non-zero exit, one ``error:`` line, no traceback), a traceback,
or a wrong success (exit 0 on an input that cannot be right). The catalog commands had such a
table; this script makes one for all of them, so a regression shows as a number.

Each try runs ``vitzoo.cli.main`` in this process (as the console script does) with a
hermetic environment: a fresh ``VITZOO_HOME``, Hugging Face offline, GCS at a closed port,
the CPU allowed. Fixtures are tiny: a 3-class ViT checkpoint in the release layout (tests'
``write_tiny_vit``), a 3-class image folder, a corrupt ``.npz``, a zero-byte image, a file
where a folder belongs.

    python benchmarks/bad_inputs.py            # the table, one row per command
    python benchmarks/bad_inputs.py --verbose  # and every try with its outcome
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Try:
    command: str
    argv: list[str]
    outcome: str = ""
    detail: str = ""


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def fixtures(root: Path) -> dict[str, str]:
    """Tiny files every try may name."""
    import numpy as np
    from PIL import Image

    from tests.support.ckpt_factory import write_tiny_vit

    rng = np.random.default_rng(0)
    data = root / "photos"
    for c in ("a", "b", "c"):
        (data / c).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((32, 32, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(data / c / f"{i}.png")
    ckpt = write_tiny_vit(root / "tiny.npz", num_classes=3, image_size=32, patch=8)
    (root / "corrupt.npz").write_text("<html>not a checkpoint</html>")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    (root / "a_file").write_text("a file where a folder belongs\n")
    (root / "emptydir").mkdir()
    (root / "run").mkdir()
    (root / "run" / "metrics.jsonl").write_text("{not json\n")
    return {"data": str(data), "ckpt": str(ckpt), "corrupt": str(root / "corrupt.npz"),
            "empty_png": str(root / "empty.png"), "txt": str(root / "notes.txt"),
            "file": str(root / "a_file"), "emptydir": str(root / "emptydir"),
            "missing": str(root / "missing"), "badrun": str(root / "run"),
            "image": str(data / "a" / "0.png"), "out": str(root / "out")}


def tries(f: dict[str, str]) -> list[Try]:
    """(command, argv) pairs: each argv is wrong in one way."""
    d, ck = f["data"], f["ckpt"]
    table = {
        "list": [["--where", "1/0 > 0"], ["--where", "nope > 1"], ["--where", "abs(name) > 0"],
                 ["--columns", "nope"], ["--sort", "nope"], ["--limit", "-1"],
                 ["--format", "xml"], ["--arch", "Q/99"], ["--ds", "i99k"]],
        "show": [["nonexistent-checkpoint"], [f["missing"] + ".npz"], [f["emptydir"]],
                 [""], [f["txt"]], [f["corrupt"]]],
        "recommend": [["--arch", "Q/99"], ["--by", "nope"], ["--dataset", f["missing"]],
                      ["--format", "xml"], ["--where", "1/0 > 0"]],
        "download": [["Q/99"], ["no-such-checkpoint"], ["Ti/16", "--source", "bogus"],
                     ["Ti/16", "--to", f["file"]], [""]],
        "predict": [[ck, f["missing"] + ".png"], [ck, f["txt"]], [ck, f["empty_png"]],
                    [ck, f["image"], "--top-k", "0"], [f["corrupt"], f["image"]],
                    ["random:", f["image"]], ["random:Q/99", f["image"]],
                    [ck, f["image"], "--res", "33"], [ck, f["image"], "--attention", f["file"]],
                    [ck, f["image"], "--format", "xml"]],
        "plot": [["--x", "nope"], ["--out", f["file"] + "/p.png"], ["--out", f["out"] + ".txt"],
                 ["--size", "0x0"], ["--where", "1/0 > 0"]],
        "plot-run": [[f["missing"]], [f["emptydir"]], [f["badrun"]], [f["file"]]],
        "finetune": [[ck, "--dataset", d, "--steps", "0"], [ck, "--dataset", d, "--lr", "-1"],
                     [ck, "--dataset", f["missing"]], [ck, "--dataset", f["emptydir"]],
                     [f["corrupt"], "--dataset", d, "--steps", "1", "--res", "32"],
                     [ck, "--dataset", d, "--res", "33", "--steps", "1"],
                     [ck, "--dataset", d, "--workdir", f["file"], "--steps", "1"],
                     [ck, "--dataset", d, "--dtype", "float16"],
                     [ck, "--dataset", d, "--eval-split", "all"]],
        "finetune --head-only": [
            [ck, "--dataset", d, "--head-only", "--steps", "10"],
            [ck, "--dataset", d, "--head-only", "--lr", "0.03"],
            [ck, "--dataset", f["missing"], "--head-only"],
            [f["corrupt"], "--dataset", d, "--head-only", "--res", "32"],
            [ck, "--dataset", d, "--head-only", "--workdir", f["file"], "--res", "32"],
            ["random:", "--dataset", d, "--head-only"]],
        "evaluate": [[ck, "--dataset", f["missing"]], [f["corrupt"], "--dataset", d],
                     [ck, "--dataset", d, "--batch", "0"], [ck, "--dataset", d, "--eval-split", "bogus"],
                     [ck, "--dataset", d, "--format", "xml"], ["no-such-run", "--dataset", d]],
        "export": [[ck, "--to", "bogus", "--out", f["out"]], [ck, "--to", "timm", "--out", f["file"]],
                   [f["corrupt"], "--to", "npz", "--out", f["out"] + "2"],
                   [f["missing"], "--to", "npz", "--out", f["out"] + "3"],
                   [f["emptydir"], "--to", "npz", "--out", f["out"] + "4"]],
        "probe": [["--dataset", d, "--candidates", ck, "--shots", "0"],
                  ["--dataset", d, "--candidates", ck, "--shots", "a"],
                  ["--dataset", d, "--candidates", ck, "--sort", "nope"],
                  ["--dataset", f["missing"], "--candidates", ck],
                  ["--dataset", d, "--candidates", f["corrupt"], "--res", "32"],
                  ["--dataset", d, "--candidates", ck, "--plot", f["out"] + ".txt"],
                  ["--dataset", d, "--candidates", ck, "--res", "33"]],
        "index build": [["--source", f["missing"] + ".csv"], ["--source", f["txt"]],
                        ["--out", f["file"]]],
        "index info": [["--format", "xml"]],
        "cache list": [["--format", "xml"]],
        "cache clear": [["no-such-checkpoint"]],
        "cache verify": [["no-such-checkpoint"]],
        "data check": [[f["missing"]], [f["emptydir"]], [f["file"]], [d, "--min-images", "-1"],
                       [d, "--format", "xml"]],
    }
    return [Try(command, [*command.split(" ")[:1 if command.startswith("finetune") else None],
                          *argv])
            for command, argvs in table.items() for argv in argvs]


def run_one(t: Try) -> None:
    from vitzoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(t.argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a traceback is what this measures
        t.outcome, t.detail = "traceback", traceback.format_exc().strip().splitlines()[-1]
        return
    text = err.getvalue()
    if "Traceback (most recent call last)" in text or "Traceback" in out.getvalue():
        t.outcome, t.detail = "traceback", text.strip().splitlines()[-1]
    elif code == 0:
        t.outcome, t.detail = "wrong success", (out.getvalue() + text).strip()[:160]
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.startswith("error:")]
        t.outcome = "clean error"
        t.detail = (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip()
                    else f"exit {code}, nothing said")[:200]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every try")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update({"VITZOO_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1",
                           "HF_HOME": str(root / "hf"), "STORAGE_EMULATOR_HOST": closed_port(),
                           "HF_ENDPOINT": closed_port(), "VITZOO_CONNECT_TIMEOUT": "3",
                           "VITZOO_ALLOW_CPU": "1", "COLUMNS": "100"})
        os.environ.pop("VITZOO_MIRRORS", None)
        os.environ.pop("VITZOO_GCS_ENDPOINT", None)
        os.chdir(root)
        all_tries = tries(fixtures(root / "fx"))
        for t in all_tries:
            run_one(t)
            if args.verbose:
                print(f"{t.outcome:13} vitzoo {' '.join(t.argv)}\n              {t.detail}",
                      flush=True)
    commands = list(dict.fromkeys(t.command for t in all_tries))
    print("| command | tried | clean error | traceback | wrong success |")
    print("| --- | ---: | ---: | ---: | ---: |")
    totals = [0, 0, 0, 0]
    for command in commands:
        mine = [t for t in all_tries if t.command == command]
        counts = [len(mine)] + [sum(t.outcome == o for t in mine)
                                for o in ("clean error", "traceback", "wrong success")]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        print(f"| {command} | " + " | ".join(map(str, counts)) + " |")
    print("| **all** | " + " | ".join(f"**{n}**" for n in totals) + " |")
    bad = [t for t in all_tries if t.outcome != "clean error"]
    for t in bad:
        print(f"- {t.outcome}: `vitzoo {' '.join(t.argv)}`: {t.detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
