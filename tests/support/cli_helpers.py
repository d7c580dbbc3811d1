"""Running the real ``vitzoo`` entry point in-process, as a user's shell would."""

from __future__ import annotations

from vitzoo.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``vitzoo ARGS`` through ``main`` (one-line errors included)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
