"""In a multi-process run, native code's writes to descriptor 1 (Gloo's ``[Gloo] Rank ...``
lines) go to stderr and stdout carries only what vitzoo prints (``--format json`` parses). The
two-process probe (tests/probe/test_probe_multiprocess.py) checks it with the real Gloo; here
the native write is a plain ``os.write(1, ...)``, as C++'s ``std::cout`` does in the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import REPO_ROOT

CODE = r"""
import json, os, sys
from vitzoo.backbone import distributed
print("before", flush=True)
distributed.native_stdout_to_stderr()
distributed.native_stdout_to_stderr()  # once per process: a second call changes nothing
os.write(1, b"[Gloo] Rank 0 is connected to 1 peer ranks\n")
print(json.dumps({"ours": True}))
sys.stdout.write("unflushed at exit\n")
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_native_writes_to_stdout_go_to_stderr_and_python_keeps_stdout():
    proc = _run(CODE)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["before", json.dumps({"ours": True}), "unflushed at exit"]
    assert "[Gloo] Rank 0" in proc.stderr


def test_a_stdout_that_is_not_descriptor_1_is_left_alone(capsys):
    from vitzoo.backbone import distributed

    captured = sys.stdout
    distributed.native_stdout_to_stderr()  # pytest's capture: no descriptor
    assert sys.stdout is captured and not distributed._stdout_moved
