"""Running the real ``vitzoo`` entry point in-process, as a user's shell would, and reading its tables."""

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


#: The rule under a table's header.
RULE = "\u2500"


def table_at(capsys, monkeypatch, width: int, *args: str) -> tuple[list[str], list[str], str]:
    """(header lines, body lines, everything) of ``vitzoo ARGS`` at ``width`` columns."""
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith(RULE))
    body = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith(("note:", "names shortened", "not shown")) or \
                line.rstrip().endswith(("row", "rows")):
            break
        body.append(line)
    assert max(len(line) for line in lines) <= width, out
    return lines[:rule], body, out
