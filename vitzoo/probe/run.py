"""``vitzoo probe``: every candidate's features and scores on one dataset.

The dataset is opened once (the same options as ``finetune``); each candidate is
resolved through the normal cache -> mirrors -> GCS -> Hugging Face chain, its train and
evaluation features are extracted into the cache (only the missing chunks), its
forward speed is measured once per (checkpoint, resolution, batch, dtype, device), and its
scores are computed from the cached features and saved, keyed by the feature entries and
the score settings. Rerunning with another candidate or more shots costs only what is new.

A candidate that cannot be fetched or loaded is skipped with its reason; the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitzoo.errors import VitzooError
from vitzoo.probe.candidates import Candidate
from vitzoo.probe.scores import DEFAULT_SHOTS

#: Bump when the scoring method changes, so saved scores are recomputed.
SCORES_VERSION = 1


@dataclass
class ProbeSettings:
    """What decides the numbers of a probe (the CLI options map onto it)."""

    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: int = 5
    knn_k: int = 10
    res: int | None = None
    batch: int = 64
    dtype: str = "float32"
    train_split: str | None = None
    eval_split: str | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    val_fraction: float = 0.1
    stream: bool = False


@dataclass
class CandidateResult:
    checkpoint: str
    architecture: str | None = None
    path: str | None = None
    representation: str | None = None
    resolution: int | None = None
    img_per_sec: float | None = None
    throughput: dict[str, Any] | None = None
    linear_accuracy: float | None = None
    knn_accuracy: float | None = None
    fewshot: dict[str, dict[str, Any]] = field(default_factory=dict)
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

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "train_split": self.train_split,
                "eval_split": self.eval_split, "num_classes": self.num_classes,
                "train_examples": self.train_examples, "eval_examples": self.eval_examples,
                "candidates": [r.as_dict() for r in self.results], "notes": self.notes}


def _say_nothing(_: str) -> None:
    return None


def open_probe_dataset(dataset: str, settings: ProbeSettings) -> Any:
    from vitzoo.data import open_dataset

    data = open_dataset(dataset, train_split=settings.train_split,
                        eval_split=settings.eval_split, data_dir=settings.data_dir,
                        manual_dir=settings.manual_dir, val_fraction=settings.val_fraction,
                        stream=True if settings.stream else None)
    if data.train is None or len(data.train) == 0:
        raise VitzooError(f"{dataset} has no training images", "a probe fits on the training split")
    return data


def _speed_record(backbone: Any, extractor: Any) -> dict[str, Any]:
    """The saved forward-speed measurement for this setup, measuring it once if missing."""
    from vitzoo.probe.cache import features_root, write_json

    device = extractor.devices[0]
    key = (f"res{backbone.resolution}-batch{extractor.global_batch}-{extractor.dtype}-"
           f"{getattr(device, 'device_kind', device.platform)}x{len(extractor.devices)}")
    path = features_root() / "speed" / f"{backbone.sha256}.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if key not in saved:
        saved[key] = extractor.throughput().as_dict()
        write_json(path, saved)
    return saved[key]


def probe_candidate(candidate: Candidate, data: Any, fingerprints: tuple[dict, dict],
                    settings: ProbeSettings, say: Callable[[str], None] = _say_nothing
                    ) -> CandidateResult:
    """Features, speed and scores of one candidate (raises VitzooError when it cannot run)."""
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.probe.cache import features_root, spec_key, write_json
    from vitzoo.probe.features import Extractor, load_backbone
    from vitzoo.probe.scores import score_all

    result = CandidateResult(candidate.name, candidate.architecture,
                             published=dict(candidate.published), eval_split=data.eval_split)
    path = resolve_checkpoint(candidate.name)
    backbone = load_backbone(path, resolution=settings.res)
    extractor = Extractor(backbone, batch=settings.batch, dtype=settings.dtype)
    result.path, result.architecture = str(path), backbone.config.name
    result.representation, result.resolution = backbone.representation, backbone.resolution
    entries = []
    for split, source, fingerprint in (("train", data.train, fingerprints[0]),
                                       ("eval", data.eval, fingerprints[1])):
        entry = extractor.entry(source, fingerprint)
        missing = len(entry.missing())
        if missing:
            say(f"{candidate.name}: extracting {split} features ({len(source)} images, "
                f"{missing} of {entry.num_chunks} chunks to do)")
        entries.append(extractor.extract(source, fingerprint))
    result.throughput = _speed_record(backbone, extractor)
    result.img_per_sec = result.throughput["img_per_sec"]
    score_spec = {"train": entries[0].key, "eval": entries[1].key, "shots": list(settings.shots),
                  "seeds": settings.seeds, "knn_k": settings.knn_k, "version": SCORES_VERSION}
    score_path = features_root() / "scores" / f"{spec_key(score_spec)}.json"
    try:
        scores = json.loads(score_path.read_text())
        result.cached = True
    except (OSError, ValueError):
        train, evaluation = entries[0].load(), entries[1].load()
        scores = score_all(train, evaluation, data.num_classes, shots=settings.shots,
                           seeds=settings.seeds, knn_k=settings.knn_k)
        write_json(score_path, scores)
    result.scores = scores
    result.linear_accuracy = scores["linear_accuracy"]
    result.knn_accuracy = scores["knn_accuracy"]
    result.fewshot = {k: {"mean": v["mean"], "std": v["std"]} for k, v in scores["fewshot"].items()}
    result.notes = list(scores.get("notes", []))
    return result


def probe(dataset: str, candidates: Sequence[Candidate], settings: ProbeSettings | None = None,
          *, say: Callable[[str], None] = _say_nothing) -> ProbeReport:
    """Probe every candidate on ``dataset``; candidates that cannot run are skipped."""
    from vitzoo.probe.cache import split_fingerprint
    from vitzoo.runtime import require_accelerator

    require_accelerator()  # before candidates: their errors are reported per candidate
    settings = settings or ProbeSettings()
    data = open_probe_dataset(dataset, settings)
    fingerprints = (split_fingerprint(data.train), split_fingerprint(data.eval))
    results = []
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
    notes = list(data.notes)
    skipped = [r for r in results if r.skipped]
    if skipped:
        notes.append(f"skipped {len(skipped)} of {len(results)} candidates: "
                     + "; ".join(f"{r.checkpoint} ({r.skipped})" for r in skipped))
    notes += list(dict.fromkeys(n for r in results for n in r.notes))  # same for every candidate
    return ProbeReport(dataset=data.name, train_split=data.train_split, eval_split=data.eval_split,
                       num_classes=data.num_classes, train_examples=len(data.train),
                       eval_examples=len(data.eval), results=results, notes=notes)
