"""``finetune --lr 0.001,0.003,0.01,0.03``: one fine-tune per learning rate, chosen on validation.

The paper's way (Steiner et al., arXiv 2106.10270: the learning rate is swept and chosen on
held-out training data). The dataset is opened once; each learning rate is an ordinary
fine-tune (:func:`vitzoo.adapt.runner.run`) in its own resumable workdir
``<sweep folder>/lr_<value>``, registered as ``<name>-lr_<value>``, so rerunning the same
command resumes the sweep where it stopped. The compile cache is shared (the evaluation
program is the same for every run; the learning rate is a constant of the train step).

The choice is made on a validation split, never on test: the dataset's validation split
when it has one, else one carved from the training images (deterministic, stratified,
``--val-fraction``) and the test split, when there is one, is then scored for the chosen
run only. ``sweep.json`` in the sweep folder records every run, the split chosen on, the
choice and the test score.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.adapt.options import FinetuneOptions, default_workdir, fit_resolution
from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data import DataSplits

SWEEP_FILE = "sweep.json"


def parse_lrs(text: str | float) -> tuple[float, ...]:
    """``"0.001,0.003"`` -> ``(0.001, 0.003)``: one or more positive learning rates."""
    try:
        values = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise VitzooError(f"--lr must be a number or comma-separated numbers, got {text!r}",
                          "e.g. --lr 0.01 or --lr 0.001,0.003,0.01,0.03") from None
    if not values or any(v <= 0 for v in values):
        raise VitzooError(f"--lr must be positive, got {text!r}", "e.g. --lr 0.01")
    if len(set(values)) != len(values):
        raise VitzooError(f"--lr lists a value twice: {text!r}", "give each value once")
    return values


def lr_tag(lr: float) -> str:
    return f"lr_{lr:g}"


@dataclass
class SweepResult:
    folder: Path
    record: dict[str, Any]
    chosen: float


def launch(options: FinetuneOptions, lrs: tuple[float, ...], explicit: set[str], *,
           dry_run: bool = False) -> int:
    """The ``finetune`` command past option parsing: recipe, dry run, one run or a sweep.

    Returns the exit status (a dry run that does not fit: 1).
    """
    from vitzoo.adapt import recipes, runner

    options.validate()
    one_run = options.recipe is None and len(lrs) == 1 and not dry_run
    # The data first (no JAX: the recipe needs its size before the runtime starts), so a
    # dataset mistake is one line before the resolution fit below downloads a checkpoint
    # whose stride only its file tells.
    if one_run:
        data = runner.open_run_data(options)
    else:
        if not dry_run:  # a sweep's folder (or a recipe's run folder), before the data is read
            runner.check_run_outputs(Path(options.workdir) if options.workdir
                                     else default_workdir(options), register=options.register)
        data = sweep_data(options) if len(lrs) > 1 or options.recipe is not None else options.open()
    if options.recipe is None:  # no --res: the default rounded to the model's stride
        options = fit_resolution_said(options, explicit)
    if one_run:
        result = runner.run(replace(options, lr=lrs[0]), data=data)
        return _interrupted(result)
    if options.recipe is not None:
        assert data.train is not None
        best = (recipes.best_known(options.model, options.dataset)
                if options.recipe == "paper" else None)
        options, lrs, lines = recipes.apply_recipe(options, lrs, explicit,
                                                   train_examples=len(data.train), best=best)
        _say(lines)
        options = fit_resolution_said(options, explicit)  # the recipe's 384 as the default's
    options = replace(options, lr=lrs[0])
    runner.start_runtime(options, tune=not dry_run)  # tuned for the shapes the recipe settled
    if dry_run:
        from vitzoo.adapt.dryrun import dry_run as check
        from vitzoo.adapt.dryrun import render

        if len(lrs) > 1:
            _say([f"dry run of the first of {len(lrs)} learning rates (every run has the "
                  "same shapes)"])
        report = check(options, data)
        sys.stdout.write("\n".join(render(report)) + "\n")
        return 0 if report.fits else 1
    if len(lrs) == 1:
        return _interrupted(runner.run(options, data=data))
    result = sweep(options, lrs, data)
    sys.stdout.write("\n".join(table(result.record)) + "\n")
    return 130 if result.record.get("interrupted") else 0


def fit_resolution_said(options: FinetuneOptions, explicit: set[str]) -> FinetuneOptions:
    """:func:`~vitzoo.adapt.options.fit_resolution`, its note said on stderr (finetune, head-only)."""
    options, note = fit_resolution(options, explicit)
    _say([note] if note else [])
    return options


def sweep_data(options: FinetuneOptions) -> DataSplits:
    """The data a sweep runs on, read once: with the dataset's own validation split, which
    :func:`choice_data` chooses on, unless an explicit ``--val-fraction`` forces a carve."""
    from vitzoo.data.options import forced_carve

    return options.open(validation=forced_carve(options) is None)


def _interrupted(result: Any) -> int:
    if not result.interrupted:
        return 0
    sys.stderr.write(f"interrupted at step {result.step}/{result.total_steps}; checkpoint "
                     f"saved in {result.workdir}; rerun the same command to resume\n")
    return 130


def _say(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(line + "\n")


def _is_test(split_name: str) -> bool:
    return split_name.split("[")[0].strip() == "test"


def choice_data(options: FinetuneOptions, data: DataSplits) -> tuple[DataSplits, str | None]:
    """The data the runs train and choose on (eval = validation), and the test split's name.

    When the dataset's held-out split is test, the runs choose on the dataset's own
    validation split (TFDS ``validation``, a folder's ``val/``) when ``data`` carries it
    (:func:`sweep_data` reads it unless ``--val-fraction`` was given): the probe's rule
    (:func:`vitzoo.data.options.forced_carve`, :func:`~vitzoo.data.options.own_validation`).
    Otherwise a validation split is carved from the training images (deterministic,
    stratified by class). Test is kept for the report.
    """
    from vitzoo.data.options import own_validation
    from vitzoo.data.source import carve

    if not _is_test(data.eval_split):
        has_test = data.kind == "tfds" or (Path(options.dataset) / "test").is_dir()
        return data, ("test" if has_test and options.eval_split is None else None)
    held_out = own_validation(data)  # read by sweep_data unless --val-fraction was given
    if held_out is not None and data.task != "multilabel":  # multi-label: its own rule
        note = (f"sweep: chose on the dataset's own {data.validation_split} split "
                f"({len(held_out)} images; --val-fraction carves from {data.train_split} "
                f"instead); {data.eval_split} is scored for the chosen run only")
        return replace(data, eval=held_out, eval_split=data.validation_split, validation=None,
                       validation_split=None, notes=[*data.notes, note]), data.eval_split
    train = data.train
    if train is None or not hasattr(train, "subset"):
        raise VitzooError("a learning-rate sweep chooses on validation data, and the training "
                          "split is streamed, so none can be carved from it",
                          "give --eval-split validation when the dataset has one, or a smaller "
                          "--train-split")
    labels = getattr(train, "labels", None)
    keep, val = carve(len(train), options.val_fraction, labels)
    if len(val) == 0:
        raise VitzooError("the training split is too small to carve a validation split",
                          "add images or raise --val-fraction")
    share = f"{options.val_fraction:.0%}"
    note = (f"sweep: chose on a validation split carved from {data.train_split} "
            f"({len(val)} of {len(train)} images, {share} per class); {data.eval_split} "
            "is scored for the chosen run only")
    chosen = replace(data, train=train.subset(keep), eval=train.subset(val),
                     train_split=f"{data.train_split}[-carved {share}]",
                     eval_split=f"{data.train_split}[carved {share}]",
                     notes=[*data.notes, note])
    return chosen, data.eval_split


def sweep(options: FinetuneOptions, lrs: tuple[float, ...], data: DataSplits) -> SweepResult:
    """Run one fine-tune per learning rate, choose on validation, score test for the choice."""
    from vitzoo.adapt import runner
    from vitzoo.runs import write_json

    folder = Path(options.workdir) if options.workdir else default_workdir(options)
    base = options.name or folder.name
    chosen_data, test_split = choice_data(options, data)
    runs: list[dict[str, Any]] = []
    for lr in lrs:
        run_options = replace(options, lr=lr, workdir=str(folder / lr_tag(lr)),
                              name=f"{base}-{lr_tag(lr)}")
        result = runner.run(run_options, data=chosen_data)
        metrics = result.metrics or {}
        runs.append({"lr": lr, "workdir": str(result.workdir), "name": run_options.name,
                     "steps": result.step, "final_npz": str(result.final_npz or ""),
                     "val_top1": metrics.get("eval_accuracy"), "val_loss": metrics.get("eval_loss"),
                     "interrupted": result.interrupted})
        if result.interrupted:
            break
    interrupted = any(r["interrupted"] for r in runs)
    finished = [r for r in runs if r["val_top1"] is not None and not r["interrupted"]]
    best = choose(finished) if finished and not interrupted else None
    test = None
    if best is not None and test_split is not None:
        test = _score_test(options, best, test_split)
    record = {"kind": "lr_sweep", "chosen_on": chosen_data.eval_split, "test_split": test_split,
              "lrs": list(lrs), "runs": runs, "chosen_lr": None if best is None else best["lr"],
              "chosen_run": None if best is None else best["name"], "test": test,
              "interrupted": interrupted, "options": options.as_dict()}
    import jax

    if jax.process_index() == 0:  # as run.json: one process writes
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / SWEEP_FILE, record)
    return SweepResult(folder, record, record["chosen_lr"])


def choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the best validation top-1; ties: lower validation loss, then lower lr."""
    return min(runs, key=lambda r: (-r["val_top1"], r["val_loss"] if r["val_loss"] is not None
                                    else float("inf"), r["lr"]))


def _score_test(options: FinetuneOptions, run: dict[str, Any], split: str) -> dict[str, Any]:
    from vitzoo.adapt.evaluate import evaluate

    report = evaluate(run["final_npz"], options.dataset, split=split, res=options.res,
                      data_dir=options.data_dir, manual_dir=options.manual_dir,
                      val_fraction=options.val_fraction, dtype=options.dtype,
                      stream=options.stream, gcs_auth=options.gcs_auth)
    return {"split": split, "top1": report.top1, "top5": report.top5, "loss": report.loss,
            "examples": report.examples}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def table(record: dict[str, Any]) -> list[str]:
    """The sweep as an 80-column table (percentages), the chosen run marked."""
    lines = [f"learning-rate sweep, chosen on {record['chosen_on']} (validation top-1)",
             f"{'':2}{'lr':>8}  {'val top-1':>9}  {'val loss':>8}  {'steps':>6}  run",
             "-" * 78]
    for run in record["runs"]:
        mark = "*" if run["lr"] == record["chosen_lr"] else " "
        loss = "-" if run["val_loss"] is None else f"{run['val_loss']:.4f}"
        name = run["name"] if len(run["name"]) <= 42 else "..." + run["name"][-39:]
        lines.append(f"{mark:2}{run['lr']:>8g}  {_pct(run['val_top1']):>9}  {loss:>8}  "
                     f"{run['steps']:>6}  {name}")
    if record["chosen_lr"] is None:
        lines.append("no choice: the sweep did not finish; rerun the same command to resume")
    elif record["test"]:
        test = record["test"]
        lines.append(f"chosen lr {record['chosen_lr']:g}: {test['split']} top-1 "
                     f"{_pct(test['top1'])} on {test['examples']} images (reported, not used "
                     "to choose)")
    else:
        lines.append(f"chosen lr {record['chosen_lr']:g} (the dataset has no separate test "
                     "split to report)")
    return lines
