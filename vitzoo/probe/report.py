"""Probe results for people and scripts: sorting, Pareto front, table rows, CSV, plot.

Published catalog numbers travel beside the measured ones under a ``published`` label:
they come from the release (other data, other hardware), never from this machine.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitzoo.catalog.frame import Frame
from vitzoo.errors import VitzooError
from vitzoo.probe.choice import (
    MAP_SCORES,
    SPEED,
    choose,
    display_name,
    rank,
    score_name,
    score_names,
    value,
)
from vitzoo.probe.run import CandidateResult
from vitzoo.text import percent_axis


def check_sort(sort: str, shots: Sequence[int], option: str = "--sort",
               task: str = "multiclass") -> str:
    """The column name ``sort`` means on a ``task`` dataset (fails before any work on an
    unknown or unmeasured score)."""
    return score_name(sort, shots, option, task)


def sort_results(results: Sequence[CandidateResult], score: str) -> list[CandidateResult]:
    """Best first by the validation ``score`` (a column name); skipped and unknown last."""
    return rank(results, score)


def pareto(results: Sequence[CandidateResult], score: str) -> list[CandidateResult]:
    """Candidates no other beats on both the validation score and the measured img/s."""
    from vitzoo.catalog.recommend import pareto_indices

    known = [r for r in results if value(r, score) is not None and r.img_per_sec is not None]
    return [known[i] for i in pareto_indices([(value(r, score), r.img_per_sec) for r in known])]


def shot_keys(results: Sequence[CandidateResult]) -> list[str]:
    """Few-shot keys in numeric order ("1", "5", "10", "25")."""
    return sorted({k for r in results for k in r.fewshot}, key=int)


def short_name(checkpoint: str) -> str:
    """What a person calls a candidate (a local run's name, a file's stem, a catalog name)."""
    return display_name(checkpoint)


def _plus_minus(centre: float, low_high: Sequence[float] | None, scale: float,
                digits: int) -> str:
    if not low_high:
        return f"{scale * centre:,.{digits}f}"
    half = max(centre - low_high[0], low_high[1] - centre)
    return f"{scale * centre:,.{digits}f} \u00b1{scale * half:,.{digits}f}"


def _published_cell(key: str, value: Any) -> Any:
    """Published fractions read as percentages; other published values as they are."""
    if isinstance(value, float) and 0.0 <= value <= 1.0 and "per_sec" not in key:
        return f"{100 * value:.1f}"
    return value


def table_frame(results: Sequence[CandidateResult], score: str) -> tuple[Frame, list[str]]:
    """The probe as a table for people, and the lines that say what its cells mean.

    Headers are the CSV/JSON column names (the names ``--sort`` takes); cells are percentages
    with the half-width of their 95 % interval (the wider side of Wilson's; +- std over the
    draws for k-shot); img/s is the median timed batch +- the farthest one.
    """
    published = sorted({k for r in results for k in r.published})
    accuracy = score_names(results)[:-1]
    columns = (["checkpoint"] + ([] if score == SPEED else [f"val_{score}"])
               + [SPEED, *accuracy, "architecture"] + [f"published_{k}" for k in published])
    rows = []
    for r in results:
        row: dict[str, Any] = {"checkpoint": short_name(r.checkpoint),
                               "architecture": r.architecture}
        if r.skipped:
            row[SPEED] = "skipped"
        else:
            if score != SPEED:
                chosen_on = value(r, score)
                row[f"val_{score}"] = None if chosen_on is None else f"{100 * chosen_on:.1f}"
            row[SPEED] = _plus_minus(r.img_per_sec, r.intervals.get(SPEED), 1.0, 0)
            for name in accuracy:
                reported = value(r, name, "report")
                row[name] = (None if reported is None
                             else _plus_minus(reported, r.intervals.get(name), 100.0, 1))
        for k in published:
            row[f"published_{k}"] = _published_cell(k, r.published.get(k))
        rows.append(row)
    measured = [r for r in results if not r.skipped]
    speed = (measured[0].throughput or {}) if measured else {}
    notes = [
        ("mAP in %, \u00b1 the wider side of the 95% bootstrap interval over the images"
         if set(accuracy) <= set(MAP_SCORES) else
         "accuracies in %, \u00b1 the wider side of the 95% Wilson interval (k-shot: \u00b1 std "
         "over the seeded draws)")
        + "; val_ columns are on the validation part and rank the table, the others are on "
        "the evaluation split and choose nothing",
    ]
    if speed:
        notes.append(f"img/s measured now: median of {speed.get('timed_batches')} timed batches "
                     f"after {speed.get('warmup_batches')} warm-up, \u00b1 the farthest batch; "
                     f"batch {speed.get('batch')}, {speed.get('dtype')}, "
                     f"{speed.get('devices')} x {speed.get('device')}"
                     + _products(speed.get("matmul")))
    if published:
        notes.append("published_ columns come from the catalog (other data and hardware), "
                     "not from this run")
    return Frame.from_rows(rows, columns), notes


def _products(matmul: dict[str, Any] | None) -> str:
    """``; matrix products: onednn (autotune trial)``: the backend the speed was timed with."""
    if not matmul:
        return ""
    source = (matmul.get("autotune") or {}).get("source")
    return f"; matrix products: {matmul.get('backend')}" + (f" (autotune {source})" if source else "")


def json_record(result: CandidateResult) -> dict[str, Any]:
    """One candidate for scripts: the documented fields first, details after.

    Fractions throughout; ``intervals`` holds each score's 95 % interval, ``validation`` the
    values the ranking uses; per-image results stay in the saved scores, not here.
    """
    out = {"checkpoint": result.checkpoint, "name": short_name(result.checkpoint),
           "architecture": result.architecture, "img_per_sec": result.img_per_sec,
           **_scores(result), "fewshot": result.fewshot, "intervals": result.intervals,
           "validation": result.validation, "eval_split": result.eval_split,
           "skipped": result.skipped}
    other_task = {"linear_accuracy", "knn_accuracy", "linear_map", "knn_map"}  # not this one's
    rest = {k: v for k, v in result.as_dict().items() if k not in out and k not in other_task}
    rest["scores"] = _without_per_image(rest.get("scores") or {})
    return {**out, **rest}


def _scores(result: CandidateResult) -> dict[str, float | None]:
    """The linear and kNN scores a candidate's dataset has: mAP for multi-label, else accuracy."""
    if result.linear_map is not None:
        return {"linear_map": result.linear_map, "knn_map": result.knn_map}
    return {"linear_accuracy": result.linear_accuracy, "knn_accuracy": result.knn_accuracy}


def _without_per_image(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _without_per_image(v) for k, v in tree.items() if k != "per_image"}
    return tree


def records(results: Sequence[CandidateResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per candidate and the column order: what the CSV and the DataFrame hold."""
    shots = shot_keys(results)
    published = sorted({k for r in results for k in r.published})
    scores = score_names(results)[:-1]
    columns = (["checkpoint", "name", "architecture", SPEED, "img_per_sec_min", "img_per_sec_max"]
               + [c for k in scores for c in (k, f"{k}_low", f"{k}_high")]
               + [f"fewshot_{k}_std" for k in shots] + [f"val_{k}" for k in scores]
               + ["eval_split", "eval_examples", "validation_examples", "resolution",
                  "representation", "preprocessing", "throughput_batch", "throughput_dtype",
                  "throughput_device", "throughput_timed_batches"]
               + [f"published_{k}" for k in published] + ["skipped"])
    rows = []
    for r in results:
        speed = r.throughput or {}
        row: dict[str, Any] = {
            "checkpoint": r.checkpoint, "name": short_name(r.checkpoint),
            "architecture": r.architecture, SPEED: r.img_per_sec,
            "img_per_sec_min": speed.get("img_per_sec_min"),
            "img_per_sec_max": speed.get("img_per_sec_max"), "eval_split": r.eval_split,
            "eval_examples": (r.scores.get("report") or {}).get("examples"),
            "validation_examples": (r.scores.get("choose") or {}).get("examples"),
            "resolution": r.resolution, "representation": r.representation,
            "preprocessing": _pixels(r.preprocessing), "throughput_batch": speed.get("batch"),
            "throughput_dtype": speed.get("dtype"), "throughput_device": speed.get("device"),
            "throughput_timed_batches": speed.get("timed_batches"), "skipped": r.skipped}
        for name in scores:
            low_high = r.intervals.get(name) or [None, None]
            row[name] = value(r, name, "report")
            row[f"{name}_low"], row[f"{name}_high"] = low_high
            row[f"val_{name}"] = value(r, name, "choose")
        for k in shots:
            row[f"fewshot_{k}_std"] = r.fewshot.get(k, {}).get("std")
        for k in published:
            row[f"published_{k}"] = r.published.get(k)
        rows.append({c: row.get(c) for c in columns})
    return columns, rows


def _pixels(recorded: dict[str, Any] | None) -> str | None:
    """A candidate's preprocessing in one line (which rule, read from which file)."""
    from vitzoo.data.preprocess import Preprocessing

    return Preprocessing.from_dict(recorded).describe() if recorded else None


def to_csv(results: Sequence[CandidateResult]) -> str:
    columns, rows = records(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return buffer.getvalue()


def plot_format(out: str | Path) -> str:
    """``png`` or ``svg`` from the file name (checked before any work is done)."""
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise VitzooError(f"--plot {out} must end in .png or .svg", "e.g. --plot probe.png")
    from vitzoo.atomic import output_file

    output_file(out, "the plot (--plot)")
    return fmt


def plot(results: Sequence[CandidateResult], sort: str, out: str | Path, *,
         title: str = "") -> Path:
    """Score against measured img/s, the Pareto front joined; PNG or SVG by suffix (atomic)."""
    from vitzoo.atomic import atomic_path

    out = Path(out)
    fmt = plot_format(out)
    points = [(r, value(r, sort), r.img_per_sec) for r in results
              if value(r, sort) is not None and r.img_per_sec is not None]
    if not points:
        raise VitzooError("nothing to plot: every candidate was skipped",
                          "see the skipped reasons above")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[2] for p in points], [p[1] for p in points], color="tab:blue")
    for r, s, v in points:
        ax.annotate(short_name(r.checkpoint)[:24], (v, s), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    front = pareto(results, sort)
    ax.plot([r.img_per_sec for r in front], [value(r, sort) for r in front],
            color="tab:orange", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("measured img/s on this machine")
    ax.set_ylabel(f"{sort} on the validation part" if sort != SPEED else "img/s")
    if sort != SPEED:  # scores are fractions; the axis reads as percentages like every table
        percent_axis(ax.yaxis)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)
    return out


def recommendation(results: Sequence[CandidateResult], score: str, *,
                   eval_split: str | None = None) -> dict[str, Any]:
    """``recommend --data``: the choice on validation (:func:`vitzoo.probe.choice.choose`) and,
    for comparison only, the probed candidate with the best published ImageNet fine-tune."""
    choice = choose(results, score, eval_split=eval_split)
    by_published = [r for r in results if r.published.get("adapt_final_test") is not None]
    published = max(by_published, key=lambda r: r.published["adapt_final_test"], default=None)
    choice["published_choice"] = None if published is None else {
        "checkpoint": published.checkpoint, "architecture": published.architecture,
        "published": published.published, "validation_score": value(published, score)}
    choice["published"] = {r.checkpoint: r.published for r in results if r.published}
    return choice
