"""Shared fixtures: hermetic environment and the GCS emulator.

Every test runs with its own ``VITZOO_HOME`` and Hugging Face cache, Hugging Face
offline, and GCS pointed at a closed local port, so nothing can reach the real
network by accident. Tests that need GCS take the ``gcs`` fixture, which points
``VITZOO_GCS_ENDPOINT`` at a real emulator. Helpers live in ``tests/support/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gcs_emulator import Emulator, closed_port_url


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No test reads the user's cache or reaches GCS / huggingface.co for real.

    ``STORAGE_EMULATOR_HOST`` (not ``VITZOO_GCS_ENDPOINT``) carries the dead
    endpoint so a test that sets either variable itself still wins.
    """
    home = tmp_path_factory.mktemp("vitzoo_home")
    monkeypatch.setenv("VITZOO_HOME", str(home))
    monkeypatch.delenv("VITZOO_GCS_ENDPOINT", raising=False)
    monkeypatch.delenv("VITZOO_MIRRORS", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", closed_port_url())
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    monkeypatch.setenv("VITZOO_CONNECT_TIMEOUT", "3")
    # The suite's tiny models run on the CPU, also on a machine with a GPU that this JAX cannot
    # use; the GPU guard's own tests (tests/project/test_accelerators.py) unset this.
    monkeypatch.setenv("VITZOO_ALLOW_CPU", "1")
    # The autotune trial (seconds of child processes per new shape) is off for the suite;
    # tests/adapt/test_autotune.py turns it on where it is the subject.
    monkeypatch.setenv("VITZOO_AUTOTUNE", "0")
    # bf16 models use XLA's products on every CPU (jaxprs and counts do not depend on the
    # machine's bf16 units, no kernel build per test home); tests/kernels/ switch oneDNN on.
    monkeypatch.setenv("VITZOO_CPU_MATMUL", "xla")
    # A command's --no-compile-cache / --no-autotune is remembered for the process: in-process
    # CLI calls in one test must not decide it for the next.
    from vitzoo import runtime

    monkeypatch.setattr(runtime, "_cli_choice", None)
    monkeypatch.setattr(runtime, "_cli_autotune", None)


@pytest.fixture(scope="session")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vitzoo's oneDNN kernel, built once per test session into a temporary folder and loaded.

    Tests that need it skip on a machine without the oneDNN wheel or a compiler.
    """
    from vitzoo.errors import VitzooError
    from vitzoo.kernels import build, matmul

    try:
        path = build.build(tmp_path_factory.mktemp("kernels"), announce=False)
    except VitzooError as exc:
        pytest.skip(f"oneDNN kernel unavailable here: {exc.one_line()}")
    matmul.load(path)
    return path


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """One in-memory GCS emulator per test process (xdist worker)."""
    emulator = Emulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs(gcs_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, emptied, with ``VITZOO_GCS_ENDPOINT`` pointing at it for this test."""
    gcs_emulator.wipe()
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gcs_emulator.url)
    return gcs_emulator
