"""Choose by your own data: probe checkpoints with frozen features, no fine-tuning.

``probe`` is "adapt without training": it reuses the download chain, the models, the data
pipelines and the multi-device layout of ``finetune``, extracts each candidate's pre-logit
features once into a cache under ``VITZOO_HOME`` (:mod:`.cache`, :mod:`.features`), and
scores them with the ViT paper's few-shot regularised least squares, a full-train linear
probe and k-nearest neighbours (:mod:`.scores`; on a multi-label dataset the linear probe
and kNN label voting, scored by mAP: :mod:`.multilabel`). ``recommend --dataset`` ranks candidates by
those scores (:mod:`.run`); ``finetune --head-only`` turns the linear probe into a new head
on the frozen backbone (:mod:`.head`).

Importing this package is cheap: jax and TensorFlow are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def probe_table(dataset: str, candidates: str | Sequence[str] = "recommended", *,
                arch: Sequence[str] = (), sort: str = "linear_accuracy",
                say: Callable[[str], None] | None = None, **settings: Any) -> Any:
    """Probe ``candidates`` on ``dataset``: a pandas DataFrame, one row per candidate, best first.

    The Python counterpart of ``vitzoo probe --format csv``, for notebooks and scripts:
    ``dataset`` is a TFDS name or an image folder; ``candidates`` is ``"recommended"``,
    ``"downloadable"`` or checkpoint names/paths/local runs (a list, or comma-separated);
    ``arch`` narrows ``recommended``/``downloadable`` to some architectures; ``sort`` is the
    score that ranks, on the validation part: linear_accuracy, knn_accuracy, fewshot_K_mean
    (or ``"10shot"``) or img_per_sec. ``settings`` are the fields of
    :class:`~vitzoo.probe.run.ProbeSettings` (``shots``, ``seeds``, ``knn_k``, ``res``,
    ``batch``, ``dtype``) and of :class:`~vitzoo.data.options.DataOptions` (``train_split``,
    ``eval_split``, ``data_dir``, ``gcs_auth``, ...); ``say``
    receives progress lines (extraction, skipped candidates).

    Columns: ``checkpoint``, ``name``, ``architecture``, ``img_per_sec`` (measured in this
    run, with ``img_per_sec_min``/``_max``), ``linear_accuracy``, ``knn_accuracy`` and
    ``fewshot_K_mean`` (a multi-label dataset: ``linear_map`` and ``knn_map``) on the
    evaluation split, each with ``_low``/``_high`` (its 95 %
    interval), ``fewshot_K_std``, ``val_*`` (the validation values that rank), the
    throughput setup, ``published_*`` (catalog numbers from other data and hardware),
    ``representation`` and ``preprocessing`` (which vector, which pixels), ``skipped`` (the
    reason, or None) and ``pareto`` (on the front of the ``sort`` score
    against img/s). ``attrs`` holds the dataset, its splits and sizes, and the notes.
    Features and scores are cached under ``VITZOO_HOME``: a rerun costs only what is new.
    """
    import pandas as pd

    from vitzoo.data.options import DATA_FIELDS, DataOptions
    from vitzoo.probe import report
    from vitzoo.probe.candidates import select
    from vitzoo.probe.run import ProbeSettings, probe

    if "shots" in settings:
        settings["shots"] = tuple(sorted({int(k) for k in settings["shots"]}))
    data = DataOptions(dataset=dataset, **{k: settings.pop(k) for k in DATA_FIELDS if k in settings})
    data.check()
    probe_settings = ProbeSettings(**settings)
    probe_settings.check()
    sort = report.check_sort(sort, probe_settings.shots, task=data.task)
    requested = [candidates] if isinstance(candidates, str) else list(candidates)
    chosen, notes = select(requested, arch=list(arch))
    say = say or (lambda _: None)
    for note in notes:
        say(note)
    result = probe(data, chosen, probe_settings, say=say)
    ordered = report.sort_results(result.results, sort)
    columns, rows = report.records(ordered)
    frame = pd.DataFrame(rows, columns=columns)
    front = {r.checkpoint for r in report.pareto(ordered, sort)}
    frame["pareto"] = frame["checkpoint"].isin(front)
    frame.attrs.update({k: v for k, v in result.as_dict().items() if k != "candidates"})
    frame.attrs.update(sort=sort, notes=[*notes, *result.notes])
    return frame
