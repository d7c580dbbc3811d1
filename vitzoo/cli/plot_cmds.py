"""``vitzoo plot`` (accuracy vs throughput of catalog rows) and ``vitzoo plot-run WORKDIR``.

matplotlib is imported by :mod:`vitzoo.plot`'s drawing functions only, so
registering these commands costs the other commands nothing. The image path goes
to stdout (for scripts), what was drawn and what was left out to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vitzoo.cli import filter_options as opt

DEFAULT_ADAPT_DS = "imagenet2012"
DEFAULT_RES = 384


def _notes(notes: list[str]) -> None:
    for note in notes:
        sys.stderr.write(f"note: {note}\n")


def _or_default(values: list[str], default: str) -> list[str]:
    """``--adapt-ds``/``--res``: the default when not given, nothing for ``any``."""
    if not values:
        return [] if default == "any" else [default]
    return [] if [v.lower() for v in values] == ["any"] else values


def plot_command(
    x: str = typer.Option("infer_samples_per_sec", "--x", help="Column for the (log) x-axis; higher is taken as better for the Pareto front."),
    y: str = typer.Option(None, "--y", help="Column for the y-axis, e.g. adapt_final_val (validation, to choose) or adapt_final_test (to describe); default: the accuracy column known for the most matching rows (said on stderr)."),
    arch: list[str] = opt.ARCH,
    ds: list[str] = opt.DS,
    aug: list[str] = opt.AUG,
    wd: list[str] = opt.WD,
    do: list[str] = opt.DO,
    sd: list[str] = opt.SD,
    adapt_ds: list[str] = typer.Option(None, "--adapt-ds", help=f"Fine-tuning dataset (default {DEFAULT_ADAPT_DS}, with --local any; 'any' for all)."),
    res: list[str] = typer.Option(None, "--res", help=f"Fine-tuning resolution (default {DEFAULT_RES}, with --local any; 'any' for all)."),
    adapt_lr: list[str] = opt.ADAPT_LR,
    steps: list[str] = opt.STEPS,
    collection: list[str] = opt.COLLECTION,
    local: bool = opt.LOCAL,
    where: str = typer.Option(None, "--where", help='Expression over any column, e.g. \'adapt_steps == 20000\'.'),
    out: Path = typer.Option(Path("zoo.png"), "--out", help="Image to write: .png or .svg."),
    size: str = typer.Option("1000x700", "--size", help="Image size in pixels, WIDTHxHEIGHT."),
    title: str = typer.Option(None, "--title", help="Plot title (default: the two columns)."),
    index: str = opt.INDEX,
) -> None:
    """Scatter of two columns over the rows `vitzoo list` would show, Pareto front highlighted.

    With --local: your registered runs, accuracy against the images/s each run measured
    (train_img_per_sec, from its run.json).

    Points are coloured and labelled by architecture; the x-axis is logarithmic.
    Rows with an unknown value are left out and counted on stderr.
    """
    from vitzoo.catalog import api, store
    from vitzoo.plot import parse_size, save_scatter, scatter_data, value_provenance

    pixels = parse_size(size)
    # The defaults pick one comparable slice of the published zoo; your runs are all shown.
    default_ds, default_res = ("any", "any") if local else (DEFAULT_ADAPT_DS, str(DEFAULT_RES))
    filters = opt.build_filters(
        arch=arch, ds=ds, aug=aug, wd=wd, do=do, sd=sd,
        adapt_ds=_or_default(opt.split_values(adapt_ds), default_ds),
        res=_or_default(opt.split_values(res), default_res), adapt_lr=adapt_lr,
        steps=steps, collection=collection, where=where)
    location = store.locate(index)
    data = scatter_data(api.load_table(index), x=x, y=y, filters=filters, local_only=local)
    scope = ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in
                      (("adapt_ds", filters.adapt_ds), ("res", filters.res)) if v)
    footnote = f"catalog: {location.path} ({location.origin})" + (f"; {scope}" if scope else "")
    path = save_scatter(data, out, size=pixels, title=title, footnote=footnote)
    notes = list(data.notes)
    for column in (data.y, data.x):
        sources = value_provenance(data.points, column)
        notes.append(f"{column} from " + "; ".join(f"{n:,} x {s}" for s, n in sources.most_common()))
    _notes(notes)
    typer.echo(str(path))


def plot_run_command(
    workdir: Path = typer.Argument(..., help="The --workdir of a `vitzoo finetune` run (holds metrics.jsonl)."),
    out: Path = typer.Option(None, "--out", help="Image to write: .png or .svg (default WORKDIR/curves.png)."),
    size: str = typer.Option("1500x450", "--size", help="Image size in pixels, WIDTHxHEIGHT."),
    title: str = typer.Option(None, "--title", help="Plot title (default: the workdir)."),
) -> None:
    """Loss, accuracy and learning-rate curves of a fine-tuning run, from its metrics.jsonl."""
    from vitzoo.plot import parse_size, read_run, save_run

    pixels = parse_size(size)
    curves = read_run(workdir)
    path = save_run(curves, out or Path(workdir) / "curves.png", size=pixels, title=title)
    _notes(curves.notes)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("plot")(plot_command)
    app.command("plot-run")(plot_run_command)
