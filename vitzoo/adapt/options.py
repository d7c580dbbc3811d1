"""The settings of one fine-tuning run, as one plain record (the CLI maps onto it 1:1).

The dataset settings are inherited from :class:`~vitzoo.data.options.DataOptions` (one
record for every command that reads a dataset); the keys stay flat, so ``run.json``'s
``options`` and a checkpoint's recorded identity read as they always have.

Defaults are the AugReg paper's adaptation protocol (Steiner et al., "How to train your
ViT?", TMLR 2022, section 3.5 and the reference ``configs/augreg.py``; summarised in
``docs/AUGREG_GRID.md``): SGD momentum 0.9, batch 512, 500 steps with 100 warmup steps,
lr 0.03, cosine decay, global-norm clipping at 1, no weight decay, no dropout, resolution
384 (resize 448, random crop 384, flip).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vitzoo.data.options import DataOptions
from vitzoo.errors import VitzooError

#: Settings that define a run: resuming with any of them changed would mix two runs.
IDENTITY = ("model", "dataset", "steps", "warmup", "lr", "batch", "res", "train_split",
            "eval_split", "seed", "dtype", "label_smoothing", "val_fraction",
            "momentum_dtype", "clip_norm")
#: Identity settings recorded only when not at these defaults, so the identity of every
#: single-label run (older ones included) is what it always was.
IDENTITY_IF_SET: dict[str, Any] = {"task": "multiclass", "labels": None}


@dataclass(kw_only=True)
class FinetuneOptions(DataOptions):
    """A fine-tune: the dataset settings (inherited) plus the model, schedule and run folder."""

    model: str
    workdir: str | None = None
    steps: int = 500
    warmup: int = 100
    lr: float = 0.03
    batch: int = 512
    accum: str = "auto"
    res: int = 384
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    dtype: str = "float32"
    label_smoothing: float = 0.0
    momentum_dtype: str = "bfloat16"
    clip_norm: float = 1.0
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    name: str | None = None
    progress: bool = True
    register: bool = True
    #: ``paper`` or ``quick`` (:mod:`vitzoo.adapt.recipes`); None: the values above as given.
    recipe: str | None = None
    #: What the recipe set: field -> ``{"value": ..., "source": ...}`` (recorded in run.json).
    recipe_values: dict[str, Any] = field(default_factory=dict)
    #: The resolution ``res`` was rounded from to fit the model's stride, when the user gave no
    #: ``--res`` (:func:`fit_resolution`); None: ``res`` is the value given or the default as is.
    res_rounded_from: int | None = None

    def validate(self) -> None:
        """Refuse impossible settings before anything is loaded or compiled."""
        checks = [
            (self.steps >= 1, f"--steps must be at least 1, got {self.steps}"),
            (self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.batch >= 1, f"--batch must be positive, got {self.batch}"),
            (self.res >= 1, f"--res must be positive, got {self.res}"),
            (self.eval_every >= 0, "--eval-every must be >= 0 (0: only at the end)"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be >= 0 (0: only at the end)"),
            (self.log_every >= 1, "--log-every must be at least 1"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)"),
            (self.dtype in ("float32", "bfloat16"), f"--dtype must be float32 or bfloat16, "
                                                   f"got {self.dtype!r}"),
            (self.momentum_dtype in ("float32", "bfloat16"), "momentum dtype must be float32 "
                                                             "or bfloat16"),
            (self.recipe in (None, "paper", "quick"), f"--recipe must be paper or quick, "
                                                      f"got {self.recipe!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise VitzooError(message)

    def identity(self) -> dict[str, Any]:
        data = asdict(self)
        return {**{k: data[k] for k in IDENTITY},
                **{k: data[k] for k, default in IDENTITY_IF_SET.items() if data[k] != default}}

    def changes_from(self, recorded: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """``(setting, recorded, now)`` for each identity setting that differs from ``recorded``."""
        now = {**IDENTITY_IF_SET, **self.identity()}
        then = {**IDENTITY_IF_SET, **recorded}
        return [(k, then.get(k), v) for k, v in now.items() if then.get(k) != v]

    def settled(self) -> tuple[FinetuneOptions, list[str]]:
        """These options with a workdir and a warmup no longer than the run, and notes on why."""
        notes = []
        options = self
        if self.warmup > self.steps:
            notes.append(f"--warmup {self.warmup} is longer than --steps {self.steps}: "
                         f"warming up over all {self.steps} steps")
            options = replace(options, warmup=self.steps)
        workdir = Path(self.workdir) if self.workdir else default_workdir(options)
        return replace(options, workdir=str(workdir)), notes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slug(text: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    text = Path(text).name if ("/" in text and Path(text).exists()) else text
    text = re.sub(r"\.npz$", "", text)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._") or "run"


def default_workdir(options: FinetuneOptions) -> Path:
    """``vitzoo-runs/<model>--<dataset>``: rerunning the same command finds and resumes it."""
    return Path("vitzoo-runs") / f"{slug(options.model)}--{slug(options.dataset)}"


def model_stride(model: str, *, gcs_auth: bool = False) -> tuple[str, int]:
    """``(architecture name, stride in pixels)`` of the checkpoint a fine-tune of ``model`` loads.

    Read without JAX: from the name or a local file's shapes when they tell
    (:func:`vitzoo.adapt.autotune.run_config`), else from the resolved checkpoint (a
    registered run, a URL, a timm folder or Hub name: the file the run loads anyway).
    """
    from vitzoo.adapt.autotune import run_config

    config = run_config(model)
    if config is None:
        from vitzoo.download.resolve import resolve_checkpoint

        config = run_config(str(resolve_checkpoint(model, gcs_auth=gcs_auth)))
    if config is None:  # pragma: no cover - a resolved checkpoint is a verified .npz
        raise VitzooError(f"cannot read the architecture of {model!r}", "give --res explicitly")
    return config.name, config.stride


def fit_resolution(options: FinetuneOptions, explicit: set[str]
                   ) -> tuple[FinetuneOptions, str | None]:
    """``options`` with a resolution the model's stride divides, and the line that says so.

    The default 384 (the AugReg papers' /16 and /32 models) is no multiple of a /14 model's
    stride (DINOv2, some CLIP/EVA): when the user gave no ``--res``, the default (or the
    recipe's value) is rounded to the nearest multiple, 378 for /14, and the value it came
    from is kept in ``res_rounded_from`` (run.json's ``options``). A ``--res`` the user gave
    is never changed: the model refuses it later with the one-line error it always gave.
    """
    if "res" in explicit:
        return options, None
    try:
        name, stride = model_stride(options.model, gcs_auth=options.gcs_auth)
    except VitzooError:  # not found, no network...: the run says so, in its own order
        return options, None
    if options.res % stride == 0:
        return options, None
    fitted = max(1, round(options.res / stride)) * stride
    source = (f"the {options.recipe} recipe's" if "res" in options.recipe_values
              else "the default")
    note = (f"--res not given: {source} {options.res} is not a multiple of {name}'s stride "
            f"{stride}; fine-tuning at {fitted}, the nearest multiple (give --res to choose)")
    return replace(options, res=fitted, res_rounded_from=options.res), note
