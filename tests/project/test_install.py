"""A complete install: every command either works or says in one line what to install.

The fast tests run the real entry point in a subprocess whose import system refuses one
module (a ``sys.meta_path`` blocker installed before vitzoo is imported), as on a machine
where that package is missing. The slow test installs the repository into a fresh virtual
environment with no extras and fine-tunes a tiny checkpoint on a generated image folder.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from PIL import Image

from tests.support import REPO_ROOT
from tests.support.ckpt_factory import write_tiny_vit

_BLOCKED_RUN = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from vitzoo.cli import main
main(sys.argv[2:])
"""


def _run_blocked(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _BLOCKED_RUN, blocked, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8) + 170 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_vit(tmp_path / "tiny.npz", num_classes=10, image_size=32, patch=8)


@pytest.mark.parametrize("blocked, package, command", [
    ("jax", "jax", ["predict", "{ckpt}", "{image}"]),
    ("safetensors", "safetensors", ["export", "{ckpt}", "--to", "timm", "--out", "out"]),
    ("PIL", "pillow", ["predict", "{ckpt}", "{image}"]),
])
def test_a_missing_package_is_named_in_one_line(tmp_path, tiny, blocked, package, command):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    args = [a.format(ckpt=tiny, image=image) for a in command]
    result = _run_blocked(blocked, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: this command needs the Python package {package!r} (module {blocked!r})")
    assert f"pip install {package}" in line and "pip install vitzoo" in line


def test_a_missing_part_of_vitzoo_itself_says_reinstall(tmp_path, tiny):
    result = _run_blocked("vitzoo.weights.export", "export", str(tiny), "--to", "npz", "--out", "o",
                          cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: this vitzoo installation is incomplete (module vitzoo.weights.export is missing); "
        "reinstall it: pip install --force-reinstall vitzoo")


def _project() -> dict:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> dict[str, Requirement]:
    """pyproject's unconditional dependencies by canonical name (both TensorFlow spellings)."""
    return {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}


def test_dependencies_cover_every_heavy_module_the_cli_names():
    """Each package the CLI tells people to install is a declared dependency."""
    from vitzoo.cli import PACKAGE_OF_MODULE

    assert {canonicalize_name(p) for p in PACKAGE_OF_MODULE.values()} - {"pyyaml"} <= set(_declared())
    extras = _project()["optional-dependencies"]
    # the accelerator variants take jax's one range from the dependencies
    assert extras["cuda12"] == ["jax[cuda12]"] and extras["tpu"] == ["jax[tpu]"]
    assert extras["ml"] == []  # kept as an alias for older instructions


def _imported_modules(package: Path) -> set[str]:
    """Top-level names of every module imported anywhere under ``package`` (inside functions too)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"vitzoo", "__future__"}


#: Imports vitzoo guards itself, each with a one-line error naming the extra to install.
OPTIONAL_IMPORTS = {"s3fs": "s3"}


def test_every_imported_package_is_declared():
    """A package imported directly but only present as someone else's dependency (google-crc32c
    through gcsfs, ml_dtypes through jax) disappears the day that someone drops it."""
    from importlib.metadata import packages_distributions

    providers = packages_distributions()  # the installed distributions' own file lists
    declared = set(_declared())
    extras = _project()["optional-dependencies"]
    undeclared = {}
    for module in sorted(_imported_modules(REPO_ROOT / "vitzoo")):
        if module in OPTIONAL_IMPORTS:
            assert any(Requirement(r).name == module for r in extras[OPTIONAL_IMPORTS[module]])
            continue
        assert module in providers, f"{module} is imported by vitzoo but not installed"
        if not {canonicalize_name(d) for d in providers[module]} & declared:
            undeclared[module] = providers[module]
    assert undeclared == {}


#: The libraries whose API vitzoo calls: each capped below its next breaking release.
API_LIBRARIES = ("jax", "flax", "optax", "tensorflow", "tensorflow-cpu", "tensorflow-datasets")


def _next_breaking(version: str) -> Version:
    """The next major release, or for a 0.x library the next minor (its breaking unit)."""
    v = Version(version)
    return Version(f"0.{v.minor + 1}") if v.major == 0 else Version(f"{v.major + 1}")


def _lock() -> dict[str, list[tuple[str, str]]]:
    """``{canonical name: [(version, marker), ...]}`` from requirements/test.lock."""
    pins: dict[str, list[tuple[str, str]]] = {}
    for line in (REPO_ROOT / LOCK).read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            pin, _, marker = line.partition(";")
            name, _, version = pin.strip().partition("==")
            pins.setdefault(canonicalize_name(name), []).append((version, marker.strip()))
    return pins


LOCK = "requirements/test.lock"


def test_api_libraries_are_capped_at_their_next_breaking_release():
    declared = _declared()
    for name in API_LIBRARIES:
        ((locked, _),) = _lock()[name]
        specifier = declared[name].specifier
        assert locked in specifier, f"{name} {locked} (the tested one) is outside {specifier}"
        caps = [s for s in specifier if s.operator == "<"]
        assert [Version(s.version) for s in caps] == [_next_breaking(locked)], (name, str(specifier))


def test_the_lock_pins_every_dependency_within_its_range():
    """make test installs the lock with --no-deps for vitzoo: a dependency missing from it, or
    pinned outside pyproject's range, would be a set nobody tested or one pip would refuse."""
    lock = _lock()
    requirements = [Requirement(r) for r in _project()["dependencies"]]
    requirements += [Requirement(r) for r in _project()["optional-dependencies"]["test"]]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement} is not pinned in {LOCK}; run make lock"
        for version, _ in lock[name]:
            assert version in requirement.specifier, f"{LOCK} pins {name}=={version} outside {requirement}"
    # and nothing is pinned twice for one platform (a universal lock splits only by marker)
    assert all(len({v for v, _ in pins}) == len(pins) for pins in lock.values())


def test_make_and_ci_install_the_lock_then_vitzoo_without_resolving():
    make = (REPO_ROOT / "Makefile").read_text()
    assert f"LOCK := {LOCK}" in make
    install = [line.strip() for line in make.splitlines() if "uv pip install" in line]
    assert install[0].endswith("-r $(LOCK)") and install[1].endswith("--no-deps -e .")
    assert len(install) == 2, install  # no other install resolves versions anew
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_the_installed_metadata_is_this_pyproject():
    """vitzoo doctor reads the tested ranges from the installed metadata; a stale install
    (pyproject changed, not reinstalled) would check against old ranges."""
    from importlib import metadata

    try:
        installed = metadata.requires("vitzoo") or []
    except metadata.PackageNotFoundError:
        pytest.skip("vitzoo is not installed (run from a bare checkout)")
    installed_core = {str(Requirement(r)) for r in installed if "extra ==" not in r}
    assert installed_core == {str(Requirement(r)) for r in _project()["dependencies"]}, (
        "the installed vitzoo is stale: reinstall it (make test, or pip install --no-deps -e .)")


def _index_options(venv_python: Path) -> list[str]:
    """The package index and wheel folders pip is configured with, passed on to uv."""
    listed = subprocess.run([str(venv_python), "-m", "pip", "config", "list"], capture_output=True,
                            text=True, check=False).stdout
    options: list[str] = []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        values = value.strip().strip("'\"").split()
        if key.endswith("index-url"):
            flag = "--extra-index-url" if "extra" in key else "--index-url"
            options += [item for v in values for item in (flag, v)]
        elif key.endswith("find-links"):
            options += [item for v in values if Path(v).is_dir() for item in ("--find-links", v)]
    return options


@pytest.mark.slow
def test_fresh_venv_without_extras_can_finetune(tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed next to this Python")
    # a copy of the working tree, so the build leaves nothing in the repository
    source = tmp_path / "src"
    litter = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build",
                                    ".pytest_cache", ".ruff_cache")
    shutil.copytree(REPO_ROOT, source, ignore=lambda folder, names: litter(folder, names) | (
        {"runs", "tmp"} & set(names) if Path(folder) == REPO_ROOT else set()))  # not vitzoo/runs
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        # pip treats all configured indexes alike; uv does so only when told
        [uv, "pip", "install", "--quiet", "--python", str(python), "--index-strategy", "unsafe-best-match",
         *_index_options(python), str(source)],
        capture_output=True, text=True, timeout=1500)
    assert install.returncode == 0, install.stderr[-3000:]

    data = _image_folder(tmp_path / "photos")
    ckpt = write_tiny_vit(tmp_path / "tiny.npz", num_classes=10, image_size=32, patch=8)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(VITZOO_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run(
        [str(venv / "bin" / "vitzoo"), "finetune", str(ckpt), "--dataset", str(data), "--workdir",
         str(tmp_path / "run"), "--steps", "2", "--warmup", "1", "--batch", "4", "--res", "32",
         "--eval-every", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["class_names"] == ["cat", "dog"]
    assert (tmp_path / "run" / "final.npz").is_file()
    # the catalog commands work from the installed copy too (the snapshot ships with it)
    listed = subprocess.run([str(venv / "bin" / "vitzoo"), "list", "--arch", "B/16", "--pretrained",
                             "--format", "csv", "--limit", "2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert len(listed.stdout.splitlines()) == 3 and "B_16-i" in listed.stdout
    # and the installed package is the copy, not this checkout
    where = subprocess.run([str(python), "-c", "import vitzoo; print(vitzoo.__file__)"], env=env,
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(venv) in where
