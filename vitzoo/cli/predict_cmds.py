"""``vitzoo predict CHECKPOINT IMAGE...``: classify images with a checkpoint.

jax/flax/PIL are imported inside the command, so registering it costs nothing.
"""

from __future__ import annotations

import typer

from vitzoo.accelerators import stop_early_if_unreachable
from vitzoo.cli.accelerator_option import ALLOW_CPU
from vitzoo.cli.data_options import runtime_options
from vitzoo.cli.filter_options import OutputFormat
from vitzoo.text import percent
from vitzoo.weights.untrained import is_untrained
from vitzoo.weights.untrained import label as untrained_label


@runtime_options(autotune=True)
def predict_command(
    checkpoint: str = typer.Argument(..., help="A .npz file, URL, catalog name, or local run name."),
    images: list[str] = typer.Argument(..., help="Image files (JPEG, PNG, ...)."),
    top_k: int = typer.Option(5, "--top-k", help="Classes to show per image."),
    res: int = typer.Option(None, "--res", help="Input resolution; default: the checkpoint's own."),
    fmt: OutputFormat = typer.Option("table", "--format", help="Output format (json: one array; jsonl: one object per line)."),
    logits: bool = typer.Option(False, "--logits", help="Include all logits (json output)."),
    arch: str = typer.Option(None, "--arch", help="Check that the file is this architecture."),
    attention: str = typer.Option(None, "--attention", help="Folder for attention-rollout overlays (ViT and hybrids): <stem>.png per image, <stem>-<hash of the path>.png where inputs share a stem; the JSON names each image's file."),
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Classify images with a checkpoint (reference preprocessing: resize, scale to [-1, 1])."""
    from vitzoo.cli.render import write_rows
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.errors import VitzooError
    from vitzoo.predict import Predictor

    stop_early_if_unreachable()
    if top_k < 1:
        raise VitzooError(f"--top-k must be at least 1, got {top_k}", "e.g. --top-k 5")
    if attention is not None:  # before any download or computation: a wrong folder costs nothing
        from vitzoo.atomic import output_dir
        from vitzoo.attention import ATTENTION_WHAT

        output_dir(attention, ATTENTION_WHAT, create=False)
    path = resolve_checkpoint(checkpoint)
    predictor = Predictor(path, resolution=res, arch=arch)
    top_k = min(top_k, predictor.num_classes)  # a 2-class model has no top-5
    maps: list = [None] * len(images)
    if attention is not None:
        from vitzoo.attention import require_attention, write_attention_maps

        require_attention(predictor.config)
    results = predictor.predict(images, top_k=top_k, with_logits=logits)
    if attention is not None:
        maps = write_attention_maps(predictor, images, attention)
    if fmt in ("json", "jsonl", "csv"):
        rows = [result.as_dict() | ({"attention_map": str(m)} if m else {})
                for result, m in zip(results, maps, strict=True)]
        if fmt == "csv":  # one line per (image, rank); multi-label: per class above the threshold
            listed = "labels" if predictor.task.multilabel else "top_k"
            rows = [{"image": row["image"], "rank": rank, "index": entry["index"],
                     "label": entry["label"], "probability": entry["probability"]}
                    for row in rows for rank, entry in enumerate(row[listed], start=1)]
        write_rows(rows, fmt)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for result in results:
        shown = result.top_k if result.labels is None else result.labels
        title = result.image if result.labels is None else (
            f"{result.image}: {len(result.labels)} class(es) at or above {result.threshold:.2f}")
        table = Table(title=title, title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for rank, entry in enumerate(shown, start=1):
            table.add_row(str(rank), str(entry["index"]), entry["label"],
                          percent(entry["probability"], 2))
        console.print(table)
        if result.logits is not None:
            console.print("logits: " + " ".join(f"{v:.4g}" for v in result.logits))
    console.print(f"{predictor.config.name} at {predictor.resolution} px; "
                  f"labels: {predictor.labels.source}"
                  + (f"; multi-label (sigmoid per class, threshold {predictor.task.threshold:.2f} "
                     f"from {predictor.task.source})" if predictor.task.multilabel else ""),
                  style="dim")
    if is_untrained(path):
        console.print(f"untrained: {untrained_label(path, checkpoint)} has random weights "
                      "(seed 0); its predictions are chance", style="dim")
    if attention is not None:
        console.print(f"attention rollout overlays: {len(maps)} PNG(s) in {attention}", style="dim")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
