"""``vitzoo recommend``: which checkpoint to start from.

The paper's rule (section 4.5): per architecture, take the ImageNet-21k
(300 epoch) pre-training with the best *upstream validation* accuracy
(``final_val``) and fine-tune only that one. We rank only when ``final_val`` is
known for every candidate of an architecture (i.e. a real index.csv was
indexed); otherwise ranking a handful of known values would be misleading, and
we fall back to the published recommendation and say so.

With ``adapt_ds`` the choice is the fine-tune with the best ``adapt_final_val``.
Test accuracy is never used to choose: picking by test score overfits the test
set and makes the reported number optimistic.
"""

from __future__ import annotations

from typing import Any

from vitzoo.catalog.frame import Frame
from vitzoo.catalog.query import Filters, apply_filters
from vitzoo.errors import VitzooError

OUTPUT_COLUMNS = (
    "name", "ds", "aug", "wd", "do", "sd", "final_val", "adapt_ds", "adapt_resolution",
    "adapt_lr", "adapt_steps", "adapt_final_val", "adapt_final_test", "infer_samples_per_sec",
    "filename", "checkpoint", "caveats", "basis",
)


def _with_basis(rows: list[dict], basis: str) -> list[dict]:
    for row in rows:
        row["basis"] = basis
    return rows


def _best(rows: list[dict], key: str) -> dict:
    return max(rows, key=lambda r: (r[key] is not None, r[key] if r[key] is not None else 0.0))


def _upstream_choice(arch: str, candidates: list[dict]) -> list[dict]:
    upstream = {r["filename"]: r for r in candidates}
    known = [r for r in upstream.values() if r.get("final_val") is not None]
    if upstream and len(known) == len(upstream):
        best = _best(known, "final_val")
        picked = _imagenet_finetune(best["filename"], candidates) or best
        return _with_basis([picked], f"best final_val of {len(upstream)} i21k checkpoints")
    published = [r for r in candidates if r.get("recommended")]
    if published:
        finetune = [r for r in published if r["recommended"] == "pretrained+finetune"]
        picked = finetune[0] if finetune else published[0]
        return _with_basis([picked], (
            f"published recommendation: final_val known for {len(known)} of {len(upstream)} "
            "candidates in this index, so not ranked"
        ))
    return _with_basis([{"name": arch}], (
        f"unknown: final_val known for {len(known)} of {len(upstream)} candidates "
        "and no published recommendation"
    ))


def _imagenet_finetune(filename: str, candidates: list[dict]) -> dict | None:
    """The recommended checkpoint's best ImageNet fine-tune, to show its result."""
    finetunes = [r for r in candidates if r["filename"] == filename and r.get("adapt_ds") == "imagenet2012"]
    known = [r for r in finetunes if r.get("adapt_final_val") is not None]
    if known:
        return _best(known, "adapt_final_val")
    published = [r for r in finetunes if r.get("recommended") == "pretrained+finetune"]
    return published[0] if published else None


def _finetune_choice(arch: str, candidates: list[dict]) -> list[dict]:
    known = [r for r in candidates if r.get("adapt_final_val") is not None]
    if not known:
        return _with_basis([{"name": arch}], (
            f"unknown: adapt_final_val known for none of {len(candidates)} fine-tunes in this index"
        ))
    best = _best(known, "adapt_final_val")
    scope = "all" if len(known) == len(candidates) else f"the {len(known)} of {len(candidates)}"
    return _with_basis([best], f"best adapt_final_val among {scope} fine-tunes with a known value")


def recommend_table(
    frame: Frame,
    *,
    arch: list[str] | None = None,
    adapt_ds: str | None = None,
    res: int | None = None,
    min_throughput: float | None = None,
) -> tuple[Frame, list[str]]:
    """Per architecture, the recommended checkpoint; returns rows and explanatory notes."""
    notes: list[str] = []
    filters = Filters(arch=arch or (), adapt_ds=[adapt_ds] if adapt_ds else (),
                      res=[res] if res else ())
    rows = [r for r in apply_filters(frame, filters).to_pylist() if r["collection"] == "augreg"
            and (adapt_ds or r["ds"] == "i21k")]
    if min_throughput is not None:
        unknown = sum(r["infer_samples_per_sec"] is None for r in rows)
        rows = [r for r in rows if (r["infer_samples_per_sec"] or 0.0) >= min_throughput]
        if unknown:
            notes.append(f"{unknown} candidate rows have unknown throughput and were excluded by "
                         "--min-throughput")
    by_arch: dict[str, list[dict]] = {}
    for row in rows:
        by_arch.setdefault(row["name"], []).append(row)
    if not by_arch:
        raise VitzooError("no candidate checkpoints match these options",
                          "relax --arch/--res/--min-throughput, or check `vitzoo list`")
    chosen: list[dict] = []
    for name, candidates in by_arch.items():
        chosen += _finetune_choice(name, candidates) if adapt_ds else _upstream_choice(name, candidates)
    chosen, left_out = _drop_unknown(chosen, adapt_ds, sum(len(c) for c in by_arch.values()))
    notes += left_out
    if not adapt_ds and any(r["basis"].startswith("published") for r in chosen):
        notes.append("upstream accuracy (final_val) is not in this index; showing the published "
                     "recommendation (vit_jax README). Build from a real index.csv to rank: "
                     "`vitzoo index build --source URL`")
    chosen.sort(key=lambda r: (r.get("infer_samples_per_sec") is None,
                               r.get("infer_samples_per_sec") or 0.0))
    return Frame.from_rows(chosen, OUTPUT_COLUMNS), notes


def _drop_unknown(chosen: list[dict], adapt_ds: str | None,
                  candidates: int) -> tuple[list[dict], list[str]]:
    """Architectures with nothing to rank by are left out, and said so; none at all is an error."""
    known = [r for r in chosen if not r["basis"].startswith("unknown")]
    missing = [r["name"] for r in chosen if r["basis"].startswith("unknown")]
    column = "adapt_final_val" if adapt_ds else "final_val"
    if not known:
        scope = f"{adapt_ds} fine-tunes" if adapt_ds else "ImageNet-21k pre-trained checkpoints"
        raise VitzooError(
            f"cannot recommend: {column} is unknown for all {candidates:,} {scope} of "
            f"{', '.join(missing)} in this catalog (the embedded one holds only published results)",
            "build the catalog from the bucket's index.csv (`vitzoo index build --source URL_OR_PATH`, "
            "see `vitzoo index info`), or list what is known: "
            f"`vitzoo list{' --adapt-ds ' + adapt_ds if adapt_ds else ''} "
            "--where \"notnull(adapt_final_test)\"`")
    notes = [f"left out, {column} unknown for every candidate: {', '.join(missing)}"] if missing else []
    return known, notes


def pareto_front(frame: Frame, metric: str, throughput: str = "infer_samples_per_sec") -> Frame:
    """Rows not beaten on both accuracy and throughput, fastest first."""
    for column in (metric, throughput):
        if column not in frame.column_names:
            raise VitzooError(f"unknown column {column!r}", "use an accuracy column such as "
                              "adapt_final_val and a throughput column")
    accuracy, speed = frame.column(metric), frame.column(throughput)
    known = [i for i in range(frame.num_rows) if accuracy[i] is not None and speed[i] is not None]
    if not known:
        raise VitzooError(f"no rows have both {metric} and {throughput} known",
                          "build the catalog from a real index.csv, or choose another "
                          "--metric such as adapt_final_test")
    known.sort(key=lambda i: (-speed[i], -accuracy[i]))
    keep, best = [], float("-inf")
    for i in known:
        if accuracy[i] > best:
            keep.append(i)
            best = accuracy[i]
    return frame.take(keep)


def pareto_by_dataset(frame: Frame, metric: str) -> tuple[Frame, list[str]]:
    """One Pareto front per fine-tuning dataset: accuracies on different datasets
    (ImageNet 0.75, Pets 0.93) are not comparable, so they never share a front."""
    groups: dict[Any, list[int]] = {}
    for i, adapt_ds in enumerate(frame.column("adapt_ds")):
        groups.setdefault(adapt_ds, []).append(i)
    fronts, notes, empty = [], [], []
    for adapt_ds, rows in sorted(groups.items(), key=lambda item: str(item[0])):
        part = frame.take(rows)
        try:
            front = pareto_front(part, metric)
        except VitzooError:
            empty.append(str(adapt_ds or "no fine-tune"))
            continue
        fronts.append(front)
        notes.append(f"{adapt_ds or 'pre-trained'}: Pareto front of {metric} against "
                     f"infer_samples_per_sec over {part.num_rows:,} rows ({front.num_rows} on the front)")
    if not fronts:
        pareto_front(frame, metric)  # raises the error that says which values are missing
    if empty:
        notes.append(f"no rows with both values known for: {', '.join(empty)}")
    if metric.endswith("_test"):
        notes.append("test accuracy is shown to describe the trade-off; choose with a "
                     "validation metric")
    return Frame.concat(fronts), notes
