"""Probe results for people and scripts: sorting, Pareto front, table rows, CSV, plot.

Published catalog numbers travel beside the measured ones under a ``published`` label:
they come from the release (other data, other hardware), never from this machine.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitzoo.errors import VitzooError
from vitzoo.probe.run import CandidateResult

SORT_HELP = "linear (full-train probe), knn, Nshot (e.g. 10shot) or speed"


def score_of(result: CandidateResult, sort: str) -> float | None:
    """The value ``sort`` names for one result (None when unknown or skipped)."""
    if result.skipped:
        return None
    if sort == "linear":
        return result.linear_accuracy
    if sort == "knn":
        return result.knn_accuracy
    if sort == "speed":
        return result.img_per_sec
    match = re.fullmatch(r"(\d+)-?shots?", sort)
    if match:
        entry = result.fewshot.get(str(int(match.group(1))))
        return None if entry is None else entry["mean"]
    raise VitzooError(f"unknown --sort {sort!r}", f"use {SORT_HELP}")


def check_sort(sort: str) -> None:
    """Fail on an unknown ``--sort`` before any work is done."""
    score_of(CandidateResult("-", fewshot={}), sort)


def sort_results(results: Sequence[CandidateResult], sort: str) -> list[CandidateResult]:
    """Best first; skipped and unknown scores last, in their original order."""
    for r in results:
        score_of(r, sort)  # validate the name even when everything was skipped
    known = [r for r in results if score_of(r, sort) is not None]
    rest = [r for r in results if score_of(r, sort) is None]
    return sorted(known, key=lambda r: -float(score_of(r, sort))) + rest  # type: ignore[arg-type]


def pareto(results: Sequence[CandidateResult], sort: str) -> list[CandidateResult]:
    """Candidates no other beats on both the score and the measured img/s."""
    points = [(r, score_of(r, sort), r.img_per_sec) for r in results
              if score_of(r, sort) is not None and r.img_per_sec is not None]
    front = [r for r, s, v in points
             if not any(s2 >= s and v2 >= v and (s2 > s or v2 > v) for _, s2, v2 in points)]
    return sorted(front, key=lambda r: -float(r.img_per_sec or 0.0))


def shot_keys(results: Sequence[CandidateResult]) -> list[str]:
    return sorted({k for r in results for k in r.fewshot}, key=int)


def pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def short_name(checkpoint: str) -> str:
    """A path's file stem; names stay as they are."""
    return Path(checkpoint).stem if checkpoint.endswith(".npz") else checkpoint


def table_rows(results: Sequence[CandidateResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the rich table (percentages, ± std over the seeded draws)."""
    shots = shot_keys(results)
    header = (["checkpoint", "arch", "img/s"] + [f"{k}-shot" for k in shots]
              + ["linear", "kNN", "published upstream val", "published ImageNet ft",
                 "published img/s"])
    rows = []
    for r in results:
        if r.skipped:
            blank = [""] * (len(header) - 3)
            rows.append([short_name(r.checkpoint), r.architecture or "?", "skipped", *blank])
            continue
        few = [(f"{r.fewshot[k]['mean']:.1%} ± {r.fewshot[k]['std']:.1%}" if k in r.fewshot
                else "n/a") for k in shots]
        pub = r.published
        rows.append([short_name(r.checkpoint), r.architecture or "?", f"{r.img_per_sec:,.0f}", *few,
                     pct(r.linear_accuracy), pct(r.knn_accuracy), pct(pub.get("final_val")),
                     pct(pub.get("adapt_final_test")),
                     "?" if pub.get("infer_samples_per_sec") is None
                     else f"{pub['infer_samples_per_sec']:,.1f}"])
    return header, rows


def json_record(result: CandidateResult) -> dict[str, Any]:
    """One candidate for scripts: the documented fields first, details after."""
    out = {"checkpoint": result.checkpoint, "architecture": result.architecture,
           "img_per_sec": result.img_per_sec, "linear_accuracy": result.linear_accuracy,
           "knn_accuracy": result.knn_accuracy, "fewshot": result.fewshot,
           "eval_split": result.eval_split, "skipped": result.skipped}
    return {**out, **{k: v for k, v in result.as_dict().items() if k not in out}}


def records(results: Sequence[CandidateResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per candidate and the column order: what the CSV and the DataFrame hold."""
    shots = shot_keys(results)
    published = sorted({k for r in results for k in r.published})
    columns = (["checkpoint", "architecture", "img_per_sec", "linear_accuracy", "knn_accuracy"]
               + [f"fewshot_{k}_{s}" for k in shots for s in ("mean", "std")]
               + ["eval_split", "resolution", "throughput_batch", "throughput_dtype",
                  "throughput_device"] + [f"published_{k}" for k in published] + ["skipped"])
    rows = []
    for r in results:
        speed = r.throughput or {}
        row = {"checkpoint": r.checkpoint, "architecture": r.architecture,
               "img_per_sec": r.img_per_sec, "linear_accuracy": r.linear_accuracy,
               "knn_accuracy": r.knn_accuracy, "eval_split": r.eval_split,
               "resolution": r.resolution, "throughput_batch": speed.get("batch"),
               "throughput_dtype": speed.get("dtype"), "throughput_device": speed.get("device"),
               "skipped": r.skipped}
        for k in shots:
            for s in ("mean", "std"):
                row[f"fewshot_{k}_{s}"] = r.fewshot.get(k, {}).get(s)
        for k in published:
            row[f"published_{k}"] = r.published.get(k)
        rows.append({c: row[c] for c in columns})
    return columns, rows


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
    return fmt


def plot(results: Sequence[CandidateResult], sort: str, out: str | Path, *,
         title: str = "") -> Path:
    """Score against measured img/s, the Pareto front joined; PNG or SVG by suffix (atomic)."""
    from vitzoo.atomic import atomic_path

    out = Path(out)
    fmt = plot_format(out)
    points = [(r, score_of(r, sort), r.img_per_sec) for r in results
              if score_of(r, sort) is not None and r.img_per_sec is not None]
    if not points:
        raise VitzooError("nothing to plot: every candidate was skipped",
                          "see the skipped reasons above")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[2] for p in points], [p[1] for p in points], color="tab:blue")
    for r, s, v in points:
        ax.annotate(r.architecture or r.checkpoint[:24], (v, s), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    front = pareto(results, sort)
    ax.plot([r.img_per_sec for r in front], [score_of(r, sort) for r in front],
            color="tab:orange", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("measured img/s on this machine")
    ax.set_ylabel(f"{sort} accuracy" if sort != "speed" else "img/s")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)
    return out


def recommendation(results: Sequence[CandidateResult], sort: str) -> dict[str, Any]:
    """``recommend --data``: the best measured candidate, why, and the published pick beside it.

    The published recommendation is the candidate ``vitzoo recommend`` would give for the
    same architecture (the catalog's choice); here it is whichever probed candidate carries
    the best published ImageNet fine-tune accuracy, for comparison only.
    """
    ranked = [r for r in sort_results(results, sort) if score_of(r, sort) is not None]
    if not ranked:
        raise VitzooError("no candidate could be probed, so there is nothing to recommend",
                          "see the skipped reasons; fetch a checkpoint or name local files "
                          "with --candidates")
    best = ranked[0]
    by_published = [r for r in results if r.published.get("adapt_final_test") is not None]
    published = max(by_published, key=lambda r: r.published["adapt_final_test"], default=None)
    why = (f"highest {sort} accuracy on {best.eval_split} of {len(ranked)} probed candidates "
           f"({score_of(best, sort):.1%})" if sort != "speed" else
           f"fastest of {len(ranked)} probed candidates")
    return {"checkpoint": best.checkpoint, "architecture": best.architecture,
            "score": score_of(best, sort), "score_name": sort, "img_per_sec": best.img_per_sec,
            "linear_accuracy": best.linear_accuracy, "knn_accuracy": best.knn_accuracy,
            "fewshot": best.fewshot, "eval_split": best.eval_split, "why": why,
            "published_choice": None if published is None else {
                "checkpoint": published.checkpoint, "architecture": published.architecture,
                "published": published.published,
                "measured_score": score_of(published, sort)},
            "ranking": [{"checkpoint": r.checkpoint, "score": score_of(r, sort),
                         "img_per_sec": r.img_per_sec} for r in ranked],
            "skipped": [{"checkpoint": r.checkpoint, "reason": r.skipped}
                        for r in results if r.skipped]}
