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

from collections.abc import Sequence
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


#: Equal accuracies happen (R26+S/32's best Pets fine-tunes share 0.967391 at 224 and 384 px).
#: The tie goes to the cheaper run: fewer fine-tuning steps, then the lower learning rate, then
#: the lower resolution; last the name, so the choice never depends on the catalog's row order.
TIE_BREAK = ("adapt_steps", "adapt_lr", "adapt_resolution", "checkpoint")
TIE_RULE = ("on equal accuracy the cheaper run: fewer adapt_steps, then lower adapt_lr, "
            "then lower adapt_resolution")


def _rank(row: dict, key: str) -> tuple:
    """Sort key, best first: the highest known ``key``, then :data:`TIE_BREAK` (unknown last)."""
    value = row.get(key)
    cheaper = tuple((row.get(c) is None, row.get(c) if row.get(c) is not None else 0)
                    for c in TIE_BREAK)
    return (value is None, -(value or 0.0), *cheaper)


def _best(rows: list[dict], key: str) -> dict:
    return min(rows, key=lambda r: _rank(r, key))


def _tie_note(rows: list[dict], key: str, best: dict) -> list[str]:
    """Say so when the choice was a tie, and how it was broken."""
    tied = [r for r in rows if r.get(key) is not None and r[key] == best[key]]
    if len(tied) < 2:
        return []
    return [f"{best.get('name')}: {len(tied)} candidates share the best {key} {best[key]:.6f}; "
            f"{TIE_RULE} ({best.get('checkpoint')})"]


def _upstream_choice(arch: str, candidates: list[dict], notes: list[str]) -> list[dict]:
    upstream = {r["filename"]: r for r in candidates}
    known = [r for r in upstream.values() if r.get("final_val") is not None]
    if upstream and len(known) == len(upstream):
        # Pre-trained files have no steps or resolution: a final_val tie goes to the first name.
        best = min(known, key=lambda r: (-r["final_val"], r["filename"]))
        tied = sum(r["final_val"] == best["final_val"] for r in known)
        if tied > 1:
            notes.append(f"{arch}: {tied} i21k checkpoints share the best final_val "
                         f"{best['final_val']:.6f}; kept the first by filename ({best['filename']})")
        picked = _imagenet_finetune(best["filename"], candidates, notes) or best
        return _with_basis([picked], f"best final_val of {len(upstream)} i21k checkpoints")
    published = [r for r in candidates if r.get("recommended")]
    if published:
        finetune = [r for r in published if r["recommended"] == "pretrained+finetune"]
        picked = finetune[0] if finetune else published[0]
        return _with_basis([picked], (
            f"published recommendation: final_val known for {len(known)} of the {len(upstream)} "
            "i21k pre-trained checkpoints of its architecture in this index, so not ranked"
        ))
    return _with_basis([{"name": arch}], (
        f"unknown: final_val known for {len(known)} of the {len(upstream)} i21k pre-trained "
        "checkpoints of its architecture, and no published recommendation"
    ))


def _imagenet_finetune(filename: str, candidates: list[dict], notes: list[str]) -> dict | None:
    """The recommended checkpoint's best ImageNet fine-tune, to show its result."""
    finetunes = [r for r in candidates if r["filename"] == filename and r.get("adapt_ds") == "imagenet2012"]
    known = [r for r in finetunes if r.get("adapt_final_val") is not None]
    if known:
        best = _best(known, "adapt_final_val")
        notes += _tie_note(known, "adapt_final_val", best)
        return best
    published = [r for r in finetunes if r.get("recommended") == "pretrained+finetune"]
    return published[0] if published else None


def _finetune_choice(arch: str, candidates: list[dict], notes: list[str]) -> list[dict]:
    known = [r for r in candidates if r.get("adapt_final_val") is not None]
    if not known:
        return _with_basis([{"name": arch}], (
            f"unknown: adapt_final_val known for none of {len(candidates):,} fine-tunes in this index"
        ))
    best = _best(known, "adapt_final_val")
    notes += _tie_note(known, "adapt_final_val", best)
    scope = "all" if len(known) == len(candidates) else f"the {len(known):,} of {len(candidates):,}"
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
    ties: list[str] = []
    for name, candidates in by_arch.items():
        choose = _finetune_choice if adapt_ds else _upstream_choice
        chosen += choose(name, candidates, ties)
    chosen, left_out = _drop_unknown(chosen, adapt_ds, sum(len(c) for c in by_arch.values()))
    notes += left_out + ties
    published = [r for r in chosen if r["basis"].startswith("published")]
    if not adapt_ds and published:
        notes.append("upstream accuracy (final_val) is not in this index; showing the published "
                     f"recommendation ({_attribution(published)}). Build from a real index.csv to "
                     "rank: `vitzoo index build --source URL`")
    chosen.sort(key=lambda r: (r.get("infer_samples_per_sec") is None,
                               r.get("infer_samples_per_sec") or 0.0))
    return Frame.from_rows(chosen, OUTPUT_COLUMNS), notes


def _attribution(rows: list[dict]) -> str:
    """Who published each pick, from the rows' own ``value_sources`` (``recommended=...``):
    ``vit_jax README recommended table: B/16, ...; vit_jax_augreg notebook ...: B/8``."""
    from vitzoo.catalog.schema import value_sources_of

    by_source: dict[str, list[str]] = {}
    for row in rows:
        source = value_sources_of(row).get("recommended") or "source not recorded"
        by_source.setdefault(source, []).append(row.get("name") or "?")
    return "; ".join(f"{source}: {', '.join(names)}" for source, names in by_source.items())


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
    front = pareto_indices([(accuracy[i], speed[i]) for i in known])
    return frame.take([known[j] for j in front])


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(accuracy, speed)`` points no other point beats on both, fastest first.

    The one front rule of vitzoo (catalog rows, ``plot``, the probe's candidates): among
    equally fast points only the most accurate one stays, and a slower point stays only if
    it is more accurate than every faster one.
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][1], -points[i][0]))
    keep, best = [], float("-inf")
    for i in order:
        if points[i][0] > best:
            keep.append(i)
            best = points[i][0]
    return keep


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


# --- --by COLUMN -------------------------------------------------------------------

#: Columns --by refuses: choosing on a test split overfits it (the module docstring).
_TEST_COLUMNS = ("final_test", "adapt_final_test")


def check_by(column: str) -> str:
    """A numeric catalog column to rank by; test-split columns and text are refused."""
    from vitzoo.catalog.schema import COLUMN_TYPES
    from vitzoo.names import did_you_mean

    numeric = [c for c, kind in COLUMN_TYPES.items() if kind in ("float", "int")
               and c not in _TEST_COLUMNS]
    if column in _TEST_COLUMNS:
        raise VitzooError(f"--by {column}: test accuracy is never used to choose",
                          "rank by a validation column (final_val, adapt_final_val) or a "
                          "published measurement such as imagenet_r_top1")
    if column not in numeric:
        raise VitzooError(f"--by {column!r} is not a numeric catalog column",
                          f"{did_you_mean(column, numeric)}choose one of {', '.join(numeric)}")
    return column


def recommend_by(
    frame: Frame,
    column: str,
    *,
    arch: list[str] | None = None,
    adapt_ds: str | None = None,
    res: int | None = None,
    min_throughput: float | None = None,
) -> tuple[Frame, list[str]]:
    """Per architecture, the row with the highest known ``column``, over every collection.

    Unlike the default rule this ranks whatever rows know the value (e.g. the 27 that timm
    measured on ImageNet-R), so the notes say how many that was and what it leaves out.
    """
    from vitzoo.catalog.schema import COLUMNS, MEASURED_ACCURACY_COLUMNS

    check_by(column)
    filters = Filters(arch=arch or (), adapt_ds=[adapt_ds] if adapt_ds else (),
                      res=[res] if res else ())
    rows = apply_filters(frame, filters).to_pylist()
    notes: list[str] = []
    if min_throughput is not None:
        before = len(rows)
        rows = [r for r in rows if (r.get("infer_samples_per_sec") or 0.0) >= min_throughput]
        notes.append(f"--min-throughput kept {len(rows):,} of {before:,} rows (unknown "
                     "throughput counts as too slow)")
    known = [r for r in rows if r.get(column) is not None]
    if not known:
        raise VitzooError(f"cannot rank by {column}: it is known for none of the {len(rows):,} "
                          "rows these options select",
                          f'see which rows know it: `vitzoo list --where "notnull({column})"`')
    by_arch: dict[str, list[dict]] = {}
    for row in known:
        by_arch.setdefault(row.get("name") or "?", []).append(row)
    chosen = []
    for candidates in by_arch.values():
        best = _best(candidates, column)
        notes += _tie_note(candidates, column, best)
        best["basis"] = f"best {column} among its architecture's rows that know it"
        chosen.append(best)
    missing = sorted({r.get("name") or "?" for r in rows} - set(by_arch))
    doc = next(c.doc for c in COLUMNS if c.name == column)
    notes.insert(0, f"ranked by {column} ({doc}): known for {len(known):,} of the {len(rows):,} "
                    f"catalog rows these options select, in {len(by_arch)} architectures")
    if missing:
        notes.append(f"left out, {column} unknown for every row: {', '.join(missing)}")
    if column in MEASURED_ACCURACY_COLUMNS:
        notes.append(f"{column} is a published test-set figure: it compares released checkpoints; "
                     "to choose for your own task, rank on its validation data "
                     "(`vitzoo recommend --data`)")
    chosen.sort(key=lambda r: -r[column])
    names = list(dict.fromkeys((*OUTPUT_COLUMNS[:-1], column, "collection", "basis")))
    return Frame.from_rows(chosen, names), notes
