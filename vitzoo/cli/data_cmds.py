"""``vitzoo data check DATASET``: a dataset's classes, counts, unreadable files and leaks.

The dataset options are every command's (:mod:`vitzoo.cli.data_options`), so a check reads
the splits a fine-tune would read; the work is
:func:`vitzoo.data.check.check_dataset`. Exit status 1 when the check finds what would
hurt a fine-tune (unreadable files, images duplicated across splits), 0 otherwise, 2 for
a bad DATASET or option. jax and flax are never imported; TensorFlow only for TFDS.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

import typer

from vitzoo.cli.data_options import data_options
from vitzoo.data.options import DataOptions
from vitzoo.text import percent

ROWS = 50  # rows per table; --format json has them all

data_app = typer.Typer(help="Check a dataset before fine-tuning on it.", no_args_is_help=True,
                       rich_markup_mode=None)


@data_app.command("check")
@data_options(exclude=("stream", "task", "labels"), argument=True)  # single-label layouts
def check_command(
    data: DataOptions,
    min_images: int = typer.Option(None, "--min-images", help="List the classes with fewer images than this in a split (default 10)."),
    fmt: Literal["table", "json"] = typer.Option("table", "--format", help="table or json (fractions, every file and duplicate)."),
) -> None:
    """Classes and counts per split, unreadable files, exact duplicates (within and across splits), image sizes, imbalance. Exit 1 on unreadable files or duplicates across splits."""
    from vitzoo.data.check import MIN_IMAGES, check_dataset  # here: vitzoo.data imports numpy

    report = check_dataset(data.dataset, train_split=data.train_split,
                           eval_split=data.eval_split, data_dir=data.data_dir,
                           manual_dir=data.manual_dir, val_fraction=data.val_fraction,
                           gcs_auth=data.gcs_auth,
                           min_images=MIN_IMAGES if min_images is None else min_images)
    if fmt == "json":
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        print_report(report)
    if report.problems:
        raise typer.Exit(1)


def _table(console: Any, title: str, columns: list[tuple[str, str]]) -> Any:
    """A table whose rows never wrap; its title is a line of its own (never wrapped to the table)."""
    from rich.table import Table

    console.print(title, overflow="ellipsis", no_wrap=True, style="bold")
    table = Table()
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    return table


def _where(image: dict[str, Any], width: int) -> str:
    """``train/cat/x.jpg`` (the split is in the path) or ``val (carved 10%): cat/x.jpg``."""
    from vitzoo.cli.render import elide_middle

    name = image["file"]
    return elide_middle(name if name.startswith(image["split"]) else f"{image['split']}: {name}",
                        width)


def _size(sizes: dict[str, dict[str, int]] | None, stat: str) -> str:
    return "?" if sizes is None else f"{sizes['width'][stat]}x{sizes['height'][stat]}"


def print_report(report: Any) -> None:
    """The report for a person: one table per topic, one line per row, then the verdict."""
    from rich.console import Console

    console = Console(highlight=False)
    document = report.as_dict()
    splits = document["splits"]
    table = _table(console, f"{report.dataset}: {len(report.class_names)} classes ({report.kind})",
                   [("split", "left"), ("images", "right"), ("unreadable", "right"),
                    ("dup groups", "right"), ("min wxh", "right"), ("median", "right"),
                    ("max", "right")])
    for s in splits:
        table.add_row(s["split"], f"{s['images']:,}", str(s["unreadable"]),
                      str(s["duplicate_groups_within"]),
                      *(_size(s["sizes"], stat) for stat in ("min", "median", "max")))
    console.print(table)
    _print_classes(console, report, splits)
    half = max(24, console.width // 2 - 4)
    _print_files(console, "unreadable file(s), left out of training",
                 [(_where(i, half), f"{i['problem']}: {i['detail']}" if i["detail"] else i["problem"])
                  for i in document["unreadable"]], ("file", "problem"))
    _print_duplicates(console, "across splits (evaluation sees training images)",
                      document["duplicates"]["across_splits"], half)
    _print_duplicates(console, "within a split", document["duplicates"]["within_splits"], half)
    for s in splits:
        imbalance = s["imbalance"]
        ratio = imbalance["max_over_min"]
        small = imbalance["below_min_images"]
        line = (f"{s['split']}: largest/smallest class {imbalance['largest']}/{imbalance['smallest']}"
                f" = {'inf' if ratio is None else f'{ratio:.1f}x'}")
        if small:
            line += f"; {len(small)} with fewer than {report.min_images} images"
        console.print(line)
    if report.ignored:
        console.print(f"{len(report.ignored)} file(s) of other types, ignored by a fine-tune: "
                      f"{report.ignored[0]}{' ...' if len(report.ignored) > 1 else ''}")
    for note in report.notes:
        console.print(note, style="dim")
    console.print("duplicates: same SHA-256 of the encoded bytes (resized or re-encoded copies "
                  "differ)", style="dim")
    if report.problems:
        console.print(f"problems: {'; '.join(report.problems)}", style="bold red")
    else:
        console.print("no problem found that would hurt a fine-tune")


def _print_classes(console: Any, report: Any, splits: list[dict[str, Any]]) -> None:
    columns = [("class", "left")] + [(s["split"], "right") for s in splits] + [("share", "right")]
    rows = list(range(len(report.class_names)))
    title = f"images per class (share: of {splits[0]['split']})"
    if len(rows) > ROWS:  # the smallest classes of the first split are the interesting ones
        first = splits[0]["classes"]
        rows = sorted(rows, key=lambda c: first[c]["images"])[:ROWS]
        title = f"the {ROWS} smallest of {len(report.class_names)} classes (all: --format json)"
    table = _table(console, title, columns)
    for c in rows:
        share = splits[0]["classes"][c]["fraction"]
        table.add_row(report.class_names[c], *(f"{s['classes'][c]['images']:,}" for s in splits),
                      percent(share))
    console.print(table)


def _print_files(console: Any, title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> None:
    if not rows:
        return
    table = _table(console, f"{len(rows)} {title}", [(c, "left") for c in columns])
    for row in rows[:ROWS]:
        table.add_row(*row)
    console.print(table)
    if len(rows) > ROWS:
        console.print(f"... {len(rows) - ROWS} more (--format json lists them all)", style="dim")


def _print_duplicates(console: Any, title: str, groups: list[dict[str, Any]], width: int) -> None:
    rows = [(_where(g["images"][0], width), ", ".join(_where(i, width) for i in g["images"][1:]))
            for g in groups]
    _print_files(console, f"duplicate group(s) {title}", rows, ("image", "same bytes as"))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
