"""Products routed through the oneDNN kernel.

The suite's conftest pins ``VITZOO_CPU_MATMUL=xla`` and gives each test its own
``VITZOO_HOME``; its ``kernel`` fixture compiles the kernel once per session and loads it,
and tests that route products through it set ``VITZOO_CPU_MATMUL=onednn`` (``onednn``).
Tests skip when this machine has no oneDNN wheel or no compiler (the fallback tests
do not need either).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def onednn(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernel loaded and ``VITZOO_CPU_MATMUL=onednn`` for this test."""
    from vitzoo.kernels import matmul

    monkeypatch.setenv(matmul.ENV, "onednn")
    matmul.forget_problem()
    return kernel
