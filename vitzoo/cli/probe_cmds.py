"""``vitzoo probe`` and the probe behind ``recommend --data``: thin wrappers over :mod:`vitzoo.probe`.

jax and TensorFlow are imported inside the commands only.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

import typer

from vitzoo.cli import filter_options as opt
from vitzoo.cli.accelerator_option import ALLOW_CPU
from vitzoo.errors import VitzooError

CANDIDATES = typer.Option(None, "--candidates", help=(
    "recommended (default), downloadable, or checkpoint names/paths/local runs; repeatable or "
    "comma-separated. Without it, --ds/--where select every matching pre-trained checkpoint."))
SHOTS = typer.Option("1,5,10,25", "--shots", help="k for the k-shot linear probes, comma-separated.")
SORT = typer.Option("linear", "--sort", help="Rank by: linear (full-train probe), knn, Nshot (e.g. 10shot) or speed.")


def parse_shots(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VitzooError(f"--shots expects comma-separated integers, got {text!r}",
                          "e.g. --shots 1,5,10,25") from None
    if not values or min(values) < 1:
        raise VitzooError(f"--shots values must be at least 1, got {text!r}", "e.g. --shots 1,5,10,25")
    return tuple(sorted(set(values)))


def run_probe(dataset: str, *, candidates: list[str] | None, arch: list[str] | None,
              ds: list[str] | None, where: str | None, limit: int | None, index: str | None,
              sort: str, settings: Any, quiet: bool = False) -> Any:
    """Select candidates, probe them; progress and skips go to stderr."""
    from vitzoo.probe import report
    from vitzoo.probe.candidates import select
    from vitzoo.probe.run import probe

    report.check_sort(sort)
    chosen, notes = select(candidates, arch=opt.split_values(arch), ds=opt.split_values(ds),
                           where=where, limit=limit, index=index)

    def say(message: str) -> None:
        if not quiet:
            sys.stderr.write(message + "\n")

    for note in notes:
        say(note)
    return probe(dataset, chosen, settings, say=say)


def _settings(**kwargs: Any) -> Any:
    from vitzoo.probe.run import ProbeSettings

    return ProbeSettings(**kwargs)


def probe_command(
    dataset: str = typer.Option(..., "--dataset", help="TFDS name[:version] or an image folder."),
    candidates: list[str] = CANDIDATES,
    arch: list[str] = opt.ARCH,
    ds: list[str] = opt.DS,
    where: str = opt.WHERE,
    limit: int = typer.Option(None, "--limit", help="At most this many candidates."),
    shots: str = SHOTS,
    seeds: int = typer.Option(5, "--seeds", help="Seeded draws of the shots per k (mean ± std)."),
    knn_k: int = typer.Option(10, "--knn-k", help="Neighbours for the kNN accuracy."),
    res: int = typer.Option(None, "--res", help="Resolution; default each checkpoint's own."),
    batch: int = typer.Option(64, "--batch", help="Extraction batch size (split over local devices)."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32 or bfloat16."),
    train_split: str = typer.Option(None, "--train-split", help="TFDS training split (slicing allowed)."),
    eval_split: str = typer.Option(None, "--eval-split", help="Evaluation split; default test/validation, else a carved one."),
    data_dir: str = typer.Option(None, "--data-dir", help="TFDS data directory."),
    manual_dir: str = typer.Option(None, "--manual-dir", help="TFDS manual download directory."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Validation fraction carved when there is no test split."),
    stream: bool = typer.Option(False, "--stream", help="Stream TFDS splits from their files."),
    sort: str = SORT,
    pareto: bool = typer.Option(False, "--pareto", help="Only the Pareto front of the score against measured img/s."),
    plot_out: str = typer.Option(None, "--plot", help="Also draw score vs img/s to OUT.png or OUT.svg."),
    fmt: Literal["table", "json", "csv"] = typer.Option("table", "--format", help="Output format."),
    index: str = opt.INDEX,
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Measure candidate checkpoints on your data: few-shot, linear and kNN probes, img/s."""
    from vitzoo.probe import report

    if plot_out:
        report.plot_format(plot_out)
    settings = _settings(shots=parse_shots(shots), seeds=seeds, knn_k=knn_k, res=res,
                         batch=batch, dtype=dtype, train_split=train_split,
                         eval_split=eval_split, data_dir=data_dir, manual_dir=manual_dir,
                         val_fraction=val_fraction, stream=stream)
    result = run_probe(dataset, candidates=candidates, arch=arch, ds=ds, where=where, limit=limit,
                       index=index, sort=sort, settings=settings, quiet=fmt != "table")
    ordered = report.sort_results(result.results, sort)
    if pareto:
        ordered = report.pareto(ordered, sort)
    if plot_out:
        written = report.plot(result.results, sort, plot_out,
                              title=f"{result.dataset}: {sort} accuracy on {result.eval_split}")
        sys.stderr.write(f"wrote {written}\n")
    if fmt == "json":
        sys.stdout.write(json.dumps({**result.as_dict(),
                                     "candidates": [report.json_record(r) for r in ordered]},
                                    indent=1, default=str) + "\n")
        return
    if fmt == "csv":
        sys.stdout.write(report.to_csv(ordered))
        return
    _print_table(result, ordered, sort)


def _print_table(result: Any, ordered: list[Any], sort: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from vitzoo.probe import report

    console = Console()
    header, rows = report.table_rows(ordered)
    table = Table(title=(f"probe of {result.dataset}: accuracy on {result.eval_split} "
                         f"({result.eval_examples} images, {result.num_classes} classes), "
                         f"sorted by {sort}"), title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    speeds = {json.dumps({k: v for k, v in (r.throughput or {}).items() if k != "img_per_sec"})
              for r in ordered if r.throughput}
    for representation in dict.fromkeys(r.representation for r in ordered if r.representation):
        names = [report.short_name(r.checkpoint) for r in ordered
                 if r.representation == representation]
        console.print(f"features of {', '.join(names)}: {representation}", style="dim",
                      markup=False)
    for speed in speeds:
        console.print(f"img/s measured here: {speed}", style="dim", markup=False)
    console.print("published columns come from the catalog (other data and hardware), not from "
                  "this run", style="dim")
    for note in result.notes:
        console.print(note, style="dim", markup=False)


def recommend_by_data(dataset: str, *, candidates: list[str] | None, arch: list[str] | None,
                      fmt: str, sort: str = "linear", index: str | None = None) -> None:
    """``vitzoo recommend --data DS``: probe the candidates and say which one to start from."""
    from vitzoo.probe import report

    if fmt not in ("table", "json"):
        raise VitzooError(f"--data supports --format table or json, got {fmt!r}",
                          "use --format json for scripts")
    result = run_probe(dataset, candidates=candidates, arch=arch, ds=None, where=None,
                       limit=None, index=index, sort=sort, settings=_settings(),
                       quiet=fmt == "json")
    choice = report.recommendation(result.results, sort)
    if fmt == "json":
        sys.stdout.write(json.dumps({**choice, "dataset": result.dataset,
                                     "notes": result.notes}, indent=1, default=str) + "\n")
        return
    _print_table(result, report.sort_results(result.results, sort), sort)
    sys.stdout.write(f"recommended for {result.dataset}: {choice['checkpoint']} "
                     f"({choice['architecture']}), {choice['why']}\n")
    published = choice["published_choice"]
    if published:
        sys.stdout.write(f"published recommendation: {published['checkpoint']} "
                         f"(best published ImageNet fine-tune; {sort} here: "
                         f"{report.pct(published['measured_score'])})\n")



def head_only_command(options: Any) -> None:
    """``finetune --head-only``: print where the run went and its evaluation accuracy."""
    from vitzoo.probe.head import head_only_finetune

    result = head_only_finetune(options)
    for note in result.notes:
        sys.stderr.write(note + "\n")
    m = result.final_metrics
    sys.stderr.write(f"head-only fine-tune finished: {result.final_npz} (eval accuracy "
                     f"{m['eval_accuracy']:.2%} on {m['eval_examples']} images)\n")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
