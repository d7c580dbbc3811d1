"""Choosing between probed candidates: on validation, with its margin, never on test.

The rule (``probe --sort`` and ``recommend --data --by``):

1. Every candidate is ranked by one score (:data:`DEFAULT_SCORE` unless told) measured on
   the **validation part** of the training split (see :mod:`vitzoo.probe.scores`). The
   evaluation split's numbers are reported beside it and never used to rank: the best of
   several noisy test accuracies is biased upwards (the winner's curse).
2. The choice states its margin over the runner-up on that same validation part and whether
   the two are distinguishable there: an exact paired test on the same images
   (:func:`vitzoo.probe.intervals.paired_test`), at level :data:`~vitzoo.probe.intervals.ALPHA`;
   for img/s, whether the two spreads (fastest..slowest timed batch) overlap.
3. The explanation lists every score of the choice beside the runner-up's, so a score that
   does separate them (kNN, a k-shot) is seen even when the ranking score does not.
4. The choice is *not reliable* when only one candidate was measured, or when the
   validation part or the evaluation split has fewer than :data:`MIN_IMAGES_PER_CLASS`
   images in some class.

On a multi-label dataset the scores are mAP (``linear_map``, ``knn_map``;
:mod:`vitzoo.probe.multilabel`) and the paired test is a paired bootstrap of the mAP
difference over the same validation images (mAP is no sum over images, so McNemar's test
does not apply); few-shot scores are not measured there.

Why the full-train linear probe is the default: it is the head ``finetune --head-only``
trains (so it predicts what the user gets from that command), and it uses every training
image, so it is the least noisy score. The ViT paper ranks pre-trained models with few-shot
linear probes instead; they are the better guide when the user will have only a few labelled
images per class, so ``--by 10shot`` (any k in ``--shots``) is one option away.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from vitzoo.errors import VitzooError
from vitzoo.probe.intervals import ALPHA, paired_test
from vitzoo.text import percent

DEFAULT_SCORE = "linear_accuracy"
SPEED = "img_per_sec"
#: Fewer evaluation (or validation) images than this in some class: one image moves that
#: class's accuracy by more than 10 points, and the choice is reported as not reliable.
MIN_IMAGES_PER_CLASS = 10
SCORE_HELP = ("linear_accuracy (or linear), knn_accuracy (knn), fewshot_K_mean (Kshot, for a K "
              "in --shots) or img_per_sec (speed); on a multi-label dataset linear_map (linear) "
              "or knn_map (knn)")
#: The multi-label scores (mAP; :mod:`vitzoo.probe.multilabel`) and their single-label twins.
MAP_SCORES = {"linear_map": "linear_accuracy", "knn_map": "knn_accuracy"}


def fewshot_column(k: int | str) -> str:
    return f"fewshot_{int(k)}_mean"


def score_name(name: str, shots: Sequence[int], option: str = "--sort",
               task: str = "multiclass") -> str:
    """The column name a ranking score goes by (its CSV/JSON name), from any accepted spelling.

    A k-shot score must be among ``shots``: ranking by a score that was never measured would
    silently rank nothing. On a multi-label ``task`` the linear and kNN scores are mAP
    (``linear``, the default ``linear_accuracy``, mean ``linear_map``) and few-shot scores
    are refused (not measured there); on a single-label one the ``_map`` names are refused.
    """
    column = _column(name, shots, option)
    if task == "multilabel":
        if column.startswith("fewshot_"):
            raise VitzooError(f"{option} {name}: few-shot scores are not measured on a multi-label "
                              "dataset (k images per class is no sample when an image carries "
                              "several classes)", "use linear_map, knn_map or img_per_sec")
        return {v: k for k, v in MAP_SCORES.items()}.get(column, column)
    if column in MAP_SCORES:
        raise VitzooError(f"{option} {name}: mAP scores belong to multi-label datasets and this "
                          "one is single-label", f"use {MAP_SCORES[column]}, or add --task multilabel")
    return column


def _column(name: str, shots: Sequence[int], option: str) -> str:
    text = name.strip().lower()
    plain = text[4:] if text.startswith("val_") else text
    if plain in ("linear", "linear_accuracy"):
        return "linear_accuracy"
    if plain in ("knn", "knn_accuracy"):
        return "knn_accuracy"
    if plain in ("map", *MAP_SCORES):
        return "knn_map" if plain == "knn_map" else "linear_map"
    if plain in ("speed", SPEED):
        return SPEED
    match = re.fullmatch(r"(\d+)-?shots?|fewshot_(\d+)(?:_mean)?", plain)
    if match:
        k = int(match.group(1) or match.group(2))
        if k not in shots:
            raise VitzooError(f"{option} {name}: {k} is not among --shots "
                              f"({','.join(str(s) for s in shots)})",
                              f"add it, e.g. --shots {','.join(str(s) for s in sorted({*shots, k}))}")
        return fewshot_column(k)
    raise VitzooError(f"unknown {option} {name!r}", f"use {SCORE_HELP}")


def _side(result: Any, side: str) -> dict[str, Any]:
    return (result.scores or {}).get(side) or {}


def _entry(result: Any, score: str, side: str) -> dict[str, Any] | None:
    scores = _side(result, side)
    if score in ("linear_accuracy", "linear_map"):
        return scores.get("linear")
    if score in ("knn_accuracy", "knn_map"):
        return scores.get("knn")
    match = re.fullmatch(r"fewshot_(\d+)_mean", score)
    return (scores.get("fewshot") or {}).get(match.group(1)) if match else None


def value(result: Any, score: str, side: str = "choose") -> float | None:
    """``score`` of one result on the choosing (validation) or reported side; None if unknown."""
    if result.skipped:
        return None
    if score == SPEED:
        return result.img_per_sec
    entry = _entry(result, score, side)
    if entry is None:
        return None
    key = "map" if score in MAP_SCORES else "accuracy" if score.endswith("_accuracy") else "mean"
    return entry.get(key)


def rank(results: Sequence[Any], score: str) -> list[Any]:
    """Best first by the choosing-side ``score``; unknown and skipped last, in their order."""
    known = [r for r in results if value(r, score) is not None]
    rest = [r for r in results if value(r, score) is None]
    return sorted(known, key=lambda r: -float(value(r, score))) + rest  # type: ignore[arg-type]


def compare(first: Any, second: Any, score: str) -> dict[str, Any]:
    """Is ``first`` distinguishable from ``second`` on ``score``? (the test named in words)."""
    if score == SPEED:
        a, b = first.throughput or {}, second.throughput or {}
        apart = (a.get("img_per_sec_min", 0) > b.get("img_per_sec_max", float("inf"))
                 or b.get("img_per_sec_min", 0) > a.get("img_per_sec_max", float("inf")))
        return {"test": "whether the spreads (slowest..fastest timed batch) overlap", "p_value": None,
                "distinguishable": bool(apart)}
    from vitzoo.probe.scores import unpack

    ea, eb = _entry(first, score, "choose"), _entry(second, score, "choose")
    if not ea or not eb or "per_image" not in ea or "per_image" not in eb:
        return {"test": None, "p_value": None, "distinguishable": None}
    if score in MAP_SCORES:
        from vitzoo.probe.multilabel import paired_map_test

        test = paired_map_test(ea, eb, _side(first, "choose")["per_image"]["targets"])
        images = _side(first, "choose").get("examples")
        return {"test": f"paired bootstrap of the mAP difference over the same {images} "
                        f"validation images ({test['resamples']} resamples)",
                "p_value": test["p_value"], "distinguishable": test["p_value"] < ALPHA}
    a, b = unpack(ea["per_image"]), unpack(eb["per_image"])
    test = paired_test(a.tolist(), b.tolist())
    name = ("exact McNemar test" if score in ("linear_accuracy", "knn_accuracy")
            else "exact sign test on each image's correct draws")
    return {"test": f"{name} on the same {len(a)} validation images (paired)",
            "p_value": test["p_value"], "distinguishable": test["p_value"] < ALPHA,
            "images_first_better": test["first_better"],
            "images_second_better": test["second_better"]}


def score_names(results: Sequence[Any]) -> list[str]:
    """Every ranking score present, in display order (few-shot by numeric k)."""
    if any(getattr(r, "linear_map", None) is not None for r in results):
        return [*MAP_SCORES, SPEED]
    shots = sorted({k for r in results for k in (r.fewshot or {})}, key=int)
    return ["linear_accuracy", "knn_accuracy", *(fewshot_column(k) for k in shots), SPEED]


def reliability(chosen: Any, runner_up: Any | None, sizes: dict[str, Any]) -> list[str]:
    """Why the choice is not reliable (empty: nothing known against it)."""
    reasons = []
    if runner_up is None:
        reasons.append("only one candidate was measured, so nothing was compared")
    for side, words in (("choose", "the validation part"), ("report", "the evaluation split")):
        smallest = _side(chosen, side).get("smallest_class")
        if smallest is not None and smallest < MIN_IMAGES_PER_CLASS:
            reasons.append(f"{words} has {smallest} image(s) in its smallest class "
                           f"(fewer than {MIN_IMAGES_PER_CLASS})")
    return reasons


def side_by_side(chosen: Any, runner_up: Any | None, names: Sequence[str]) -> dict[str, Any]:
    """Per score: the choice's and the runner-up's validation and reported values, and the test."""
    out = {}
    for name in names:
        row: dict[str, Any] = {}
        for label, result in (("chosen", chosen), ("runner_up", runner_up)):
            if result is not None:
                row[label] = {"validation": value(result, name, "choose"),
                              "reported": value(result, name, "report"),
                              "interval": (result.intervals or {}).get(name)}
        if runner_up is not None:
            row.update(compare(chosen, runner_up, name))
        out[name] = row
    return out


def choose(results: Sequence[Any], score: str, *, eval_split: str | None) -> dict[str, Any]:
    """The choice between measured candidates by ``score``, with its margin and caveats."""
    ranked = [r for r in rank(results, score) if value(r, score) is not None]
    if not ranked:
        raise VitzooError("no candidate could be probed, so there is nothing to recommend",
                          "see the skipped reasons; fetch a checkpoint or name local files "
                          "with --candidates")
    best = ranked[0]
    runner = ranked[1] if len(ranked) > 1 else None
    choose_side = _side(best, "choose")
    margin = None if runner is None else value(best, score) - value(runner, score)
    test = compare(best, runner, score) if runner is not None else {
        "test": None, "p_value": None, "distinguishable": None}
    reasons = reliability(best, runner, {})
    return {
        "checkpoint": best.checkpoint, "name": display_name(best.checkpoint),
        "architecture": best.architecture, "by": score,
        "choosing_split": "validation" if score != SPEED else "timed batches in this run",
        "choosing_split_detail": choose_side.get("split"),
        "choosing_examples": choose_side.get("examples"),
        "reported_split": eval_split,
        "reported_examples": _side(best, "report").get("examples"),
        "value": value(best, score), "reported_value": value(best, score, "report"),
        "reported_interval": (best.intervals or {}).get(score),
        "img_per_sec": best.img_per_sec, "img_per_sec_spread": (best.intervals or {}).get(SPEED),
        "runner_up": None if runner is None else runner.checkpoint,
        "runner_up_value": None if runner is None else value(runner, score),
        "margin": margin, **{k: test.get(k) for k in ("test", "p_value", "distinguishable")},
        "reliable": not reasons, "not_reliable_because": reasons,
        "scores": side_by_side(best, runner, score_names(ranked)),
        "ranking": [{"checkpoint": r.checkpoint, "validation": value(r, score),
                     "reported": value(r, score, "report"), "img_per_sec": r.img_per_sec}
                    for r in ranked],
        "skipped": [{"checkpoint": r.checkpoint, "reason": r.skipped}
                    for r in results if r.skipped],
    }


def display_name(checkpoint: str) -> str:
    """What a person calls a candidate: a local run's name (not ``final``), a file's stem, a name."""
    from pathlib import Path

    if not checkpoint.endswith(".npz"):
        return checkpoint
    path = Path(checkpoint)
    run_json = path.parent / "run.json"
    if run_json.is_file():
        import json

        try:
            return str(json.loads(run_json.read_text()).get("run_name") or path.parent.name)
        except (OSError, ValueError):
            return path.parent.name
    return path.stem


def pct(fraction: float | None, digits: int = 1) -> str:
    return percent(fraction, digits)


def explain(choice: dict[str, Any]) -> list[str]:
    """The choice in sentences for people (percentages), every score beside the runner-up's."""
    by, speed = choice["by"], choice["by"] == SPEED
    fmt = (lambda v: "?" if v is None else f"{v:,.1f} img/s") if speed else pct
    lines = [f"recommended: {choice['name']} ({choice['architecture'] or '?'}), best {by} on "
             f"{choice['choosing_split']}"
             + ("" if speed else f" ({choice['choosing_examples']} images held out of the "
                                 f"training split)") + f": {fmt(choice['value'])}"]
    if not speed:
        low_high = choice["reported_interval"]
        lines.append(f"reported on {choice['reported_split']} ({choice['reported_examples']} "
                     f"images, not used to choose): {pct(choice['reported_value'])}"
                     + (f" (95% interval {pct(low_high[0])}..{pct(low_high[1])})"
                        if low_high else ""))
    if choice["runner_up"] is not None:
        gap = (f"{choice['margin']:,.1f} img/s" if speed
               else f"{100 * choice['margin']:.1f} points")
        verdict = {True: "distinguishable", False: "NOT distinguishable",
                   None: "not tested"}[choice["distinguishable"]]
        p = "" if choice["p_value"] is None else f", p={choice['p_value']:.3g}"
        lines.append(f"margin over the runner-up {display_name(choice['runner_up'])}: {gap} "
                     f"({verdict}: {choice['test']}{p})")
        lines.append("scores (validation / reported), chosen vs runner-up:")
        for name, row in choice["scores"].items():
            cells = []
            for label in ("chosen", "runner_up"):
                entry = row.get(label) or {}
                if name == SPEED:  # measured once, in this run: no split
                    v = entry.get("validation")
                    cells.append("?" if v is None else f"{v:,.0f} img/s")
                else:
                    cells.append(f"{pct(entry.get('validation'))} / {pct(entry.get('reported'))}")
            mark = {True: "separates", False: "does not separate", None: ""}[
                row.get("distinguishable")]
            lines.append(f"  {name:<16} {cells[0]:>15} vs {cells[1]:>15}  {mark}")
    if not choice["reliable"]:
        lines.append("not reliable: " + "; ".join(choice["not_reliable_because"]))
    return lines
