"""Printing tables for people (rich) and for programs (csv, json, jsonl).

Unknown values are ``?`` in tables, empty in CSV and ``null`` in JSON; never
``nan``. rich is imported only when a table is actually drawn.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from vitzoo.catalog.frame import Frame
from vitzoo.errors import VitzooError

FORMATS = ("table", "csv", "json", "jsonl")
UNKNOWN = "?"
#: Tables longer than this are cut (machine formats never are).
TABLE_ROW_CAP = 50

_ACCURACY_HINTS = ("val", "test", "accuracy")
#: Compact headers so tables fit a terminal; --format csv/json keep the real names.
SHORT_HEADERS = {
    "adapt_ds": "dataset", "adapt_lr": "lr", "adapt_steps": "steps", "adapt_resolution": "res",
    "adapt_final_val": "val", "adapt_final_test": "test", "final_val": "up_val",
    "infer_samples_per_sec": "img/s", "finetunes": "tunes",
}
LONG_TEXT = frozenset({"checkpoint", "filename", "adapt_filename", "url", "adapt_url", "basis",
                       "note", "value_sources", "exists_source"})


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VitzooError(f"unknown --format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    return fmt


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(table: Frame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in table.to_pylist()]


def cell(column: str, value: Any) -> str:
    value = _clean(value)
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if any(h in column for h in _ACCURACY_HINTS) or column.endswith("_val"):
            return f"{value:.4f}"
        if column == "infer_samples_per_sec":
            return f"{value:,.1f}"
        return f"{value:g}"
    if isinstance(value, int) and column.endswith(("bytes", "steps", "params")):
        return f"{value:,}"
    return str(value)


def write_machine(table: Frame, fmt: str, out=None) -> None:
    """csv / json / jsonl to stdout."""
    out = out or sys.stdout
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        columns = [table.column(name) for name in table.column_names]
        for row in zip(*columns, strict=True):
            writer.writerow("" if _clean(v) is None else v for v in row)
    elif fmt == "json":
        json.dump(records(table), out, indent=1, default=str)
        out.write("\n")
    elif fmt == "jsonl":
        for row in records(table):
            out.write(json.dumps(row, default=str) + "\n")


def print_table(table: Frame, *, title: str | None = None, total: int | None = None,
                notes: Sequence[str] = ()) -> None:
    """A rich table that fits the terminal; long tables are cut with a hint."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    shown = table.slice(0, TABLE_ROW_CAP)
    rows = [[cell(k, v) for k, v in row.items()] for row in shown.to_pylist()]
    view = Table(title=title, header_style="bold", show_lines=False, pad_edge=False)
    headers = [SHORT_HEADERS.get(n, n) for n in shown.column_names]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    long_columns = [n in LONG_TEXT for n in shown.column_names]
    short_total = sum(w + 3 for w, is_long in zip(widths, long_columns, strict=True) if not is_long)
    # Keep short values whole when the long ones still get a readable width; else let rich shrink all.
    keep_short = short_total + 15 * sum(long_columns) <= console.width
    for name, header, width, is_long in zip(shown.column_names, headers, widths, long_columns,
                                            strict=True):
        numeric = shown.type_of(name) in ("int", "float")
        if is_long:
            view.add_column(header, overflow="fold", ratio=1, min_width=12 if keep_short else None)
        else:
            view.add_column(header, justify="right" if numeric else "left", no_wrap=True,
                            min_width=width if keep_short else None)
    for row in rows:
        view.add_row(*row)
    console.print(view)
    count = total if total is not None else table.num_rows
    if count > shown.num_rows:
        console.print(f"[dim]{count:,} rows; showing {shown.num_rows}. "
                      "Use --limit, --format csv or more filters.[/dim]")
    else:
        console.print(f"[dim]{count:,} rows[/dim]")
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def emit(table: Frame, fmt: str, *, title: str | None = None,
         notes: Sequence[str] = ()) -> None:
    """Print in the chosen format; notes go below a table, or to stderr for machine formats."""
    check_format(fmt)
    if fmt == "table":
        print_table(table, title=title, notes=notes)
        return
    write_machine(table, fmt)
    for note in notes:
        sys.stderr.write(f"note: {note}\n")
