"""The catalog's Python entry point and the one home of its constants."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vitzoo
from tests.support import REPO_ROOT
from vitzoo.runs import registry

PACKAGE = REPO_ROOT / "vitzoo"


def _register_a_run(tmp_path: Path) -> None:
    npz = tmp_path / "final.npz"
    npz.write_bytes(b"PK\x03\x04")
    registry.register_run("my-pets-run", npz, {"name": "Ti/16", "adapt_ds": "oxford_iiit_pet"})


def test_load_catalog_is_the_published_zoo_and_local_runs_are_opt_in(tmp_path):
    _register_a_run(tmp_path)
    published = vitzoo.load_catalog()
    assert "local" not in set(published["collection"])
    with_runs = vitzoo.load_catalog(include_local=True)
    assert len(with_runs) == len(published) + 1
    assert with_runs["checkpoint"].iloc[-1] == "my-pets-run"
    assert with_runs["collection"].iloc[-1] == "local"


def test_calling_the_package_still_works_but_warns(tmp_path):
    _register_a_run(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"use vitzoo\.load_catalog\(\)"):
        df = vitzoo.catalog()
    assert len(df) == len(vitzoo.load_catalog(include_local=True))  # what 0.1 returned


def test_vitzoo_catalog_is_the_subpackage_even_before_anything_imports_it():
    code = ("import sys, vitzoo; assert 'vitzoo.catalog' not in sys.modules; "
            "import types; assert isinstance(vitzoo.catalog, types.ModuleType); "
            "print(vitzoo.catalog.__name__, sorted(m for m in ('pandas', 'pyarrow', 'jax') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    assert out.split() == ["vitzoo.catalog", "[]"]


def _string_constants(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


@pytest.mark.parametrize(("literal", "home"), [
    ("gs://vit_models/augreg/index.csv", "config.py"),
    ("catalog.parquet", "catalog/store.py"),
    ("catalog.cols", "catalog/store.py"),
    ("manifest.json", "catalog/store.py"),
])
def test_each_catalog_constant_is_written_once(literal, home):
    """A value (not a docstring mention) in exactly one module of the package."""
    homes = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if literal in _string_constants(p)]
    assert homes == [home]


def test_read_manifest_has_one_definition():
    defining = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
                if any(isinstance(n, ast.FunctionDef) and n.name == "read_manifest"
                       for n in ast.walk(ast.parse(p.read_text())))]
    assert defining == ["catalog/store.py"]
