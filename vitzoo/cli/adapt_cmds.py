"""``vitzoo finetune`` and ``vitzoo evaluate``: thin wrappers over :mod:`vitzoo.adapt`.

Every ``finetune`` default is read from :class:`~vitzoo.adapt.options.FinetuneOptions`
(one place). jax, flax and TensorFlow are imported inside the commands only.
"""

from __future__ import annotations

import json
import sys

import typer

from vitzoo.adapt.options import FinetuneOptions
from vitzoo.cli.accelerator_option import ALLOW_CPU
from vitzoo.cli.filter_options import OutputFormat

D = FinetuneOptions  # class attributes are the dataclass defaults


def finetune_command(
    model: str = typer.Argument(..., metavar="CHECKPOINT", help="Architecture (B/16), catalog name, local run name, or path/URL to .npz."),
    dataset: str = typer.Option(..., "--dataset", help="TFDS name[:version], or an image folder (local path, gs:// or s3:// URL)."),
    workdir: str = typer.Option(D.workdir, "--workdir", help="Run folder; default vitzoo-runs/<model>--<dataset>. Rerun to resume."),
    steps: int = typer.Option(D.steps, "--steps", help="Training steps."),
    warmup: int = typer.Option(D.warmup, "--warmup", help="Linear warmup steps."),
    lr: float = typer.Option(D.lr, "--lr", help="Peak learning rate (SGD, momentum 0.9)."),
    batch: int = typer.Option(D.batch, "--batch", help="Global batch size."),
    accum: str = typer.Option(D.accum, "--accum", help="Gradient accumulation steps, or 'auto' to fit device memory."),
    res: int = typer.Option(D.res, "--res", help="Fine-tuning resolution."),
    train_split: str = typer.Option(D.train_split, "--train-split", help="TFDS training split (slicing allowed, e.g. train[:90%])."),
    eval_split: str = typer.Option(D.eval_split, "--eval-split", help="Evaluation split; default test/validation, else a carved one."),
    eval_every: int = typer.Option(D.eval_every, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    checkpoint_every: int = typer.Option(D.checkpoint_every, "--checkpoint-every", help="Checkpoint every N steps (0: only at the end)."),
    log_every: int = typer.Option(D.log_every, "--log-every", help="Write metrics every N steps."),
    seed: int = typer.Option(D.seed, "--seed", help="Seed of data order, augmentation and dropout."),
    dtype: str = typer.Option(D.dtype, "--dtype", help="Compute dtype: float32 or bfloat16."),
    label_smoothing: float = typer.Option(D.label_smoothing, "--label-smoothing", help="Label smoothing."),
    data_dir: str = typer.Option(D.data_dir, "--data-dir", help="TFDS data directory."),
    manual_dir: str = typer.Option(D.manual_dir, "--manual-dir", help="TFDS manual download directory."),
    val_fraction: float = typer.Option(D.val_fraction, "--val-fraction", help="Validation fraction carved when there is no test split."),
    coordinator: str = typer.Option(D.coordinator, "--coordinator", help="Multi-host: coordinator host:port."),
    num_processes: int = typer.Option(D.num_processes, "--num-processes", help="Multi-host: number of processes."),
    process_id: int = typer.Option(D.process_id, "--process-id", help="Multi-host: this process's index."),
    name: str = typer.Option(D.name, "--name", help="Name of the run in the local catalog (default: the workdir's name)."),
    stream: bool = typer.Option(D.stream, "--stream", help="Stream TFDS splits from their files instead of reading them into memory (automatic when they exceed the memory budget)."),
    progress: bool = typer.Option(D.progress, "--progress/--no-progress", help="Show the progress bar."),
    register_run: bool = typer.Option(D.register, "--register/--no-register", help="Add the finished run to the local catalog."),
    gcs_auth: bool = typer.Option(D.gcs_auth, "--gcs-auth", help="Read a gs:// or s3:// --dataset with your own credentials instead of anonymously."),
    head_only: bool = typer.Option(False, "--head-only", help="Train only a new head (linear probe) on frozen, cached pre-logit features."),
    compile_cache: bool = typer.Option(True, "--compile-cache/--no-compile-cache", help="Reuse compiled programs from VITZOO_HOME/compile-cache (env VITZOO_COMPILE_CACHE=0 turns it off)."),
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Fine-tune a zoo checkpoint on a TFDS dataset or an image folder (paper defaults)."""
    from vitzoo.runtime import set_compile_cache_choice

    set_compile_cache_choice(compile_cache)
    from vitzoo.adapt.runner import run

    options = FinetuneOptions(
        model=model, dataset=dataset, workdir=workdir, steps=steps, warmup=warmup, lr=lr,
        batch=batch, accum=accum, res=res, train_split=train_split, eval_split=eval_split,
        eval_every=eval_every, checkpoint_every=checkpoint_every, log_every=log_every, seed=seed,
        dtype=dtype, label_smoothing=label_smoothing, data_dir=data_dir, manual_dir=manual_dir,
        val_fraction=val_fraction, coordinator=coordinator, num_processes=num_processes,
        process_id=process_id, name=name, stream=stream, progress=progress,
        register=register_run, gcs_auth=gcs_auth)
    if head_only:
        from vitzoo.cli.probe_cmds import head_only_command

        return head_only_command(options)
    result = run(options)
    if result.interrupted:
        sys.stderr.write(f"interrupted at step {result.step}/{result.total_steps}; checkpoint "
                         f"saved in {result.workdir}; rerun the same command to resume\n")
        raise SystemExit(130)


def evaluate_command(
    checkpoint: str = typer.Argument(..., help="A .npz file, catalog name, or local run name."),
    dataset: str = typer.Option(..., "--dataset", help="TFDS name[:version], or an image folder (local path, gs:// or s3:// URL)."),
    split: str = typer.Option(None, "--eval-split", "--split", help="Split to evaluate (as finetune's --eval-split); default test/validation (or the carved one); 'all': every image of an image folder (for TFDS, its union of all splits)."),
    res: int = typer.Option(None, "--res", help="Resolution; default the checkpoint's own."),
    batch: int = typer.Option(64, "--batch", help="Evaluation batch size."),
    per_class: bool = typer.Option(False, "--per-class", help="Also report per-class accuracy."),
    fmt: OutputFormat = typer.Option("table", "--format", help="Output format (one report: json and jsonl are the same object)."),
    data_dir: str = typer.Option(None, "--data-dir", help="TFDS data directory."),
    val_fraction: float = typer.Option(D.val_fraction, "--val-fraction", help="Validation fraction when carving."),
    stream: bool = typer.Option(False, "--stream", help="Stream the TFDS split from its files (automatic when it exceeds the memory budget)."),
    gcs_auth: bool = typer.Option(False, "--gcs-auth", help="Read a gs:// or s3:// --dataset with your own credentials instead of anonymously."),
    compile_cache: bool = typer.Option(True, "--compile-cache/--no-compile-cache", help="Reuse compiled programs from VITZOO_HOME/compile-cache (env VITZOO_COMPILE_CACHE=0 turns it off)."),
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Top-1, top-5 accuracy and loss of a checkpoint on a dataset split."""
    from vitzoo.runtime import set_compile_cache_choice

    set_compile_cache_choice(compile_cache)
    from vitzoo.adapt.evaluate import evaluate
    from vitzoo.cli.render import write_rows

    report = evaluate(checkpoint, dataset, split=split, res=res, batch=batch,
                      per_class=per_class, data_dir=data_dir, val_fraction=val_fraction,
                      stream=stream, gcs_auth=gcs_auth)
    document = report.as_dict()
    if fmt in ("json", "jsonl"):  # one report: the same single line for both
        sys.stdout.write(json.dumps(document, default=str) + "\n")
        return
    if fmt == "csv":  # the report's scalar fields (per-class rows belong in json)
        write_rows([{k: v for k, v in document.items() if not isinstance(v, list)}], "csv")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{report.architecture} on {report.dataset} ({report.split})",
                  title_justify="left")
    for column in ("examples", "top-1", "top-5", "loss"):
        table.add_column(column, justify="right")
    table.add_row(str(report.examples), f"{report.top1:.2%}", "n/a" if report.top5 is None else f"{report.top5:.2%}",
                  f"{report.loss:.4f}")
    console.print(table)
    if report.per_class:
        classes = Table(title="per class", title_justify="left")
        for column in ("#", "class", "examples", "accuracy"):
            classes.add_column(column, justify="right" if column != "class" else "left")
        for row in report.per_class:
            acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
            classes.add_row(str(row["index"]), row["class"], str(row["examples"]), acc)
        console.print(classes)
    for note in report.notes:
        console.print(note, style="dim")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
    app.command("evaluate")(evaluate_command)
