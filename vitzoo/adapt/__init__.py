"""Fine-tuning zoo checkpoints: the runner behind ``vitzoo finetune`` and ``vitzoo evaluate``.

Modules, one job each: ``options`` (the settings record), ``runner`` (the story: data,
model and state, batch plan, train loop, export), ``steps`` (the pmapped update),
``schedule``, ``optimizer``, ``accumulation`` (batch layout and ``--accum auto``),
``resume`` (what a rerun must agree with) over ``train_state`` (atomic resumable state),
``throughput`` (timing windows), ``cadence`` (is it time to log/eval/checkpoint),
``prefetch``, ``signals`` (Ctrl-C saves), ``metrics`` (JSONL + TensorBoard), ``evaluate``,
``progress``, ``recipes`` (``--recipe paper|quick``), ``dryrun`` (``--dry-run``: XLA's memory
and FLOPs of the compiled step), ``sweep`` (``--lr a,b,...`` chosen on validation).
Loading, devices and processes are :mod:`vitzoo.backbone`'s; evaluation is
:mod:`vitzoo.evaluators`'; run.json, run.log, final.npz and the local-catalog entry are
:mod:`vitzoo.runs`'s.
Importing this package imports neither jax nor TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.adapt.evaluate import EvalReport
    from vitzoo.adapt.runner import RunResult

__all__ = ["evaluate", "finetune"]


def finetune(model: str, dataset: str, **options: Any) -> RunResult:
    """Fine-tune ``model`` on ``dataset``; see :func:`vitzoo.adapt.runner.finetune`."""
    from vitzoo.adapt.runner import finetune as _finetune

    return _finetune(model, dataset, **options)


def evaluate(checkpoint: str, dataset: str, **options: Any) -> EvalReport:
    """Top-1/top-5/loss of a checkpoint on a dataset; see :func:`vitzoo.adapt.evaluate.evaluate`."""
    from vitzoo.adapt.evaluate import evaluate as _evaluate

    return _evaluate(checkpoint, dataset, **options)
