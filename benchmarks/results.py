"""Keep benchmarks/RESULTS.md one file with one section per benchmark script."""

from __future__ import annotations

import re
from pathlib import Path

from vitzoo.atomic import atomic_write

HEADER = (
    "# Benchmark results\n\nEach section is rewritten by the script named in it; "
    "numbers are measurements, never estimates.\n"
)


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) ``## title`` with ``body``, leaving other sections alone; atomic."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    with atomic_write(path, "w") as handle:
        handle.write(text.rstrip() + "\n")
