"""The catalog filter options shared by ``vitzoo list`` and ``vitzoo plot``.

Declared once so both commands accept exactly the same spellings and help text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import typer

from vitzoo.catalog.query import Filters
from vitzoo.errors import VitzooError

ARCH_HELP = ("Architecture in any spelling (B/16, B_16, ViT-B_16, R26+S/32, timm's vit_base_patch16_224); "
             "repeatable.")
INDEX_HELP = "Catalog to read (a catalog.parquet or its folder); default: VITZOO_INDEX, then yours, then the embedded one."

ARCH = typer.Option(None, "--arch", help=ARCH_HELP)
DS = typer.Option(None, "--ds", help=(
    "Pre-training dataset: i1k, i21k, i21k_30 (aliases: imagenet21k, ...); other families' data "
    "as timm names it (lvd142m, laion2b, openai, webli, ...)."))
AUG = typer.Option(None, "--aug", help="Augmentation: none light0 light1 medium1 medium2 strong1 strong2.")
WD = typer.Option(None, "--wd", help="Pre-training weight decay (0.03, 0.1).")
DO = typer.Option(None, "--do", help="Pre-training dropout (0.0, 0.1).")
SD = typer.Option(None, "--sd", help="Pre-training stochastic depth (0.0, 0.1).")
ADAPT_LR = typer.Option(None, "--adapt-lr", help="Fine-tuning learning rate.")
STEPS = typer.Option(None, "--steps", help="Fine-tuning steps (500, 2500, 10000, 20000).")
COLLECTION = typer.Option(None, "--collection", help=(
    "augreg, imagenet21k, imagenet21k+imagenet2012, sam, mixer/..., local; other ViT families "
    "served by timm: timm-families, or one of them (timm-families/deit, deit3, dino, dinov2, mae, "
    "clip, siglip)."))
LOCAL = typer.Option(False, "--local", help="Only your own registered fine-tunes.")
WHERE = typer.Option(None, "--where", help='Expression over any column, e.g. \'adapt_final_val > 0.9 and ds == "i21k"\'.')
INDEX = typer.Option(None, "--index", help=INDEX_HELP)
NAME = typer.Option(None, "--name", help=(
    "Glob over checkpoint names, vitzoo's and timm's (like timm.list_models): '*augreg_in21k*', "
    "'vit_base_patch16*', 'B_16-i21k*'; without * or ? a substring; repeatable."))
DOWNLOADABLE = typer.Option(False, "--downloadable", help=(
    "Only checkpoints some source can serve now (column available: cache, mirror, hf, local); "
    "computed offline, the bucket is not probed."))
LIMIT = typer.Option(None, "--limit", help="At most this many rows.")
WIDE = typer.Option(False, "--wide", help="Show every column and full names, even past the terminal width.")
#: The machine-readable formats every table command writes (typer lists and checks them).
OutputFormat = Literal["table", "csv", "json", "jsonl"]
FORMAT = typer.Option("table", "--format", help="Output format (json: one array; jsonl: one object per line).")


def split_values(values: list[str] | None) -> list[str]:
    """Accept both ``--arch B/16 --arch S/16`` and ``--arch B/16,S/16``."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def parse_numbers(values: list[str] | None, cast: Callable[[str], float | int], option: str) -> list:
    out = []
    for value in split_values(values):
        try:
            out.append(cast(value))
        except ValueError as exc:
            example = "0.1" if cast is float else "384"
            raise VitzooError(f"{option} expects a number, got {value!r}",
                              f"e.g. {option} {example}") from exc
    return out


def build_filters(*, arch, ds, aug, wd, do, sd, adapt_ds, res, adapt_lr, steps, collection,
                  where, name=None) -> Filters:
    """Command-line values (strings, repeatable or comma-separated) to :class:`Filters`."""
    return Filters(
        arch=split_values(arch), ds=split_values(ds), aug=split_values(aug),
        wd=parse_numbers(wd, float, "--wd"), do=parse_numbers(do, float, "--do"),
        sd=parse_numbers(sd, float, "--sd"), adapt_ds=split_values(adapt_ds),
        res=parse_numbers(res, int, "--res"), adapt_lr=parse_numbers(adapt_lr, float, "--adapt-lr"),
        steps=parse_numbers(steps, int, "--steps"), collection=split_values(collection),
        name=split_values(name), where=where,
    )


def any_filter(filters: Filters) -> bool:
    """Whether any filter constrains the rows (an empty answer then has a reason to find)."""
    from vitzoo.catalog.query import active_filters

    return bool(active_filters(filters))
