"""``vitzoo predict CHECKPOINT IMAGE...``: classify images with a checkpoint.

jax/flax/PIL are imported inside the command, so registering it costs nothing.
"""

from __future__ import annotations

import json
import sys

import typer


def predict_command(
    checkpoint: str = typer.Argument(..., help="A local .npz file, or a catalog checkpoint name."),
    images: list[str] = typer.Argument(..., help="Image files (JPEG, PNG, ...)."),
    top_k: int = typer.Option(5, "--top-k", help="Classes to show per image."),
    res: int = typer.Option(None, "--res", help="Input resolution; default: the checkpoint's own."),
    fmt: str = typer.Option("table", "--format", help="Output format: table or json (one object per line)."),
    logits: bool = typer.Option(False, "--logits", help="Include all logits (json output)."),
    arch: str = typer.Option(None, "--arch", help="Check that the file is this architecture."),
    compile_cache: bool = typer.Option(True, "--compile-cache/--no-compile-cache", help="Reuse compiled programs from VITZOO_HOME/compile-cache (env VITZOO_COMPILE_CACHE=0 turns it off)."),
) -> None:
    """Classify images with a checkpoint (reference preprocessing: resize, scale to [-1, 1])."""
    from vitzoo.runtime import set_compile_cache_choice

    set_compile_cache_choice(compile_cache)
    from vitzoo.errors import VitzooError
    from vitzoo.predict import Predictor, resolve_checkpoint_argument

    if fmt not in ("table", "json"):
        raise VitzooError(f"unknown --format {fmt!r}", "use table or json")
    path = resolve_checkpoint_argument(checkpoint)
    predictor = Predictor(path, resolution=res, arch=arch)
    results = predictor.predict(images, top_k=top_k, with_logits=logits)
    if fmt == "json":
        for result in results:
            sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for result in results:
        table = Table(title=result.image, title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for rank, entry in enumerate(result.top_k, start=1):
            table.add_row(str(rank), str(entry["index"]), entry["label"],
                          f"{entry['probability']:.4f}")
        console.print(table)
        if result.logits is not None:
            console.print("logits: " + " ".join(f"{v:.4g}" for v in result.logits))
    console.print(f"{predictor.config.name} at {predictor.resolution} px; "
                  f"labels: {predictor.labels.source}", style="dim")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
