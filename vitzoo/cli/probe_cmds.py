"""``vitzoo probe`` and the probe behind ``recommend --dataset``: thin wrappers over :mod:`vitzoo.probe`.

jax and TensorFlow are imported inside the commands only.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from typing import Any, Literal

import typer

from vitzoo.accelerators import stop_early_if_unreachable
from vitzoo.cli import filter_options as opt
from vitzoo.cli.accelerator_option import ALLOW_CPU
from vitzoo.cli.cluster_options import COORDINATOR, NUM_PROCESSES, PROCESS_ID
from vitzoo.cli.data_options import data_options, runtime_options
from vitzoo.data.options import DataOptions, forced_carve
from vitzoo.errors import VitzooError
from vitzoo.text import percent

CANDIDATES = typer.Option(None, "--candidates", help=(
    "recommended (default), downloadable, or checkpoint names/paths/local runs; repeatable or "
    "comma-separated (paths: a .npz or a timm folder). Without it, --ds/--collection/--name/--where "
    "select every matching pre-trained checkpoint, of any family."))
SHOTS = typer.Option("1,5,10,25", "--shots", help="k for the k-shot linear probes, comma-separated.")
SORT = typer.Option("linear_accuracy", "--sort", help=(
    "Rank by this score on the validation split (the dataset's own, else a part held out of "
    "the training split; never the evaluation split): linear_accuracy (linear), knn_accuracy "
    "(knn), fewshot_K_mean (Kshot, K in --shots) or img_per_sec (speed); on a multi-label "
    "dataset linear_map (linear) or knn_map (knn). Default: the full-train linear probe, the "
    "head `finetune --head-only` trains, using every training image."))


def parse_shots(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VitzooError(f"--shots expects comma-separated integers, got {text!r}",
                          "e.g. --shots 1,5,10,25") from None
    if not values or min(values) < 1:
        raise VitzooError(f"--shots values must be at least 1, got {text!r}", "e.g. --shots 1,5,10,25")
    return tuple(sorted(set(values)))


def run_probe(dataset: DataOptions, *, candidates: list[str] | None, arch: list[str] | None,
              ds: list[str] | None, where: str | None, limit: int | None, index: str | None,
              settings: Any, quiet: bool = False, cluster: Any = None,
              collection: list[str] | None = None, name: list[str] | None = None) -> Any:
    """Select candidates, probe them; progress and skips go to stderr.

    The options were checked by the caller (:func:`checked`) before this reads anything.
    ``cluster``: the ``jax.distributed`` processes this one belongs to (None: alone).
    """
    from vitzoo.probe.candidates import select
    from vitzoo.probe.run import probe

    chosen, notes = select(candidates, arch=opt.split_values(arch), ds=opt.split_values(ds),
                           where=where, limit=limit, index=index,
                           collection=opt.split_values(collection), name=opt.split_values(name))

    def say(message: str) -> None:
        if not quiet:
            sys.stderr.write(message + "\n")

    for note in notes:
        say(note)
    return probe(dataset, chosen, settings, say=say, cluster=cluster)


def checked(sort: str, option: str = "--sort", task: str = "multiclass",
            **settings: Any) -> tuple[Any, str]:
    """(ProbeSettings, the ranking score's column name on a ``task`` dataset), refusing bad
    options before any work."""
    from vitzoo.probe import report
    from vitzoo.probe.run import ProbeSettings

    probe_settings = ProbeSettings(**settings)
    probe_settings.check()
    return probe_settings, report.check_sort(sort, probe_settings.shots, option, task)


def exit_if_nothing_measured(result: Any) -> None:
    """Exit 1 (after the output, which shows why) when every candidate was skipped."""
    if not result.measured:
        sys.stderr.write(f"error: none of the {len(result.results)} candidates could be "
                         "measured (see the skipped reasons)\n")
        raise typer.Exit(1)


@runtime_options(autotune=True)
@data_options()
def probe_command(
    data: DataOptions,
    candidates: list[str] = CANDIDATES,
    arch: list[str] = opt.ARCH,
    ds: list[str] = opt.DS,
    collection: list[str] = opt.COLLECTION,
    name: list[str] = opt.NAME,
    where: str = opt.WHERE,
    limit: int = typer.Option(None, "--limit", help="At most this many candidates."),
    shots: str = SHOTS,
    seeds: int = typer.Option(5, "--seeds", help="Seeded draws of the shots per k (mean ± std)."),
    knn_k: int = typer.Option(10, "--knn-k", help="Neighbours for the kNN accuracy."),
    res: int = typer.Option(None, "--res", help="Resolution; default each checkpoint's own."),
    batch: int = typer.Option(64, "--batch", help="Extraction batch size (split over local devices)."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32 or bfloat16."),
    sort: str = SORT,
    pareto: bool = typer.Option(False, "--pareto", help="Only the Pareto front of the score against measured img/s."),
    plot_out: str = typer.Option(None, "--plot", help="Also draw score vs img/s to OUT.png or OUT.svg."),
    fmt: Literal["table", "json", "csv"] = typer.Option("table", "--format", help="Output format."),
    wide: bool = opt.WIDE,
    index: str = opt.INDEX,
    coordinator: str = COORDINATOR,
    num_processes: int = NUM_PROCESSES,
    process_id: int = PROCESS_ID,
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Measure candidate checkpoints on your data: few-shot, linear and kNN probes, img/s.

    On a multi-label dataset (--task multilabel) the linear and kNN probes are scored by mAP
    and few-shot scores are not measured. Candidates are ranked on the dataset's own
    validation split when it has one that is not the evaluation split (TFDS validation, a folder's val/ beside test/), else on 20 % of each
    training class held out (--val-fraction F: always hold out F); the evaluation split is
    scored once per candidate and reported with 95 % intervals.
    Exits 1 when no candidate could be measured. With --coordinator, every process extracts
    its share of each batch and process 0 writes the output.
    """
    from vitzoo.backbone.distributed import resolve
    from vitzoo.probe import report

    stop_early_if_unreachable()
    cluster = resolve(coordinator, num_processes, process_id)
    if plot_out:
        report.plot_format(plot_out)
    settings, score = checked(sort, task=data.task, shots=parse_shots(shots), seeds=seeds,
                              knn_k=knn_k, res=res, batch=batch, dtype=dtype,
                              val_fraction=forced_carve(data))
    data.check()
    result = run_probe(data, candidates=candidates, arch=arch, ds=ds, where=where, limit=limit,
                       index=index, settings=settings, quiet=fmt != "table", cluster=cluster,
                       collection=collection, name=name)
    if not result.main_process:  # process 0 writes the output
        return
    ordered = report.sort_results(result.results, score)
    if pareto:
        ordered = report.pareto(ordered, score)
    if plot_out and result.measured:
        written = report.plot(result.results, score, plot_out,
                              title=f"{result.dataset}: {score} on the validation part")
        sys.stderr.write(f"wrote {written}\n")
    if fmt == "json":
        sys.stdout.write(json.dumps({**result.as_dict(), "sort": score,
                                     "candidates": [report.json_record(r) for r in ordered]},
                                    indent=1, default=str) + "\n")
    elif fmt == "csv":
        sys.stdout.write(report.to_csv(ordered))
    else:
        _print_table(result, ordered, score, wide=wide)
    exit_if_nothing_measured(result)


def _print_table(result: Any, ordered: list[Any], score: str, *, wide: bool = False) -> None:
    from vitzoo.cli import render
    from vitzoo.probe import report

    table, notes = report.table_frame(ordered, score)
    split = result.choosing_split or {}
    if split.get("source") == "dataset":
        chosen_on = (f" on the dataset's own {split.get('name')} split "
                     f"({split.get('examples', '?')} images)")
    else:
        chosen_on = (f" on the validation part ({split.get('examples', '?')} images held out of "
                     f"{result.train_split or 'train'})")
    title = (f"probe of {result.dataset}: ranked by {score}"
             + ("" if score == "img_per_sec" else chosen_on)
             + f"; reported on {result.eval_split} ({result.eval_examples} images, "
             f"{result.num_classes} classes)")
    for representation in dict.fromkeys(r.representation for r in ordered if r.representation):
        names = [report.short_name(r.checkpoint) for r in ordered
                 if r.representation == representation]
        notes.append(f"features of {', '.join(names)}: {representation}")
    notes.extend(_pixel_notes(ordered))
    render.print_table(table, title=title, notes=[*notes, *result.notes], wide=wide)


def _pixel_notes(ordered: list[Any]) -> list[str]:
    """How each candidate's pixels were made, grouped like the representation notes."""
    from vitzoo.probe import report

    _, rows = report.records(ordered)
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row["preprocessing"]:
            groups.setdefault(row["preprocessing"], []).append(report.short_name(row["checkpoint"]))
    return [f"pixels of {', '.join(names)}: {described}" for described, names in groups.items()]


def recommend_by_data(dataset: DataOptions, *, candidates: list[str] | None,
                      arch: list[str] | None, fmt: str, by: str = "linear_accuracy",
                      wide: bool = False, index: str | None = None, cluster: Any = None) -> None:
    """``vitzoo recommend --dataset DS``: probe the candidates and say which one to start from.

    Chosen on the validation part, reported on the evaluation split, with the margin over the
    runner-up and whether the two are distinguishable; exits 1 when nothing was measured.
    ``cluster``: as :func:`run_probe`; every process probes, process 0 alone writes.
    """
    from vitzoo.probe import report
    from vitzoo.probe.choice import explain

    stop_early_if_unreachable()
    if fmt not in ("table", "json"):
        raise VitzooError(f"--dataset supports --format table or json, got {fmt!r}",
                          "use --format json for scripts")
    settings, score = checked(by, option="--by", task=dataset.task,
                              val_fraction=forced_carve(dataset))
    result = run_probe(dataset, candidates=candidates, arch=arch, ds=None, where=None,
                       limit=None, index=index, settings=settings, quiet=fmt == "json",
                       cluster=cluster)
    if not result.main_process:  # process 0 writes the output (and the exit status says it)
        return
    if not result.measured:
        if fmt == "table":
            _print_table(result, result.results, score, wide=wide)
        sys.stderr.write("error: no candidate could be probed, so there is nothing to recommend. "
                         "See the skipped reasons; fetch a checkpoint or name local files with "
                         "--candidates.\n")
        raise typer.Exit(1)
    choice = report.recommendation(result.results, score, eval_split=result.eval_split)
    if fmt == "json":
        sys.stdout.write(json.dumps({**choice, "dataset": result.dataset,
                                     "choosing_split_info": result.choosing_split,
                                     "candidates": [report.json_record(r) for r in
                                                    report.sort_results(result.results, score)],
                                     "notes": result.notes}, indent=1, default=str) + "\n")
        return
    _print_table(result, report.sort_results(result.results, score), score, wide=wide)
    width = shutil.get_terminal_size().columns
    for line in explain(choice):  # sentences wrap to the terminal; the score rows stay whole
        wrapped = line if line.startswith("  ") else textwrap.fill(line, width,
                                                                   subsequent_indent="    ")
        sys.stdout.write(wrapped + "\n")
    published = choice["published_choice"]
    if published:
        measured = published["validation_score"]
        sys.stdout.write(f"published recommendation: {report.short_name(published['checkpoint'])} "
                         f"(best published ImageNet fine-tune; {score} on validation here: "
                         f"{percent(measured)})\n")


def head_only_command(options: Any, *, batch_given: bool, data: Any = None) -> None:
    """``finetune --head-only``: print where the run went and its evaluation scores.

    ``data``: the dataset already opened (:func:`vitzoo.probe.head.open_head_only_data`).
    """
    from vitzoo.probe.head import head_only_finetune

    result = head_only_finetune(options, batch_given=batch_given, data=data)
    for note in result.notes:
        sys.stderr.write(note + "\n")
    m = result.final_metrics
    scored = (f"eval mAP {percent(m['eval_map'], 2, 'n/a')}, F1 {percent(m['eval_f1'], 2)} "
              f"(macro {percent(m['eval_macro_f1'], 2, 'n/a')}) at threshold "
              f"{m['eval_threshold']:.2f}" if "eval_map" in m
              else f"eval accuracy {percent(m['eval_accuracy'], 2)}")
    sys.stderr.write(f"head-only fine-tune finished: {result.final_npz} ({scored} on "
                     f"{m['eval_examples']} images)\n")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
