"""Helpers shared by the tests (importable modules, not tests), imported one way: ``tests.support.X``.

pytest puts the repository root on ``sys.path`` because ``tests/`` and its folders are
packages; subprocesses that need a helper get ``PYTHONPATH=REPO_ROOT`` and nothing else.
"""

from __future__ import annotations

from pathlib import Path

#: The repository checkout: README.md, index/, notebooks/ and the ``vitzoo`` package live here.
REPO_ROOT = Path(__file__).resolve().parents[2]
