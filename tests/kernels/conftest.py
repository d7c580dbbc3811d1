"""Build the oneDNN kernel once per test session into a temporary folder.

The suite's conftest pins ``VITZOO_CPU_MATMUL=xla`` and gives each test its own
``VITZOO_HOME``; here the kernel is compiled once (``kernel`` fixture), loaded into the
process, and tests that route products through it set ``VITZOO_CPU_MATMUL=onednn``.
Tests skip when this machine has no oneDNN wheel or no compiler (the fallback tests
below do not need either).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vitzoo.errors import VitzooError


@pytest.fixture(scope="session")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitzoo.kernels import build, matmul

    try:
        path = build.build(tmp_path_factory.mktemp("kernels"), announce=False)
    except VitzooError as exc:
        pytest.skip(f"oneDNN kernel unavailable here: {exc.one_line()}")
    matmul.load(path)
    return path


@pytest.fixture
def onednn(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernel loaded and ``VITZOO_CPU_MATMUL=onednn`` for this test."""
    from vitzoo.kernels import matmul

    monkeypatch.setenv(matmul.ENV, "onednn")
    matmul.forget_problem()
    return kernel
