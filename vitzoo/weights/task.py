"""Which kind of head a weight file has: softmax over classes, or a sigmoid per class.

A multi-label head's logits are independent per class, so ``predict`` must apply a
sigmoid and list every class above the run's threshold, ``evaluate`` must score mAP/F1 at
that threshold, and ``export`` must tell transformers and timm. All three ask here, so
they cannot disagree. The fact is read from the files beside the ``.npz``, in the order
:mod:`vitzoo.weights.facts` reads class names: ``class_names.json`` (``export --to npz``
copies ``task`` and ``threshold`` into it), then ``run.json`` (the fine-tune's ``task``
option and the threshold it chose on validation). A file without either is single-label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vitzoo.weights.facts import CLASS_NAME_FILES

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
#: transformers' ``problem_type`` for each task.
HF_PROBLEM_TYPE = {MULTICLASS: "single_label_classification",
                   MULTILABEL: "multi_label_classification"}


@dataclass(frozen=True)
class HeadTask:
    """``task`` (multiclass or multilabel), the multi-label ``threshold``, and where it was read."""

    task: str = MULTICLASS
    threshold: float = 0.5
    source: str = ""

    @property
    def multilabel(self) -> bool:
        return self.task == MULTILABEL

    def as_dict(self) -> dict[str, object]:
        """What ``class_names.json`` keeps of it (nothing for a single-label head)."""
        return {"task": self.task, "threshold": self.threshold} if self.multilabel else {}


def _read(path: Path) -> HeadTask | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # an unreadable file is reported by the class-name reader
    if not isinstance(data, dict):
        return None
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    task = data.get("task") or options.get("task")
    if task is None:
        return None
    metrics = data.get("final_metrics") if isinstance(data.get("final_metrics"), dict) else {}
    threshold = data.get("threshold", metrics.get("eval_threshold"))
    return HeadTask(str(task), float(threshold) if threshold is not None else 0.5, str(path))


def head_task(checkpoint: Path | None) -> HeadTask:
    """The head's task as recorded beside ``checkpoint`` (single-label when nothing says)."""
    if checkpoint is not None:
        for filename in CLASS_NAME_FILES:
            if (found := _read(Path(checkpoint).parent / filename)) is not None:
                return found
    return HeadTask()
