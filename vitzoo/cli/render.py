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
from dataclasses import dataclass
from typing import Any

from vitzoo import text
from vitzoo.catalog.caveats import CAVEATS, codes_for
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import MEASURED_ACCURACY_COLUMNS

UNKNOWN = "?"
#: Tables longer than this are cut (machine formats never are).
TABLE_ROW_CAP = 50

_ACCURACY_HINTS = ("val", "test", "accuracy")
#: The column that names the row: shown first, never dropped, shortened in the middle if it must be.
NAME_COLUMN = "checkpoint"
#: Without --wide, columns are dropped in this order until the table fits the terminal (columns not
#: listed go first). The checkpoint name spells out the grid axes, so those go before any result.
DROP_ORDER = (
    "sd", "do", "wd", "epochs", "lr", "adapt_steps", "adapt_lr", "aug", "ds", "adapt_resolution",
    "adapt_ds", "name", "collection", "basis", "finetunes", "infer_samples_per_sec", "final_val",
    "available", "adapt_final_test", "adapt_final_val",
)
#: The name keeps at least this many characters (its start and end) before results are dropped.
NAME_MIN_WIDTH = 44
_GAP = 2  # characters between two columns
ELLIPSIS = "\u2026"
#: The column tables turn into footnote marks instead of showing it.
CAVEATS_COLUMN = "caveats"
#: One footnote mark per caveat code that qualifies a column (vitzoo.catalog.caveats.QUALIFIES),
#: the same in every table; the legend under a table names the codes whose marks it shows.
CAVEAT_MARKS = {
    "per_arch_throughput": "*", "unconfirmed_name": "\u2020", "b8_candidate": "\u2021",
    "possibly_missing": "\u00a7", "expected_value": "\u00b6",
}


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
        if (any(h in column for h in _ACCURACY_HINTS) or column.endswith("_val")
                or column in MEASURED_ACCURACY_COLUMNS):
            return text.percent(value, digits=2)  # stored as a fraction, read as a percentage
        if column == "infer_samples_per_sec":
            return f"{value:,.1f}"
        return f"{value:g}"
    if isinstance(value, int) and column.endswith(("bytes", "steps", "params")):
        return f"{value:,}"
    return str(value)


def percent(fraction: float) -> str:
    """``0.8396`` -> ``83.96%``: the stored fraction's own digits (:func:`vitzoo.text.percent`)."""
    return text.percent(fraction, digits=None)


def write_machine(table: Frame, fmt: str, out=None) -> None:
    """csv / json / jsonl to stdout."""
    out = out or sys.stdout
    if fmt != "csv":
        write_rows(records(table), fmt, out=out)
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    columns = [table.column(name) for name in table.column_names]
    for row in zip(*columns, strict=True):
        writer.writerow("" if _clean(v) is None else v for v in row)


def write_rows(rows: Sequence[dict], fmt: str, *, out=None) -> None:
    """Records in a machine format: json one array, jsonl one object a line, csv one line a
    record (the columns are the keys in first-seen order; nested values belong in json)."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump(list(rows), out, indent=1, default=str)
        out.write("\n")
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
    elif fmt == "csv":
        names = list(dict.fromkeys(k for row in rows for k in row))
        write_machine(Frame.from_rows(list(rows), names), "csv", out=out)


def plural(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,234 rows``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def elide_middle(text: str, width: int) -> str:
    """Keep the start and the end (both carry meaning in checkpoint names), drop the middle."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def header_lines(name: str, value_width: int) -> str:
    """The column's real name; split once at an underscore when the values are much narrower."""
    if len(name) <= max(value_width, 6) or "_" not in name:
        return name
    cuts = [i + 1 for i, ch in enumerate(name) if ch == "_"]
    best = min(cuts, key=lambda i: max(i, len(name) - i))
    return f"{name[:best]}\n{name[best:]}"


def caveat_marks(caveats: str | None, column: str, *, file_column: bool = False) -> str:
    """The marks ``column``'s value gets from its row's caveat codes; the ``file_column`` (the
    checkpoint name) also takes the codes about the file itself."""
    codes = codes_for(caveats, column)
    if file_column:
        codes += [c for c in codes_for(caveats, NAME_COLUMN) if c not in codes]
    return "".join(CAVEAT_MARKS[c] for c in codes if c in CAVEAT_MARKS)


def caveat_legend(marks_shown: str) -> list[str]:
    """``* per_arch_throughput: ...`` for each mark that appears, in the marks' fixed order."""
    return [f"{mark} {code}: {CAVEATS[code]}" for code, mark in CAVEAT_MARKS.items()
            if mark in marks_shown]


def _marked_rows(table: Frame, names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(cells, marks) per row; the file's own codes go on the checkpoint name, or on the first
    column when the name is not shown. Marks of a numeric column are padded to one width so
    its numbers stay aligned."""
    rows = table.to_pylist()
    cells = [[cell(n, row[n]) for n in names] for row in rows]
    if CAVEATS_COLUMN not in table.column_names or not names:
        return cells, [["" for _ in names] for _ in rows]
    file_column = NAME_COLUMN if NAME_COLUMN in names else names[0]
    marks = [[caveat_marks(row[CAVEATS_COLUMN], n, file_column=n == file_column) for n in names]
             for row in rows]
    for i, name in enumerate(names):
        width = max([0, *(len(m[i]) for m in marks)])
        if width and table.type_of(name) in ("int", "float"):
            for m in marks:
                m[i] = m[i].ljust(width)
    return cells, marks


@dataclass
class ColumnFit:
    """Which columns a table shows, and how wide its name column is (None: natural width)."""

    columns: list[str]
    headers: list[str]
    name_width: int | None
    hidden: list[str]


def fit_columns(names: Sequence[str], rows: Sequence[Sequence[str]], width: int, *,
                wide: bool = False, asked: Sequence[str] = ()) -> ColumnFit:
    """Choose columns so every row is one line of at most ``width`` characters.

    Order: the name column first; headers may take two lines; then the least useful
    columns (:data:`DROP_ORDER`) are dropped; last, the name is shortened in the middle.
    Numbers are never cut. ``wide`` keeps everything at natural width. Columns the user
    ``asked`` for (``--columns``) count as results: kept even when unknown in every row, and
    dropped last, only if a name of :data:`NAME_MIN_WIDTH` would not fit otherwise.
    """
    names = list(names)
    value_widths = {n: max([0, *(len(r[i]) for r in rows)]) for i, n in enumerate(names)}
    if wide:
        return ColumnFit(names, names, None, [])

    def cost(columns: list[str], split: bool) -> int:
        total = 0
        for n in columns:
            header = header_lines(n, value_widths[n]) if split else n
            total += max(value_widths[n], *(len(line) for line in header.split("\n")))
        return total + _GAP * (len(columns) - 1)

    def rest(columns: list[str]) -> int:
        others = [c for c in columns if c != NAME_COLUMN]
        return cost(others, True) + (_GAP * (NAME_COLUMN in columns) if others else 0)

    if cost(names, False) <= width:
        return ColumnFit(names, names, None, [])
    has_name = NAME_COLUMN in names
    natural_name = max(value_widths.get(NAME_COLUMN, 0), len(NAME_COLUMN)) if has_name else 0
    rank = {n: i for i, n in enumerate(DROP_ORDER)}
    rank.update({n: len(DROP_ORDER) for n in asked if n not in rank})
    empty = {n for i, n in enumerate(names) if rows and all(r[i] == UNKNOWN for r in rows)
             and n not in asked}
    droppable = sorted((n for n in names if n != NAME_COLUMN),
                       key=lambda n: (n not in empty, n in rank, rank.get(n, 0), -names.index(n)))
    cheap = [n for n in droppable if n in empty or (
        n not in asked and rank.get(n, -1) < rank["infer_samples_per_sec"])]

    def drop_until_fits(start: list[str], need: int, candidates: list[str]) -> list[str]:
        columns = list(start)
        for victim in candidates:
            if rest(columns) + need <= width or len(columns) <= 1:
                break
            columns.remove(victim)
        return columns

    # First try to show the whole name by dropping what it spells out anyway and columns with
    # nothing known. If the name must be shortened, all of those go (its middle is lost), then
    # more in DROP_ORDER until a name of NAME_MIN_WIDTH fits.
    kept = drop_until_fits(names, natural_name, cheap)
    if rest(kept) + natural_name > width:
        kept = drop_until_fits([n for n in names if n not in cheap],
                               min(natural_name, max(NAME_MIN_WIDTH, len(NAME_COLUMN))),
                               [n for n in droppable if n not in cheap])
    hidden = [n for n in names if n not in kept]
    headers = [header_lines(n, value_widths[n]) for n in kept]
    name_width = None
    if has_name:
        room = max(width - rest(kept), len(NAME_COLUMN))
        if room < value_widths[NAME_COLUMN]:
            name_width = room
    return ColumnFit(kept, headers, name_width, hidden)


def print_table(table: Frame, *, title: str | None = None, total: int | None = None,
                notes: Sequence[str] = (), wide: bool = False, asked: Sequence[str] = (),
                legend: bool = True) -> str:
    """A rich table with one line per row that fits the terminal; long tables are cut with a hint.
    Returns the caveat marks it showed (``legend=False``: the caller prints one legend for
    several tables, :func:`print_legend`)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    shown = table.slice(0, TABLE_ROW_CAP)
    names = [n for n in shown.column_names if n != CAVEATS_COLUMN]  # shown as marks instead
    if NAME_COLUMN in names:  # the name first, whatever order the columns came in
        names = [NAME_COLUMN, *(n for n in names if n != NAME_COLUMN)]
    cells, marks = _marked_rows(shown, names)
    rows = [[c + m for c, m in zip(cr, mr, strict=True)] for cr, mr in zip(cells, marks, strict=True)]
    layout = fit_columns(names, rows, console.width, wide=wide, asked=asked)
    if wide:
        natural = sum(max(len(n), *(len(r[i]) for r in rows), 0) for i, n in enumerate(names))
        console = Console(soft_wrap=False, width=max(console.width, natural + _GAP * len(names)))
    view = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                 pad_edge=False, padding=(0, 1, 0, 0))
    index = {n: i for i, n in enumerate(names)}
    for name, header in zip(layout.columns, layout.headers, strict=True):
        numeric = shown.type_of(name) in ("int", "float")
        view.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    shortened, marks_shown = False, ""
    for row, row_marks in zip(cells, marks, strict=True):
        values = [row[index[n]] for n in layout.columns]
        if layout.name_width is not None:  # shorten the name, keep its marks
            position = layout.columns.index(NAME_COLUMN)
            mark = row_marks[index[NAME_COLUMN]]
            short = elide_middle(values[position], layout.name_width - len(mark))
            shortened |= short != values[position]
            values[position] = short
        values = [v + row_marks[index[n]] for v, n in zip(values, layout.columns, strict=True)]
        marks_shown += "".join(row_marks[index[n]] for n in layout.columns)
        view.add_row(*values)
    console.print(view)
    count = total if total is not None else table.num_rows
    if count > shown.num_rows:
        console.print(f"[dim]{count:,} rows; showing {shown.num_rows}. "
                      "Use --limit, --format csv or more filters.[/dim]")
    else:
        console.print(f"[dim]{plural(count, 'row')}[/dim]")
    if (layout.hidden or shortened) and rows:  # an empty table hides no values
        what = []
        if shortened:
            what.append(f"names shortened in the middle ({ELLIPSIS})")
        blank = [n for n in layout.hidden if all(r[index[n]] == UNKNOWN for r in rows)]
        if blank:
            what.append(f"not shown, unknown in every row: {', '.join(blank)}")
        if len(blank) < len(layout.hidden):
            what.append(f"not shown: {', '.join(n for n in layout.hidden if n not in blank)}")
        console.print(f"[dim]{'; '.join(what)}; --wide or --format csv shows everything[/dim]",
                      highlight=False)
    if legend:
        print_legend(marks_shown, console)
    print_table_notes(notes, console)
    return marks_shown


def print_legend(marks_shown: str, console=None) -> None:
    """The legend of the caveat marks that were shown."""
    if console is None:
        from rich.console import Console

        console = Console(soft_wrap=False)
    for line in caveat_legend(marks_shown):
        console.print(line, style="dim", highlight=False, markup=False)


def print_table_notes(notes: Sequence[str], console=None) -> None:
    """``note: ...`` lines under a table."""
    if console is None:
        from rich.console import Console

        console = Console(soft_wrap=False)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def emit(table: Frame, fmt: str, *, title: str | None = None,
         notes: Sequence[str] = (), wide: bool = False, asked: Sequence[str] = ()) -> None:
    """Print in the chosen format; notes go below a table, or to stderr for machine formats."""
    if fmt == "table":
        print_table(table, title=title, notes=notes, wide=wide, asked=asked)
        return
    write_machine(table, fmt)
    for note in notes:
        sys.stderr.write(f"note: {note}\n")


def emit_document(document: dict, fmt: str, *, rows: Sequence[dict]) -> None:
    """A nested result in a machine format: json/jsonl the whole of it, csv its main ``rows``."""
    if fmt == "json":
        json.dump(document, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    elif fmt == "jsonl":
        sys.stdout.write(json.dumps(document, default=str) + "\n")
    elif fmt == "csv":
        write_rows(rows, "csv")
