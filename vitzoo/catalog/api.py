"""The catalog as a Python API (pandas) and the shared query pipeline the CLI uses.

``run_query`` / ``run_recommend`` work on :class:`~vitzoo.catalog.frame.Frame`
(plain Python columns) so the CLI imports neither pandas nor pyarrow;
``query`` and ``recommend`` wrap them for notebooks (``vitzoo.load_catalog`` is the table).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.catalog import available as av
from vitzoo.catalog import local, store
from vitzoo.catalog import query as q
from vitzoo.catalog import recommend as rec
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import COLUMN_NAMES, PRETRAINED_COLUMNS
from vitzoo.errors import VitzooError
from vitzoo.names import (
    ADAPT_DATASETS,
    ALL_ARCHS,
    AUGREG_ARCHS,
    LEGACY_ARCHS,
    RESOLUTIONS,
    TIMM_ARCHS,
    AdaptedName,
    canonical_arch,
    did_you_mean,
    parse_any,
    strip_hub_prefix,
    validate_path_component,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def load_table(index: str | None = None, *, include_local: bool = True,
               columns: Sequence[str] | None = None) -> Frame:
    """The catalog (plus the user's registered runs), optionally only some columns."""
    frame = store.read_frame(store.locate(index), columns)
    if include_local and local.registry_path().exists():
        runs = local.local_frame(frame.column_names)
        if runs.num_rows:
            frame = Frame.concat([frame, runs])
    return frame


def columns_needed(filters: q.Filters, columns: Sequence[str] | None, sort: str | None,
                   pretrained: bool) -> list[str] | None:
    """The columns a query touches, so the CLI reads only those (None: all of them)."""
    if columns is None:
        return None
    needed = set(columns) | {"collection"}
    needed |= {col for key, col in q.FILTER_COLUMNS.items() if getattr(filters, key)}
    for key, extra in q.EXTRA_FILTER_COLUMNS.items():
        if getattr(filters, key):
            needed |= set(extra)
    if filters.where:
        mentioned = q.where_columns(filters.where)
        if mentioned is None:
            return None
        needed |= mentioned
    if sort:
        needed.add(sort)
    if pretrained:
        needed |= set(PRETRAINED_COLUMNS) | {"url", "checkpoint", "adapt_filename"}
        needed.discard("finetunes")
    if "available" in needed:
        needed = (needed - {"available"}) | set(av.INPUT_COLUMNS)
    if needed - set(COLUMN_NAMES):
        return None  # let the query report the unknown name
    return [c for c in COLUMN_NAMES if c in needed]


def run_query(
    frame: Frame,
    *,
    filters: q.Filters,
    pretrained: bool = False,
    sort: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    local_only: bool = False,
    downloadable: bool = False,
    distinct: str | None = None,
) -> Frame:
    """Filter, aggregate, sort, cut and project: the whole of ``vitzoo list``.

    ``available`` (which source can serve the row's file now, see
    :mod:`vitzoo.catalog.available`) is computed only when asked for: in ``columns``,
    ``sort``, ``where``, ``distinct`` or by ``downloadable`` (keep rows with a known copy).
    ``distinct`` replaces the rows by each value of that column with its row count (a facet).
    """
    if distinct is not None and columns:
        raise VitzooError("--distinct and --columns do not go together",
                          "--distinct COLUMN prints that column's values and their row counts")
    if limit is not None and limit < 1:
        raise VitzooError(f"--limit must be at least 1, got {limit}", "e.g. --limit 20")
    # Only a --where on it needs ``available`` before filtering; otherwise it is computed for
    # the rows that are left (it reads the cache and mirror folders, once per row).
    where_needs = filters.where is not None and "available" in (
        q.where_columns(filters.where) or {"available"})
    wants_available = downloadable or sort == "available" or (columns is None and not distinct) or (
        "available" in (columns or ())) or where_needs or distinct == "available"
    has_inputs = set(av.INPUT_COLUMNS) <= set(frame.column_names)
    if where_needs and has_inputs:
        frame = frame.with_column("available", av.availability(frame))
    result = q.apply_filters(frame, filters)
    if local_only:
        result = result.filter([c == "local" for c in result.column("collection")])
    if pretrained:
        result = q.pretrained_view(result)
        if wants_available:  # now of the pre-trained file
            result = result.with_column("available", av.availability(result, pretrained=True))
    elif wants_available and has_inputs and not where_needs:
        result = result.with_column("available", av.availability(result))
    if downloadable:
        result = result.filter([av.is_downloadable(v) for v in result.column("available")])
    if distinct is not None:
        result = q.distinct_counts(result, distinct)
    result = q.sort_frame(result, sort, desc)
    if limit is not None:
        result = result.slice(0, limit)
    return q.select_columns(result, columns)


def names_pretrained_files(index: str | None, filters: q.Filters) -> list[str]:
    """The pre-trained files' stems when every ``--name`` is exactly one's name
    (``B_16-i21k-...``, ``vit_base_patch16_224.augreg_in21k``), else ``[]``: `list` then shows
    that file, as `show` does, not its fine-tunes."""
    if not filters.name:
        return []
    names = load_table(index, columns=list(q.EXTRA_FILTER_COLUMNS["name"]))
    if not all(q.exact_name_kind(names, p) == "pretrained" for p in filters.name):
        return []
    matched = q.apply_filters(names, q.Filters(name=filters.name))
    return sorted({f for f in matched.column("filename") if f})


def relaxations(frame: Frame, filters: q.Filters, *, drop: int = 1,
                **options: Any) -> list[tuple[str, int]]:
    """For a query that matched nothing: every way to drop ``drop`` of its filters, and how many
    rows the query gives then (``options`` as for :func:`run_query`: pretrained, local_only,
    downloadable; ``--local`` and ``--downloadable`` count as filters too)."""
    from itertools import combinations

    flags = {"local_only": "--local", "downloadable": "--downloadable"}
    keys = [*q.active_filters(filters), *(flag for flag in flags if options.get(flag))]
    out = []
    for dropped in combinations(keys, drop):
        relaxed, kept = filters, dict(options)
        for key in dropped:
            if key in flags:
                kept[key] = False
            else:
                relaxed = q.without(relaxed, key)
        rows = run_query(frame, filters=relaxed, columns=["checkpoint"], **kept)
        shown = [flags[k] if k in flags else q.describe_filter(filters, k) for k in dropped]
        out.append((" and ".join(shown), rows.num_rows))
    return out


def nothing_matches_note(frame: Frame, filters: q.Filters, **options: Any) -> str:
    """Which filters to drop to get rows: one at a time, else two at a time; fewest rows first
    (the nearest combinations that exist)."""
    singles = relaxations(frame, filters, **options)
    if not singles:
        return "the catalog has no rows"
    found = singles
    if not any(count for _, count in singles) and len(singles) > 2:
        found = relaxations(frame, filters, drop=2, **options)
    some = sorted((count, what) for what, count in found if count)[:6]
    if not some:
        return (f"nothing matches, and dropping any one or two of the {len(singles)} filters still "
                "gives nothing; see the values a column takes: `vitzoo list --distinct COLUMN`")
    shown = "; ".join(f"without {what}: {count:,} rows" for count, what in some)
    if found is singles:
        none = [what for what, count in singles if not count]
        rest = f" (still none without {', '.join(none)})" if none else ""
        return f"nothing matches all filters; nearest combinations that exist: {shown}{rest}"
    return ("nothing matches, and dropping any one filter still gives nothing; dropping two: "
            f"{shown}")


def to_pandas(frame: Frame) -> pd.DataFrame:
    """Nullable pandas dtypes: unknown stays <NA>/NaN, integers stay integers."""
    import pandas as pd

    dtypes = {"int": "Int64", "bool": "boolean", "str": "string", "float": "float64"}
    data = {}
    for name in frame.column_names:
        values = frame.column(name)
        kind = frame.type_of(name)
        if kind == "float":
            values = [float("nan") if v is None else v for v in values]
        data[name] = pd.array(values, dtype=dtypes[kind])
    return pd.DataFrame(data, index=pd.RangeIndex(frame.num_rows))


def query(
    *,
    pretrained: bool = False,
    sort: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    local: bool = False,
    index: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Same filters as ``vitzoo list``: arch, ds, aug, wd, do, sd, adapt_ds, res,
    adapt_lr, steps, collection (scalars or lists) and ``where`` (an expression)."""
    result = run_query(load_table(index), filters=q.make_filters(**filters),
                       pretrained=pretrained, sort=sort, desc=desc, limit=limit,
                       columns=columns, local_only=local)
    return to_pandas(result)


@dataclass
class Recommendation:
    table: Frame
    notes: list[str] = field(default_factory=list)
    metric: str | None = None  # the accuracy column of a Pareto front


def run_recommend(
    frame: Frame,
    *,
    arch: Sequence[str] | None = None,
    adapt_ds: str | None = None,
    res: int | None = None,
    min_throughput: float | None = None,
    pareto: bool = False,
    metric: str | None = None,
    by: str | None = None,
) -> Recommendation:
    if by is not None:
        if pareto:
            raise VitzooError("--by and --pareto do not go together",
                              "--by ranks one column; --pareto trades --metric against throughput")
        chosen, notes = rec.recommend_by(frame, by, arch=list(arch or ()), adapt_ds=adapt_ds,
                                         res=res, min_throughput=min_throughput)
        return Recommendation(chosen, notes)
    if not pareto:
        chosen, notes = rec.recommend_table(frame, arch=list(arch or ()), adapt_ds=adapt_ds,
                                            res=res, min_throughput=min_throughput)
        return Recommendation(chosen, notes)
    metric = metric or ("adapt_final_val" if adapt_ds else "adapt_final_test")
    if metric not in COLUMN_NAMES:
        raise VitzooError(f"unknown --metric {metric!r}",
                          f"{did_you_mean(metric, COLUMN_NAMES)}use an accuracy column such as "
                          "adapt_final_val")
    filters = q.Filters(arch=arch or (), adapt_ds=[adapt_ds] if adapt_ds else (),
                        res=[res] if res else ())
    subset = q.apply_filters(frame, filters)
    if min_throughput is not None:
        subset = subset.filter([(v or 0.0) >= min_throughput
                                for v in subset.column("infer_samples_per_sec")])
    front, notes = rec.pareto_by_dataset(subset, metric)
    cols = [c for c in (*rec.OUTPUT_COLUMNS[:-1], "collection") if c in front.column_names]
    return Recommendation(front.select(cols), notes, metric=metric)


def recommend(
    *,
    arch: Sequence[str] | str | None = None,
    adapt_ds: str | None = None,
    res: int | None = None,
    min_throughput: float | None = None,
    pareto: bool = False,
    metric: str | None = None,
    by: str | None = None,
    index: str | None = None,
) -> pd.DataFrame:
    """The ``vitzoo recommend`` table; explanations are in ``df.attrs['notes']``."""
    arch_list = [arch] if isinstance(arch, str) else list(arch or [])
    result = run_recommend(load_table(index), arch=arch_list, adapt_ds=adapt_ds, res=res,
                           min_throughput=min_throughput, pareto=pareto, metric=metric, by=by)
    frame = to_pandas(result.table)
    frame.attrs["notes"] = result.notes
    return frame


# --- resolving one checkpoint -----------------------------------------------------

@dataclass(frozen=True)
class CheckpointInfo:
    """Where one checkpoint file lives and how to verify it."""

    name: str | None  # architecture, canonical
    filename: str  # file stem, validated
    collection: str
    kind: str  # pretrained, finetuned, local
    url: str | None
    size_bytes: int | None
    md5: str | None
    crc32c: str | None
    hf_repo: str | None
    resolution: int | None
    adapt_ds: str | None
    local_path: str | None
    row: dict


def _info(row: dict, kind: str) -> CheckpointInfo:
    if kind == "pretrained":
        stem, url = row["filename"], row.get("url")
        meta = (row.get("upstream_size_bytes"), row.get("upstream_md5"), row.get("upstream_crc32c"),
                row.get("upstream_hf_repo"))
        resolution, adapt_ds = None, None
    else:
        stem, url = row["adapt_filename"], row.get("adapt_url")
        meta = (row.get("size_bytes"), row.get("md5"), row.get("crc32c"), row.get("hf_repo"))
        resolution, adapt_ds = row.get("adapt_resolution"), row.get("adapt_ds")
    validate_path_component(stem, "checkpoint name")
    local_path = url if kind == "local" else None
    return CheckpointInfo(
        name=row.get("name"), filename=stem, collection=q.url_folder(url) or row["collection"],
        kind=kind, url=None if kind == "local" else url, size_bytes=meta[0], md5=meta[1],
        crc32c=meta[2], hf_repo=meta[3], resolution=resolution, adapt_ds=adapt_ds,
        local_path=local_path, row=row,
    )


def load_dataframe(index: str | None = None, *, include_local: bool = False) -> pd.DataFrame:
    """The catalog as pandas (see :func:`vitzoo.load_catalog`), with its location and manifest
    in ``attrs``."""
    location = store.locate(index)
    frame = to_pandas(load_table(str(location.path), include_local=include_local))
    frame.attrs.update(catalog=str(location.path), origin=location.origin,
                       manifest=store.read_manifest(location))
    return frame


def find_local_run(npz_path: Path, index: str | None = None) -> dict | None:
    """The registered run whose ``final.npz`` is this file (by full path), if any."""
    runs = load_table(index, include_local=True)
    return _first(runs, "adapt_url", str(Path(npz_path).resolve()).__eq__)


def _first(frame: Frame, column: str, test) -> dict | None:
    for i, value in enumerate(frame.column(column)):
        if value is not None and test(value):
            return frame.slice(i, 1).to_pylist()[0]
    return None


def _hub_row(table: Frame, name: str) -> tuple[dict, str] | None:
    """A timm / Hugging Face name (``timm/vit_base_patch16_224.augreg_in21k``, also without
    ``timm/`` or with ``hf-hub:``) -> the catalog row whose file timm copied, and its kind."""
    repo = strip_hub_prefix(name)
    if "." not in repo:
        return None
    if not repo.lower().startswith("timm/"):
        repo = f"timm/{repo}"
    for column, kind in (("hf_repo", "finetuned"), ("upstream_hf_repo", "pretrained")):
        row = _first(table, column, lambda value, repo=repo: value.lower() == repo.lower())
        if row is not None:
            return row, kind
    return None


def _looks_like_arch(stem: str) -> bool:
    """``X/99``, ``R50+Q/32``, ``vit_giant_patch14_224``: meant as an architecture, not a file."""
    return bool(re.fullmatch(r"[A-Za-z0-9+\-]+[/_]\d+", stem)) or stem.lower().startswith(
        ("vit_", "mixer_", "timm/vit_", "timm/mixer_"))


def _unknown_name(table: Frame, name: str, stem: str, what: str = "checkpoint") -> VitzooError:
    """The closest known names: upstream stems, then (for a ``--`` name) that upstream's fine-tunes."""
    upstream = sorted({f for f in table.column("filename") if f})
    hubs = sorted({h.removeprefix("timm/") for c in ("hf_repo", "upstream_hf_repo")
                   for h in table.column(c) if h})
    base, _, _ = stem.partition("--")
    hint = did_you_mean(base, [*upstream, *hubs])
    if "--" in stem and hint:
        closest = hint.split("'")[1]
        tunes = [a for f, a in zip(table.column("filename"), table.column("adapt_filename"),
                                   strict=True) if f == closest and a]
        hint = did_you_mean(stem, tunes) or hint
    if not hint and what != "checkpoint":
        hint = did_you_mean(stem, [*ALL_ARCHS, *TIMM_ARCHS])
    return VitzooError(f"unknown {what} {name!r}",
                       f"{hint}use `vitzoo list --name PATTERN` to find names, an architecture "
                       "such as B/16, a timm name, or a path to an .npz")


def find_checkpoint(name: str, index: str | None = None) -> CheckpointInfo:
    """Resolve a catalog name, ``collection/stem``, a timm/Hugging Face name, or an
    architecture alias.

    An alias (``B/16``, ``vit_base_patch16_224``) means the recommended i21k checkpoint of
    that architecture.
    """
    table = load_table(index)
    stem = name.strip().removesuffix(".npz")
    # ``timm/<name>`` of a row named by its timm name (another family's file) is that row, even
    # when its weights live in a twin's Hub repo (the quick-GELU CLIP names)
    row = _first(table, "checkpoint", {stem, strip_hub_prefix(stem).removeprefix("timm/")}.__contains__)
    if row is not None:
        kind = "local" if row["collection"] == "local" else (
            "finetuned" if row.get("adapt_filename") else "pretrained")
        return _info(row, kind)
    hub = _hub_row(table, stem)
    if hub is not None:
        return _info(*hub)
    if "/" in stem:  # collection/stem of an older collection (an arch like B/16 won't match)
        row = _first(table, "url", lambda url: url.endswith(f"/{stem}.npz"))
        if row is not None:
            return _info(row, "pretrained")
    # A bare legacy stem (ViT-B_16) names both a pre-training and its fine-tune: the former.
    row = _first(table, "filename", stem.__eq__)
    if row is not None:
        return _info(row, "pretrained")
    row = _first(table, "adapt_filename", stem.__eq__)
    if row is not None:
        return _info(row, "finetuned")
    try:
        arch = canonical_arch(stem)
    except VitzooError:
        if _looks_like_arch(stem):
            raise
        arch = None
    if arch is not None:
        return _arch_default(table, arch)
    try:
        parsed = parse_any(stem)
    except VitzooError as exc:
        what = "checkpoint" if "-" in stem else "checkpoint or architecture"
        raise _unknown_name(table, name, stem, what) from exc
    if isinstance(parsed, AdaptedName) and (parsed.res not in RESOLUTIONS
                                            or parsed.adapt_ds not in ADAPT_DATASETS):
        bad = (f"res_{parsed.res} (released: {', '.join(map(str, RESOLUTIONS))})"
               if parsed.res not in RESOLUTIONS else
               f"{parsed.adapt_ds} (released: {', '.join(ADAPT_DATASETS)})")
        raise VitzooError(f"{stem!r} is not an AugReg checkpoint: no fine-tune at {bad}",
                          _unknown_name(table, name, stem).hint)
    raise VitzooError(f"{stem!r} follows the AugReg naming but is not in this catalog",
                      _unknown_name(table, name, stem).hint)


def nearest_with_copy(info: CheckpointInfo, index: str | None = None) -> str | None:
    """The checkpoint most like ``info`` (same architecture and kind, closest name) that some
    source can serve now (:mod:`vitzoo.catalog.available`); None if there is none."""
    table = load_table(index)
    same = table.filter([n == info.name and c != "local" for n, c in zip(
        table.column("name"), table.column("collection"), strict=True)])
    if info.kind == "pretrained":
        view = q.pretrained_view(same)
        names, available = view.column("checkpoint"), av.availability(view, pretrained=True)
    else:
        names, available = same.column("checkpoint"), av.availability(same)
    candidates = sorted({n for n, a in zip(names, available, strict=True)
                         if n and n != info.filename and av.is_downloadable(a)})
    if not candidates:
        return None
    return max(candidates, key=lambda n: difflib.SequenceMatcher(None, n, info.filename).ratio())


def _arch_default(table: Frame, arch: str) -> CheckpointInfo:
    if arch in AUGREG_ARCHS:
        chosen = rec.recommend_table(table, arch=[arch])[0].to_pylist()[0]
        if chosen.get("filename"):
            row = _first(table, "filename", chosen["filename"].__eq__)
            return _info(row, "pretrained")
    if arch in LEGACY_ARCHS:  # the ImageNet-21k pre-training, as in the reference code
        stem = LEGACY_ARCHS[arch]
        row = _first(table, "url", lambda url: url.endswith(f"/imagenet21k/{stem}.npz")) or _first(
            table, "url", lambda url: url.endswith(f"/{stem}.npz"))
        if row is not None:
            return _info(row, "pretrained")
    raise VitzooError(f"no default checkpoint is known for {arch}",
                      "pick one explicitly from `vitzoo list --arch ...`")
