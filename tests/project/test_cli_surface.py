"""The command line as typer draws it: help pages, option choices, usage errors, library noise.

The oracle for the help pages is the command tree itself (every command's description, every
argument's help text) read through click's objects, compared with what ``-h`` prints; the
commands that take ``--format`` are listed here by hand, so a new one is noticed.
"""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys

import pytest
import typer.main

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli
from tests.support.gcs_emulator import closed_port_url
from vitzoo.cli import app


def _flat(text: str) -> str:
    return " ".join(text.split())


def _commands(group=None, path=()):
    """``(path, click command)`` for every command and group under ``group``."""
    group = group or typer.main.get_command(app)
    for name, command in getattr(group, "commands", {}).items():
        yield (*path, name), command
        yield from _commands(command, (*path, name))


def test_every_listing_shows_whole_descriptions(capsys, monkeypatch):
    """``vitzoo -h`` used to end every description in "..." even at 200 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    groups = [(), *(path for path, command in _commands() if hasattr(command, "commands"))]
    assert ("cache",) in groups and ("index",) in groups
    for group in groups:
        code, out, _ = run_cli(capsys, *group, "-h")
        assert code == 0
        listing = out.split("Commands:", 1)[1]
        assert "..." not in listing
        for path, command in _commands():
            if path[:-1] == group:
                first_paragraph = command.help.split("\n\n")[0]
                assert _flat(first_paragraph) in _flat(listing), (group, path)
    code, out, _ = run_cli(capsys, "-h")
    assert "final_val (paper sec. 4.5)." in _flat(out)  # not cut at the abbreviation


def test_every_argument_is_described(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    arguments = 0
    for path, command in _commands():
        code, out, _ = run_cli(capsys, *path, "-h")
        assert code == 0 and "\\[" not in out  # no stray escape before "[default: ...]"
        for param in command.params:
            if param.param_type_name == "argument":
                arguments += 1
                assert param.help, f"vitzoo {' '.join(path)}: argument {param.name} has no help"
                assert _flat(param.help) in _flat(out), (path, param.name)
    assert arguments >= 10


#: Every command with --format, the values it accepts, and arguments that get it past parsing.
FORMAT_COMMANDS = {
    ("list",): ("table|csv|json|jsonl", []),
    ("show",): ("table|csv|json|jsonl", ["B/16"]),
    ("recommend",): ("table|csv|json|jsonl", []),
    ("index", "info"): ("table|csv|json|jsonl", []),
    ("predict",): ("table|csv|json|jsonl", ["m.npz", "x.png"]),
    ("evaluate",): ("table|csv|json|jsonl", ["m.npz", "--dataset", "photos"]),
    ("probe",): ("table|json|csv", ["--dataset", "photos"]),
    ("data", "check"): ("table|json", ["photos"]),
}


def test_format_values_are_typer_choices_listed_by_help(capsys):
    found = {path for path, command in _commands()
             if any("--format" in getattr(p, "opts", ()) for p in command.params)}
    assert found == set(FORMAT_COMMANDS)
    for path, (values, args) in FORMAT_COMMANDS.items():
        code, out, _ = run_cli(capsys, *path, "-h")
        assert f"--format <{values}>" in out, path
        code, out, err = run_cli(capsys, *path, *args, "--format", "xml")
        choices = ", ".join(f"'{v}'" for v in values.split("|"))
        assert code == 2 and out == "", path
        assert err == (f"error: invalid value for '--format': 'xml' is not one of {choices}. "
                       f"See 'vitzoo {' '.join(path)} -h'.\n"), err


@pytest.mark.parametrize("args, message", [
    (["predict"], "error: missing argument 'checkpoint'. See 'vitzoo predict -h'."),
    (["list", "--limit", "many"], "error: invalid value for '--limit': Input should be a valid integer"),
    (["list", "--colums", "name"], "error: no such option: --colums"),
    (["lst"], "error: no such command 'lst'"),
])
def test_usage_errors_are_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Usage:" not in err, err


def test_no_arguments_print_the_help_and_version_still_works(capsys):
    code, out, err = run_cli(capsys)
    assert code == 2 and "Commands:" in out + err and "error:" not in err
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("vitzoo ")


def test_no_module_patches_typer():
    """The help used to be fixed by overwriting typer.core.HAS_RICH, a private flag."""
    for path in (REPO_ROOT / "vitzoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                root = target
                while isinstance(root, ast.Attribute):
                    root = root.value
                assert not (isinstance(target, ast.Attribute) and isinstance(root, ast.Name)
                            and root.id in ("typer", "click")), f"{path}:{node.lineno}"


NOISE = ("absl::InitializeLog", "oneDNN custom operations", "port.cc")

#: What TensorFlow 2.21 writes to file descriptor 2 while it is imported, and an error line.
_NOISY_MODULE = """
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
            b"I0000 00:00:1796189711.840036   12478 port.cc:153] oneDNN custom operations are on.\\n"
            b"E0000 00:00:1796189711.900000   12478 cuda_dnn.cc:8579] a real error\\n")
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_import_notices_are_filtered_and_errors_kept(tmp_path, quiet):
    (tmp_path / "noisy_fake.py").write_text(_NOISY_MODULE)
    code = ("import vitzoo.runtime as runtime\n"
            f"runtime.NOISY_IMPORTS = ('noisy_fake',)\nif {quiet}:\n    runtime.quiet_library_logs()\n"
            "import noisy_fake\nimport noisy_fake\nprint('imported')\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{tmp_path}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=120, cwd=tmp_path)
    assert result.stdout == "imported\n", result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1].endswith("cuda_dnn.cc:8579] a real error")
    assert len(lines) == (1 if quiet else 3), lines


@pytest.mark.slow
def test_library_start_up_notices_are_hidden_unless_verbose():
    """``doctor`` imports jax and TensorFlow, as every ML command does; their C++ loggers
    printed absl's InitializeLog warning and the oneDNN notice (twice) on every run."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(COLUMNS="200", VITZOO_GCS_ENDPOINT=closed_port_url(), HF_HUB_OFFLINE="1",
               VITZOO_MIRRORS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))

    def stderr_of(*flags: str) -> str:
        result = subprocess.run([sys.executable, "-m", "vitzoo", *flags, "doctor", "--timeout", "1"],
                                capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
        assert "backend" in result.stdout, result.stdout + result.stderr  # it did load jax
        assert "hidden from TensorFlow" in result.stdout  # ...and TensorFlow
        return result.stderr

    quiet = stderr_of()
    assert not [word for word in NOISE if word in quiet], quiet
    if platform.machine().lower() in ("x86_64", "amd64"):  # where TensorFlow uses oneDNN
        loud = stderr_of("--verbose")
        assert "oneDNN custom operations" in loud, loud  # the test sees the noise when it is there
