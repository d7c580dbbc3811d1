"""``vitzoo probe``: every candidate's features and scores on one dataset.

The dataset is opened once (a :class:`~vitzoo.data.options.DataOptions`, as for
``finetune``); each candidate is
resolved through the normal cache -> mirrors -> GCS -> Hugging Face chain, its train and
evaluation features are extracted into the cache (only the missing chunks), its
forward speed is measured in this run (:mod:`.speed`; never cached: a figure from another
run was taken under another load), and its scores are computed from the cached features
and saved, keyed by the feature entries and the score settings. Rerunning with another
candidate or more shots costs only what is new.

Every option is checked (:meth:`ProbeSettings.check`, :func:`check_resolution`) before any
data is read. A candidate that cannot be fetched or loaded is skipped with its reason; the
run goes on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vitzoo.data.options import DataOptions, own_validation
from vitzoo.errors import VitzooError
from vitzoo.probe.candidates import Candidate
from vitzoo.probe.scores import DEFAULT_SHOTS, VALIDATION_FRACTION

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.backbone.distributed import Cluster

#: Bump when the scoring method changes, so saved scores are recomputed.
SCORES_VERSION = 3
MULTILABEL_SCORES_VERSION = 1
DTYPES = ("float32", "bfloat16")


@dataclass
class ProbeSettings:
    """What decides the numbers of a probe besides its data (the CLI options map onto it)."""

    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = 5
    knn_k: int = 10
    res: int | None = None
    batch: int = 64
    dtype: str = "float32"
    #: None: choose on the dataset's own validation split when it has one that is neither
    #: trained nor reported on, else on a carved VALIDATION_FRACTION of each training class;
    #: a fraction: always carve that share (``--val-fraction`` given on the command line).
    val_fraction: float | None = None

    def check(self) -> None:
        """Refuse impossible settings before any data or checkpoint is read (one-line errors)."""
        if not self.shots or min(self.shots) < 1:
            raise VitzooError(f"--shots values must be at least 1, got {list(self.shots)}",
                              "e.g. --shots 1,5,10,25")
        for name, value, example in (("--seeds", self.seeds, 5), ("--knn-k", self.knn_k, 10),
                                     ("--batch", self.batch, 64)):
            if int(value) < 1:
                raise VitzooError(f"{name} must be at least 1, got {value}", f"e.g. {name} {example}")
        if self.res is not None and self.res < 1:
            raise VitzooError(f"--res must be a positive number of pixels, got {self.res}",
                              "omit it to use each checkpoint's own resolution, or e.g. --res 224")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise VitzooError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}",
                              "e.g. --val-fraction 0.2")
        if self.dtype not in DTYPES:
            raise VitzooError(f"--dtype must be float32 or bfloat16, got {self.dtype!r}",
                              "e.g. --dtype bfloat16")


@dataclass
class CandidateResult:
    checkpoint: str
    architecture: str | None = None
    path: str | None = None
    representation: str | None = None
    preprocessing: dict[str, Any] | None = None  # the checkpoint's rule (Preprocessing.as_dict)
    resolution: int | None = None
    img_per_sec: float | None = None
    throughput: dict[str, Any] | None = None
    linear_accuracy: float | None = None
    knn_accuracy: float | None = None
    linear_map: float | None = None  # a multi-label dataset: mAP instead of accuracy
    knn_map: float | None = None
    fewshot: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    validation: dict[str, float | None] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    eval_split: str | None = None
    published: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    cached: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ProbeReport:
    dataset: str
    train_split: str | None
    eval_split: str
    num_classes: int
    train_examples: int
    eval_examples: int
    results: list[CandidateResult]
    notes: list[str] = field(default_factory=list)
    #: The dataset's own validation split candidates were chosen on (None: carved from train).
    validation_split: str | None = None
    #: False on the other processes of a multi-process probe: they compute, process 0 reports.
    main_process: bool = True
    task: str = "multiclass"

    @property
    def measured(self) -> list[CandidateResult]:
        return [r for r in self.results if not r.skipped]

    @property
    def choosing_split(self) -> dict[str, Any] | None:
        """The validation part candidates are ranked on (the same for every candidate):
        ``source`` ``dataset`` (the dataset's own split, ``name``) or ``carved`` (from train)."""
        for r in self.measured:
            side = r.scores.get("choose") or {}
            source = side.get("source", "carved")
            return {"split": "validation", "source": source,
                    "name": self.validation_split if source == "dataset" else None,
                    "detail": side.get("split"),
                    "examples": side.get("examples"), "smallest_class": side.get("smallest_class")}
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "task": self.task, "train_split": self.train_split,
                "choosing_split": self.choosing_split, "eval_split": self.eval_split,
                "num_classes": self.num_classes,
                "train_examples": self.train_examples, "eval_examples": self.eval_examples,
                "candidates": [r.as_dict() for r in self.results], "notes": self.notes}


def _say_nothing(_: str) -> None:
    return None


def open_probe_dataset(options: DataOptions, *, validation: bool = False) -> Any:
    """The dataset, refused when a probe cannot fit on it; ``validation``: with the dataset's
    own validation split when it has one (:meth:`DataOptions.open`)."""
    data = options.open(validation=validation)
    if data.train is None or len(data.train) == 0:
        raise VitzooError(f"{options.dataset} has no training images",
                          "a probe fits on the training split")
    return data


def check_resolution(candidates: Sequence[Candidate], res: int | None) -> None:
    """``--res`` must be a multiple of every candidate's stride (checked before data is read).

    Known from the catalog architecture, or from a local file's shapes; a candidate known
    neither way is checked when it is loaded (and skipped with the reason).
    """
    if res is None:
        return
    from vitzoo.models.configs import get_config

    for candidate in candidates:
        if candidate.skip_reason:
            continue
        config = None
        try:
            if candidate.architecture:
                config = get_config(candidate.architecture)
        except VitzooError:
            config = None
        if config is None and re.search(r"\.npz$", candidate.name):
            from pathlib import Path

            if Path(candidate.name).is_file():
                from vitzoo.weights.release import load_checkpoint

                config = load_checkpoint(candidate.name)[0]
        if config is not None:
            try:
                config.grid(res)
            except VitzooError as exc:
                raise VitzooError(f"--res {res} does not fit {candidate.name}: {exc.message}",
                                  exc.hint) from None


def reported_fields(result: CandidateResult, scores: dict[str, Any]) -> None:
    """Fill the flat fields of ``result`` from its saved scores: reported values, their 95 %
    intervals (Wilson for a proportion, mean +- std over the draws for k-shot), and the
    validation values the ranking uses."""
    from vitzoo.probe.choice import fewshot_column, value
    from vitzoo.probe.intervals import wilson

    report = scores["report"]
    result.scores = scores
    if scores.get("task") == "multilabel":
        _map_fields(result, scores)
        return
    result.linear_accuracy = report["linear"]["accuracy"]
    result.knn_accuracy = report["knn"]["accuracy"]
    result.fewshot = {k: {"mean": v["mean"], "std": v["std"]}
                      for k, v in sorted(report["fewshot"].items(), key=lambda kv: int(kv[0]))}
    n = report["examples"]
    result.intervals = {
        "linear_accuracy": list(wilson(report["linear"]["correct"], n)),
        "knn_accuracy": list(wilson(report["knn"]["correct"], n)),
        **{fewshot_column(k): [max(0.0, v["mean"] - v["std"]), min(1.0, v["mean"] + v["std"])]
           for k, v in result.fewshot.items()},
    }
    if result.throughput:
        result.intervals["img_per_sec"] = [result.throughput["img_per_sec_min"],
                                           result.throughput["img_per_sec_max"]]
    names = ["linear_accuracy", "knn_accuracy", *(fewshot_column(k) for k in result.fewshot)]
    result.validation = {name: value(result, name, "choose") for name in names}


def _map_fields(result: CandidateResult, scores: dict[str, Any]) -> None:
    """:func:`reported_fields` of a multi-label probe: mAP with its bootstrap interval."""
    from vitzoo.probe.choice import value

    report = scores["report"]
    result.linear_map, result.knn_map = report["linear"]["map"], report["knn"]["map"]
    result.intervals = {f"{name}_map": report[name]["interval"] for name in ("linear", "knn")}
    if result.throughput:
        result.intervals["img_per_sec"] = [result.throughput["img_per_sec_min"],
                                           result.throughput["img_per_sec_max"]]
    result.validation = {name: value(result, name, "choose") for name in ("linear_map", "knn_map")}


def probe_candidate(candidate: Candidate, data: Any, fingerprints: tuple[dict, ...],
                    settings: ProbeSettings, say: Callable[[str], None] = _say_nothing
                    ) -> CandidateResult:
    """Features, speed and scores of one candidate (raises VitzooError when it cannot run)."""
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.probe.cache import features_root, spec_key, write_json
    from vitzoo.probe.features import Extractor, load_backbone
    from vitzoo.probe.scores import score_all
    from vitzoo.probe.speed import measure

    result = CandidateResult(candidate.name, candidate.architecture,
                             published=dict(candidate.published), eval_split=data.eval_split)
    path = resolve_checkpoint(candidate.name)
    backbone = load_backbone(path, resolution=settings.res)
    extractor = Extractor(backbone, batch=settings.batch, dtype=settings.dtype)
    result.path, result.architecture = str(path), backbone.config.name
    result.representation, result.resolution = backbone.representation, backbone.resolution
    result.preprocessing = backbone.preprocessing.as_dict()
    entries = []
    splits = [("train", data.train), ("eval", data.eval)]
    if own_validation(data) is not None:  # candidates are chosen there
        splits.append((data.validation_split, data.validation))
    for (split, source), fingerprint in zip(splits, fingerprints, strict=True):
        entry = extractor.entry(source, fingerprint)
        missing = len(entry.missing())
        if missing:
            say(f"{candidate.name}: extracting {split} features ({len(source)} images, "
                f"{missing} of {entry.num_chunks} chunks to do)")
        entries.append(extractor.extract(source, fingerprint))
    result.throughput = measure(extractor)  # every run: a cached figure is never ranked
    result.img_per_sec = result.throughput["img_per_sec"]
    fraction = settings.val_fraction or VALIDATION_FRACTION
    score_spec = {"train": entries[0].key, "eval": entries[1].key, "shots": list(settings.shots),
                  "seeds": settings.seeds, "knn_k": settings.knn_k, "version": SCORES_VERSION,
                  "choose": entries[2].key if len(entries) > 2 else {"carve": fraction}}
    if data.task == "multilabel":  # no shots or seeds; its own method and version
        score_spec = {"train": entries[0].key, "eval": entries[1].key, "knn_k": settings.knn_k,
                      "task": data.task, "version": MULTILABEL_SCORES_VERSION,
                      "choose": score_spec["choose"]}
    score_path = features_root() / "scores" / f"{spec_key(score_spec)}.json"
    try:
        scores = json.loads(score_path.read_text())
        result.cached = True
    except (OSError, ValueError):
        train, evaluation = entries[0].load(), entries[1].load()
        chosen_on = {"validation": entries[2].load() if len(entries) > 2 else None,
                     "validation_name": data.validation_split or "validation",
                     "fraction": fraction}
        if data.task == "multilabel":
            from vitzoo.probe import multilabel

            scores = multilabel.score_all(train, evaluation, knn_k=settings.knn_k, **chosen_on)
        else:
            scores = score_all(train, evaluation, data.num_classes, shots=settings.shots,
                               seeds=settings.seeds, knn_k=settings.knn_k, **chosen_on)
        write_json(score_path, scores)
    reported_fields(result, scores)
    result.notes = list(scores.get("notes", []))
    return result


def _probe_each(candidates: Sequence[Any], data: Any, fingerprints: Any, settings: Any,
                say: Callable[[str], None]) -> list[CandidateResult]:
    results: list[CandidateResult] = []
    for candidate in candidates:
        if candidate.skip_reason:
            results.append(CandidateResult(candidate.name, candidate.architecture,
                                           published=candidate.published,
                                           skipped=candidate.skip_reason))
            continue
        try:
            results.append(probe_candidate(candidate, data, fingerprints, settings, say))
        except VitzooError as exc:
            say(f"skipped {candidate.name}: {exc.one_line()}")
            results.append(CandidateResult(candidate.name, candidate.architecture,
                                           published=candidate.published,
                                           eval_split=data.eval_split, skipped=exc.one_line()))
    return results


def probe(dataset: str | DataOptions, candidates: Sequence[Candidate],
          settings: ProbeSettings | None = None, *,
          say: Callable[[str], None] = _say_nothing, cluster: Cluster | None = None) -> ProbeReport:
    """Probe every candidate on ``dataset``; candidates that cannot run are skipped.

    The probed candidates are registered in the local catalog (``vitzoo list --local``).
    ``cluster``: run as one of several ``jax.distributed`` processes (every process calls
    this with the same arguments; each extracts its share of every batch and all get every
    feature, so all compute the same scores; process 0 registers them).
    """
    from vitzoo.atomic import output_dir
    from vitzoo.backbone import start
    from vitzoo.download.resolve import remember_offline
    from vitzoo.probe.cache import features_root, split_fingerprint
    from vitzoo.probe.features import refuse_streamed_across_processes
    from vitzoo.runs.registry import register_probe

    speed = start(cluster=cluster)  # runtime, processes, then the accelerator guard: before
    # candidates, whose errors are reported per candidate
    import jax

    main_process = jax.process_index() == 0
    output_dir(features_root(), "the feature cache (VITZOO_HOME/features)", create=False)
    options = dataset if isinstance(dataset, DataOptions) else DataOptions(dataset=dataset)
    settings = settings or ProbeSettings()
    settings.check()
    options.check()
    check_resolution(candidates, settings.res)
    data = open_probe_dataset(options, validation=settings.val_fraction is None)
    refuse_streamed_across_processes([data.train, data.eval, own_validation(data)],
                                     jax.process_count())
    fingerprints = tuple(split_fingerprint(s) for s in (data.train, data.eval, own_validation(data))
                         if s is not None)
    with remember_offline():  # offline: the reason is said for the first candidate only
        results = _probe_each(candidates, data, fingerprints, settings, say)
    notes = list(data.notes)
    skipped = [r for r in results if r.skipped]
    if skipped:
        notes.append(f"skipped {len(skipped)} of {len(results)} candidates: "
                     + "; ".join(f"{r.checkpoint} ({r.skipped})" for r in skipped))
    notes += list(dict.fromkeys(n for r in results for n in r.notes))  # same for every candidate
    report = ProbeReport(dataset=data.name, train_split=data.train_split,
                         eval_split=data.eval_split, num_classes=data.num_classes,
                         train_examples=len(data.train), eval_examples=len(data.eval),
                         results=results, notes=notes, validation_split=data.validation_split,
                         main_process=main_process, task=data.task)
    if main_process:
        register_probe(report, {**options.as_dict(), **asdict(settings)}, speed)
    return report
