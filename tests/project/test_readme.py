"""The README cannot rot: every command it shows is run or checked.

* Fenced blocks marked ``runnable`` (```` ```bash runnable ````, ```` ```python runnable ````)
  run in document order in one temporary folder, each command in its own process, with a
  hermetic environment: a fresh ``VITZOO_HOME``, Hugging Face offline, GCS at a local
  emulator whose bucket holds a tiny checkpoint under the recommended Ti/16's real name,
  a generated ``my_photos/`` image folder and a generated ``index.csv`` (its metric values
  are TEST DATA). Every command must exit 0.
* Every other ``bash`` block (network, several hosts, the quick start) is checked
  line by line: a ``make`` target must exist, a ``vitzoo`` command must exist and accept
  every option it uses (its ``--help`` lists it). Inline ``vitzoo ...`` code spans get the
  same check; other Python blocks must compile and their imports must resolve.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.support import REPO_ROOT
from vitzoo.catalog import store

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent
TI16 = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    lang: str
    runnable: bool
    body: str
    line: int

    def commands(self) -> list[str]:
        """Shell commands: ``\\``-continued lines joined, comments and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.body)
        return [line.strip() for line in joined.splitlines()
                if line.strip() and not line.strip().startswith("#")]


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        words = match.group(1).split()
        blocks.append(Block(lang=words[0] if words else "", runnable="runnable" in words[1:],
                            body=match.group(2), line=text.count("\n", 0, match.start()) + 1))
    return blocks


# --- static checks ------------------------------------------------------------------


@cache
def help_text(path: tuple[str, ...]) -> tuple[int, str]:
    from vitzoo.cli import app

    result = CliRunner().invoke(app, [*path, "--help"])
    return result.exit_code, result.output


def split_vitzoo(command: str) -> list[str] | None:
    """The argv after ``vitzoo`` (leading ``VAR=value`` assignments skipped), or None."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    if not words or words[0] != "vitzoo":
        return None
    return words[1:]


def check_vitzoo(argv: list[str], where: str) -> None:
    """The (sub)command exists and its --help lists every option used."""
    assert argv, f"{where}: bare `vitzoo`"
    path = (argv[0],)
    code, text = help_text(path)
    assert code == 0, f"{where}: `vitzoo {argv[0]}` is not a command"
    if "Commands:" in text and len(argv) > 1 and not argv[1].startswith("-"):
        path = (argv[0], argv[1])
        code, text = help_text(path)
        assert code == 0, f"{where}: `vitzoo {' '.join(path)}` is not a command"
    for word in argv[len(path):]:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"{where}: `vitzoo {' '.join(path)}` has no option {option}")


def make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def test_quick_start_is_exactly_make_demo_and_make_test():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    first = _FENCE.search(section)
    assert first is not None
    assert first.group(2).split("\n")[:2] == ["make demo", "make test"]
    assert first.group(2).strip().splitlines() == ["make demo", "make test"]
    assert {"demo", "test"} <= make_targets()


def test_every_shown_command_exists_with_the_options_it_uses():
    blocks = readme_blocks()
    assert sum(b.runnable for b in blocks) >= 5
    targets = make_targets()
    checked = 0
    for block in blocks:
        where = f"README.md block at line {block.line}"
        if block.lang in ("bash", "sh", "shell"):
            for command in block.commands():
                argv = split_vitzoo(command)
                if argv is not None:
                    check_vitzoo(argv, where)
                elif command.split()[0] == "make":
                    assert command.split()[1] in targets, f"{where}: no make target in {command!r}"
                else:
                    pytest.fail(f"{where}: cannot check {command!r} (not vitzoo or make)")
                checked += 1
        elif block.lang == "python":
            tree = ast.parse(block.body)  # a syntax error fails here
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name), \
                            f"{where}: {node.module} has no {alias.name}"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        importlib.import_module(alias.name)
        else:
            assert block.lang == "" and not block.runnable, f"{where}: unknown block {block.lang!r}"
    assert checked >= 25


def test_inline_vitzoo_commands_exist():
    text = _FENCE.sub("", README.read_text(encoding="utf-8"))
    spans = re.findall(r"`(vitzoo [^`]+)`", text)
    assert len(spans) >= 10
    for span in spans:
        check_vitzoo(split_vitzoo(span), f"README.md inline `{span}`")


def test_architecture_section_names_real_paths():
    section = README.read_text(encoding="utf-8").split("## Architecture", 1)[1]
    # a top-level folder, alone or followed by a path; `vitzoo.load_catalog` is Python, not a path
    paths = re.findall(r"`((?:vitzoo|index|notebooks|tests|benchmarks)(?:/[\w/.]*)?)`", section)
    assert len(paths) >= 15
    for path in paths:
        assert (REPO_ROOT / path).exists(), f"README Architecture names {path}, which does not exist"
    for folder in ("vitzoo/catalog/", "vitzoo/models/", "vitzoo/data/", "vitzoo/adapt/",
                   "vitzoo/cli/", "index/", "notebooks/", "tests/", "benchmarks/"):
        assert folder in paths, f"README Architecture does not map {folder}"


# --- running the runnable blocks ------------------------------------------------------


def make_photos(folder: Path, per_class: int = 10) -> None:
    """Two easy classes (reddish cats, bluish dogs): synthetic, tiny, deterministic."""
    rng = np.random.default_rng(0)
    for name, colour in (("cat", (190, 60, 40)), ("dog", (40, 70, 190))):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (48, 48, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{name}{i}.jpg")


@pytest.fixture
def readme_world(gcs, tmp_path):
    """The stand-ins for the network and for the user's files."""
    from tests.support.bucket_factory import write_index_csv
    from tests.support.ckpt_factory import write_tiny_vit

    gcs.create_bucket("vit_models")
    tiny = write_tiny_vit(tmp_path / "tiny.npz", num_classes=10, image_size=224, patch=16)
    gcs.upload("vit_models", f"augreg/{TI16}.npz", tiny.read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    make_photos(work / "my_photos")
    gcs.create_bucket("my-bucket")  # the README's image folder in a bucket
    for photo in sorted((work / "my_photos").rglob("*.jpg")):
        gcs.upload("my-bucket", f"photos/{photo.relative_to(work / 'my_photos').as_posix()}",
                   photo.read_bytes())
    write_index_csv(work / "index.csv")  # TEST DATA metrics, real filenames
    env = {k: v for k, v in os.environ.items() if k != "VITZOO_INDEX"}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VITZOO_HOME=str(tmp_path / "home"),
        VITZOO_GCS_ENDPOINT=gcs.url,
        HF_HUB_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        COLUMNS="160",
    )
    return work, env, tiny


def run_block(block: Block, work: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    where = f"README.md block at line {block.line}"
    if block.lang == "python":
        commands = [(block.body, [sys.executable, "-c", block.body])]
    else:
        commands = [(c, ["bash", "-c", c]) for c in block.commands()]
    outputs = []
    for shown, argv in commands:
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (
            f"{where}: `{shown}` exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
        outputs.append((shown, result.stdout))
    return outputs


@pytest.mark.slow
def test_runnable_blocks_run_in_order(readme_world):
    work, env, tiny = readme_world
    assert (BIN / "vitzoo").exists(), "the vitzoo console script must be installed in this venv"
    outputs: dict[str, str] = {}
    for block in readme_blocks():
        if block.runnable:
            for shown, stdout in run_block(block, work, env):
                outputs[shown] = stdout
    assert len(outputs) >= 15

    # What the commands left behind is what the README says they do.
    assert "12 rows" in outputs["vitzoo list --arch B/16 --aug medium1 --pretrained"]
    with Image.open(work / "zoo.png") as image:
        assert image.format == "PNG" and image.size == (1000, 700)
    downloaded = Path(outputs["vitzoo download Ti/16"].strip())
    assert downloaded.name == f"{TI16}.npz"
    assert downloaded.read_bytes() == tiny.read_bytes()
    run_dir = work / "runs" / "ti16-photos"
    for name in ("final.npz", "run.json", "metrics.jsonl", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert "ti16-photos" in outputs["vitzoo list --local"]
    for name in ("cat0.png", "dog0.png"):  # predict --attention: one overlay per image, its size
        with Image.open(work / "attention" / name) as image:
            assert image.format == "PNG" and image.size == (48, 48)
    bucket_eval = json.loads(outputs[
        "vitzoo evaluate ti16-photos --dataset gs://my-bucket/photos --format json"])
    assert bucket_eval["examples"] == 2 and bucket_eval["dataset"] == "gs://my-bucket/photos"
    assert (store.current_version(work / "my_index") / store.CATALOG_FILE).is_file()
    # built from index.csv, the catalog ranks by upstream accuracy instead of falling back
    assert "best final_val of 28 i21k checkpoints" in outputs[
        "VITZOO_INDEX=my_index vitzoo recommend --arch B/16 --arch Ti/16"]
    multi = json.loads((work / "runs" / "ti16-8dev" / "run.json").read_text())
    assert multi["batch"]["devices"] == 8 and (work / "runs" / "ti16-8dev" / "final.npz").is_file()
    with Image.open(work / "probe.png") as image:
        assert image.format == "PNG"
    choice = json.loads(next(v for k, v in outputs.items() if k.startswith("vitzoo recommend --dataset")))
    assert choice["checkpoint"] in ("Ti/16", "runs/ti16-photos/final.npz") and choice["img_per_sec"] > 0
    head = json.loads((work / "runs" / "ti16-head" / "run.json").read_text())
    assert head["head_only"] is True and (work / "runs" / "ti16-head" / "final.npz").is_file()
    python_out = next(v for k, v in outputs.items() if k.startswith("import vitzoo"))
    embedded = store.read_manifest(store.current_version(REPO_ROOT / "index"))["rows"]
    registered = json.loads((Path(env["VITZOO_HOME"]) / "local_runs.json").read_text())
    kinds = sorted({row.get("row_source") for row in registered})
    assert kinds == ["local", "probe"], kinds  # the fine-tunes and what the tour probed
    assert f"{embedded + len(registered)} rows" in python_out  # the zoo plus everything registered


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_caveat_legend_is_the_catalog_s():
    from vitzoo.catalog.caveats import CAVEATS

    legend = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", _section("The catalog: sources and provenance"),
                             re.MULTILINE))
    assert legend == CAVEATS


def test_counts_units_and_nothing_invented_are_stated_as_the_data_says():
    catalog = _section("The catalog: sources and provenance")
    counts = store.read_manifest(store.current_version(REPO_ROOT / "index"))["counts"]
    for number in ("published_pretrained", "published_finetunes", "catalog_pretrained", "catalog_finetunes"):
        assert f"{counts[number]:,}" in catalog, number
    assert (f"{counts['published_pretrained']:,} = {counts['catalog_pretrained']:,} - 25 and "
            f"{counts['published_finetunes']:,} = {counts['catalog_finetunes']:,} - 850 - 1") in catalog
    assert "Nothing is invented, precisely:" in catalog and "17,136 `i21k_30` rows" in catalog
    assert "fractions in [0, 1]" in catalog


def test_tour_explains_unknowns_first_and_names_the_user_s_folder():
    tour = _section("A five-minute tour")
    first_list = tour.index("vitzoo list")
    assert tour.index("`?` means unknown") < first_list
    assert "`my_photos`\nbelow is *your* folder" in tour
    glossary = _section("Glossary")
    for term in ("`ds`", "`i21k_30`", "`do`, `sd`", "`light0`", "`strong2`", "`steps_0k`", "`wd`"):
        assert term in glossary, term
