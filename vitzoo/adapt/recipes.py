"""``finetune --recipe paper|quick``: a named set of fine-tuning values, each one said and recorded.

``paper`` is the AugReg transfer recipe, so a user can reproduce the published fine-tunes
without reading a paper and two config files:

* Steiner et al., "How to train your ViT? Data, Augmentation, and Regularization in Vision
  Transformers" (arXiv 2106.10270, TMLR 2022), the transfer protocol: SGD with momentum
  0.9, batch 512, linear warmup then cosine decay, gradient clipping at global norm 1, no
  weight decay, no dropout, fine-tuning at 384 px (448 resize, 384 crop), and the learning
  rate chosen on validation from {0.001, 0.003, 0.01, 0.03};
* github.com/google-research/vision_transformer ``vit_jax/configs/augreg.py`` (base_lr 0.03,
  500 steps with 100 warmup steps, ``pp.resize`` 448 / ``pp.crop`` 384, dropout 0) and
  ``vit_jax/configs/common.py`` (batch 512, ``grad_norm_clip`` 1.0, cosine decay, 500 warmup
  steps; ``DATASET_PRESETS``: cifar10/cifar100 10,000 steps, imagenet2012 20,000 steps);
* the step budget by training-set size those presets follow, as written out in
  github.com/google-research/big_transfer ``bit_hyperrule.py`` (``get_schedule``): fewer than
  20,000 training images 500 steps (100 warmup), fewer than 500,000 10,000 steps, otherwise
  20,000 steps (500 warmup). Pets (3,680 images) -> 500, CIFAR-100 (50,000) -> 10,000,
  ImageNet-1k -> 20,000, as in the presets.

When the catalog holds the published fine-tunes of this very checkpoint on this dataset
(``index.csv``: ``adapt_lr``, ``adapt_steps``, ``adapt_resolution``, ranked by
``adapt_final_val``, never by test), their best values replace the table's, and the recipe
says so. ``quick`` is a short try on a laptop (a small batch at 224 px, a few hundred images
seen); it is not a result to report.

Any option given on the command line wins over the recipe; the values the recipe did set
are printed and recorded in ``run.json`` (``options.recipe_values``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vitzoo.adapt.options import FinetuneOptions
from vitzoo.errors import VitzooError

RECIPES = ("paper", "quick")

#: The learning rates the paper sweeps (chosen on validation).
PAPER_LRS = (0.001, 0.003, 0.01, 0.03)

#: ``(fewer than this many training images, steps, warmup)``; the last row has no bound.
PAPER_STEPS: tuple[tuple[int | None, int, int], ...] = (
    (20_000, 500, 100),
    (500_000, 10_000, 500),
    (None, 20_000, 500),
)

#: Values of the paper recipe that do not depend on the data or the catalog.
PAPER_FIXED: dict[str, Any] = {"batch": 512, "res": 384, "clip_norm": 1.0,
                               "label_smoothing": 0.0}

#: A short try: about 3,000 images seen at the checkpoints' usual 224 px.
QUICK: dict[str, Any] = {"steps": 100, "warmup": 10, "batch": 32, "res": 224, "lr": (0.01,),
                         "eval_every": 50, "checkpoint_every": 50}

PAPER_SOURCE = "paper (AugReg transfer recipe)"
TABLE_SOURCE = "paper's step table by training-set size"


def paper_steps(train_examples: int) -> tuple[int, int]:
    """``(steps, warmup)`` for a training set of ``train_examples`` images (:data:`PAPER_STEPS`)."""
    for bound, steps, warmup in PAPER_STEPS:
        if bound is None or train_examples < bound:
            return steps, warmup
    raise AssertionError("the last row has no bound")  # pragma: no cover


def best_known(model: str, dataset: str) -> dict[str, Any] | None:
    """The catalog's best published fine-tune of ``model`` on ``dataset`` (by validation), if any.

    A file of the user's own, a dataset the release never fine-tuned on, or no catalog: None.
    """
    if "://" in model or Path(model).expanduser().exists():
        return None
    from vitzoo.catalog.api import find_checkpoint, load_dataframe
    from vitzoo.catalog.recommend import TIE_BREAK

    try:
        info = find_checkpoint(model)
        frame = load_dataframe()
    except VitzooError:
        return None
    upstream = (getattr(info, "row", None) or {}).get("filename")
    needed = {"filename", "adapt_ds", "adapt_final_val", "adapt_lr", "adapt_steps",
              "adapt_resolution"}
    if not upstream or not needed <= set(frame.columns):
        return None
    rows = frame[(frame["filename"] == upstream)
                 & (frame["adapt_ds"] == dataset.split(":")[0])].dropna(
        subset=["adapt_final_val", "adapt_lr", "adapt_steps", "adapt_resolution"])
    if rows.empty:
        return None
    ties = [c for c in TIE_BREAK if c in rows.columns]
    rows = rows.sort_values(["adapt_final_val", *ties], ascending=[False] + [True] * len(ties))
    best = rows.iloc[0]
    return {"adapt_lr": float(best["adapt_lr"]), "adapt_steps": int(best["adapt_steps"]),
            "adapt_resolution": int(best["adapt_resolution"]),
            "adapt_final_val": float(best["adapt_final_val"]),
            "checkpoint": str(best.get("checkpoint") or best.get("adapt_filename") or "")}


def recipe_values(name: str, *, train_examples: int,
                  best: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Field -> ``{"value", "source"}`` the recipe ``name`` sets (``lr``: a tuple, a sweep)."""
    if name == "quick":
        return {k: {"value": v, "source": "quick recipe (a short try, not a result)"}
                for k, v in QUICK.items()}
    if name != "paper":
        raise VitzooError(f"unknown --recipe {name!r}", f"one of {', '.join(RECIPES)}")
    steps, warmup = paper_steps(train_examples)
    values = {k: {"value": v, "source": PAPER_SOURCE} for k, v in PAPER_FIXED.items()}
    values["steps"] = {"value": steps, "source": f"{TABLE_SOURCE} ({train_examples} images)"}
    values["warmup"] = {"value": warmup, "source": f"{TABLE_SOURCE} ({train_examples} images)"}
    values["lr"] = {"value": PAPER_LRS, "source": f"{PAPER_SOURCE}: sweep, chosen on validation"}
    if best:
        where = (f"catalog: best known fine-tune of this checkpoint on this dataset "
                 f"({best['checkpoint']}, validation {best['adapt_final_val']:.2%})")
        values["lr"] = {"value": (best["adapt_lr"],), "source": where}
        values["steps"] = {"value": best["adapt_steps"], "source": where}
        values["res"] = {"value": best["adapt_resolution"], "source": where}
        values["warmup"] = {"value": min(warmup, best["adapt_steps"]),
                            "source": f"{TABLE_SOURCE} (the catalog's step count)"}
    return values


def apply_recipe(options: FinetuneOptions, lrs: tuple[float, ...], explicit: set[str], *,
                 train_examples: int, best: dict[str, Any] | None = None
                 ) -> tuple[FinetuneOptions, tuple[float, ...], list[str]]:
    """``options`` and learning rates with the recipe's values where none was given explicitly.

    ``explicit``: the option fields the user gave on the command line (they win). Returns
    the lines that say what was set, and why, or kept.
    """
    if options.recipe is None:
        return options, lrs, []
    values = recipe_values(options.recipe, train_examples=train_examples, best=best)
    applied: dict[str, dict[str, Any]] = {}
    lines = [f"--recipe {options.recipe}:"]
    for key, entry in values.items():
        if key in explicit:
            lines.append(f"  {key} = {_show(getattr(options, key) if key != 'lr' else lrs)} "
                         f"(given on the command line; the recipe's {_show(entry['value'])} "
                         "not used)")
            continue
        applied[key] = {"value": list(entry["value"]) if key == "lr" else entry["value"],
                        "source": entry["source"]}
        lines.append(f"  {key} = {_show(entry['value'])} ({entry['source']})")
        if key == "lr":
            lrs = tuple(entry["value"])
        else:
            options = replace(options, **{key: entry["value"]})
    options = replace(options, lr=lrs[0], recipe_values=applied)
    return options, lrs, lines


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
