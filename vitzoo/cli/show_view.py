"""Rich layouts for ``vitzoo show`` and ``vitzoo index info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from vitzoo.catalog.schema import MEASURED_ACCURACY_COLUMNS
from vitzoo.cli.render import UNKNOWN, cell, header_lines, percent


def print_details(details: dict[str, Any]) -> None:
    console = Console(soft_wrap=False)
    console.print(f"[bold]{details['checkpoint']}[/bold]  ({details['kind']}, "
                  f"{details['name'] or '?'}, collection {details['collection']})")
    shown_apart = set(MEASURED_ACCURACY_COLUMNS) | {"measured_resolution", "measured_crop_pct"}
    known = [item for item in details["fields"]
             if item["value"] is not None and item["field"] not in shown_apart]
    _print_sourced(console, None, [(i["field"], cell(i["field"], i["value"]), i["source"])
                                   for i in known], ("field", "value"))
    unknown = [item["field"] for item in details["fields"] if item["value"] is None]
    if unknown:
        console.print(f"[bold]unknown[/bold] {', '.join(unknown)}", highlight=False)
    arch = details.get("architecture") or {}
    if arch:
        if arch.get("resnet_blocks"):  # hybrids cut 1x1 patches from the ResNet stem's feature map
            patch = (f"ResNet stem (blocks {arch['resnet_blocks']}) then 1x1 patches, "
                     f"effective patch {arch.get('effective_stride') or '?'}")
        else:
            patch = f"patch {arch['patch']}"
        # The AugReg table adds token and parameter counts; other families' rows carry their own.
        counts = (f", tokens {arch['tokens_224'] or '?'} @224 / {arch['tokens_384'] or '?'} @384, "
                  f"params {int(arch['params_k1000_224']):,} (1000 classes @224)"
                  if arch.get("params_k1000_224") else "")
        console.print(
            f"[bold]architecture[/bold] {arch['name']}: width {arch['hidden']}, depth {arch['layers']}, "
            f"heads {arch['heads']}, MLP {arch['mlp']}, {patch}{counts}  [dim]({arch['source']})[/dim]")
    if details["finetunes"]:
        tunes = _plain_table("fine-tunes of its pre-trained checkpoint (best by adapt_final_val)")
        for column in ("adapt_ds", "count", "adapt_resolution", "adapt_lr", "adapt_steps",
                       "adapt_final_val", "adapt_final_test"):
            short = column in ("adapt_ds", "count", "adapt_final_val", "adapt_final_test")
            tunes.add_column(header_lines(column, 6), no_wrap=short)
        best, known, total = [], 0, 0
        for item in details["finetunes"]:
            tunes.add_row(
                item["adapt_ds"], str(item["count"]), " ".join(map(str, item["resolutions"])),
                " ".join(f"{x:g}" for x in item["learning_rates"]),
                " ".join(map(str, item["steps"])),
                cell("adapt_final_val", item["best_adapt_final_val"]),
                cell("adapt_final_test", item["best_adapt_final_test"]),
            )
            known, total = known + item["known_adapt_final_val"], total + item["count"]
            if item["best_by_adapt_final_val"]:
                best.append(f"  {item['adapt_ds']}: {item['best_by_adapt_final_val']}")
        console.print(tunes)
        console.print(f"[dim]adapt_final_val known for {known} of {total} fine-tunes[/dim]")
        for line in best:
            console.print(line, highlight=False)
    if details.get("file") and details["file"] is not details["fields"]:
        _print_sourced(console, "the file", [(i["field"], cell(i["field"], i["value"]), i["source"])
                                             for i in details["file"] if i["value"] is not None],
                       ("field", "value"))
    if details.get("measured"):
        _print_measured(console, details["measured"])
    if details["published"]:
        _print_sourced(console, "published facts (accuracies as %, measured at)",
                       [(i["metric"], published_value(i), measured_at(i), i["source"])
                        for i in details["published"]], ("metric", "value", "at"))
    console.print("[bold]download from[/bold]")
    for place in details["downloads"]:
        note = f"  [dim]({place['note']})[/dim]" if place.get("note") else ""
        console.print(f"  {place['source']}: {place['location']}{note}")
    if not details["downloads"]:
        console.print("  ? no known location")
    for caveat in details["caveats"]:
        console.print(f"[yellow]caveat:[/yellow] {caveat}")


def _print_measured(console: Console, measured: dict[str, Any]) -> None:
    """timm's top-1/top-5 on each test set, as percentages, with where and how it measured."""
    crop = measured.get("crop_pct")
    view = _plain_table(f"measured by timm at {measured.get('resolution') or UNKNOWN} px, crop "
                        f"{UNKNOWN if crop is None else f'{crop:g}'}")
    for header in ("column", "test set", "top-1", "top-5"):
        view.add_column(header, no_wrap=header != "test set")
    for item in measured["sets"]:
        view.add_row(f"{item['set']}_top1/5", item["what"],
                     *(UNKNOWN if item[k] is None else percent(item[k]) for k in ("top1", "top5")))
    console.print(view)
    console.print(f"  [dim]source: {measured['source']}[/dim]", highlight=False)


def _plain_table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))


def published_value(fact: dict[str, Any]) -> str:
    """A published figure for reading: fractions as percentages, other values with their unit."""
    value, unit = fact["value"], fact.get("unit")
    if unit == "fraction" and isinstance(value, int | float):
        return percent(value)
    return f"{value:,g} {unit}" if isinstance(value, int | float) and unit else str(value)


def measured_at(fact: dict[str, Any]) -> str:
    """The resolution an accuracy or throughput was measured at; ``?`` where the source does
    not say, blank for figures without one (sizes, parameter counts)."""
    if fact.get("resolution"):
        return f"{fact['resolution']} px"
    return UNKNOWN if fact.get("unit") in ("fraction", "images/s") else ""


def _print_sourced(console: Console, title: str | None, rows: list[tuple[str, ...]],
                   headers: tuple[str, ...]) -> None:
    """Rows of (name, value, ..., source) with the source as a footnote number, the sources
    listed below: long source texts would otherwise squeeze the values."""
    sources = list(dict.fromkeys(row[-1] for row in rows))
    view = _plain_table(title)
    view.add_column(headers[0], no_wrap=True)
    view.add_column(headers[1], overflow="fold")
    for header in headers[2:]:
        view.add_column(header, no_wrap=True)
    view.add_column("source", no_wrap=True, justify="right")
    for *cells, source in rows:
        view.add_row(*cells, f"[{sources.index(source) + 1}]")
    console.print(view)
    for number, source in enumerate(sources, start=1):
        console.print(f"  [dim]\\[{number}] {source}[/dim]", highlight=False)


def print_manifest(location, manifest: dict) -> None:
    console = Console(soft_wrap=False)
    console.print(f"[bold]catalog[/bold] {location.path}  (chosen by: {location.origin})")
    if not manifest:
        console.print("[yellow]no manifest.json next to it: provenance unknown[/yellow]")
        return
    console.print(f"built {manifest.get('built_at', '?')} by vitzoo {manifest.get('tool_version', '?')}"
                  f" in {manifest.get('build_seconds', '?')} s; {manifest.get('rows', 0):,} rows")
    rows = Table(title="rows by source", header_style="bold", pad_edge=False)
    rows.add_column("source")
    rows.add_column("rows", justify="right")
    for source, count in manifest.get("rows_by_source", {}).items():
        rows.add_row(source, f"{count:,}")
    console.print(rows)
    sources = Table(title="inputs", header_style="bold", pad_edge=False)
    for column in ("kind", "where", "fingerprint / checksum", "rows"):
        sources.add_column(column, overflow="fold")
    for source in manifest.get("sources", []):
        sources.add_row(source["kind"], source.get("url") or source.get("path") or "?",
                        source.get("md5") or source.get("etag") or source.get("fingerprint", "?"),
                        str(source.get("rows", source.get("objects", "?"))))
    console.print(sources)
    if manifest.get("counts", {}).get("explanation"):
        console.print(f"[bold]counts:[/bold] {manifest['counts']['explanation']}")
    _print_measured_counts(console, manifest.get("measured"))
    for item in manifest.get("missing", []):
        console.print(f"[yellow]missing:[/yellow] {item}")


def _print_measured_counts(console: Console, measured: dict | None) -> None:
    """How many rows carry timm's measurements, and which measured names have no row (why)."""
    if not measured:
        console.print("[yellow]missing:[/yellow] timm's measured accuracies (imagenet_top1 ...) "
                      "were not applied to this catalog; rebuild it with `vitzoo index build`")
        return
    unmapped = measured.get("unmapped", {})
    console.print(f"[bold]measured by timm:[/bold] {measured['rows']} rows carry imagenet_top1 ... "
                  f"imagenet_r_top5 ({measured['names']} checkpoints measured; {len(unmapped)} have "
                  f"no catalog row)  [dim]({measured.get('source', '?')})[/dim]", highlight=False)
    for name, why in unmapped.items():
        console.print(f"  [dim]no row: {name}: {why}[/dim]", highlight=False)


# --- show PATH: a checkpoint file ---------------------------------------------------

def file_facts(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """What the file itself says: size, and the architecture read off its array shapes
    (numpy only: catalog commands never import jax). Returns (fields, architecture name)."""
    from vitzoo.models.configs import SWITCH_PREFIX, infer_config
    from vitzoo.weights.release import load_npz

    source = "read from the file"
    flat = load_npz(path)
    config, info = infer_config(flat)
    flat = {k: v for k, v in flat.items() if not k.startswith(SWITCH_PREFIX)}  # not weights
    values = {
        "path": str(path.resolve()), "size_bytes": path.stat().st_size, "architecture": config.name,
        "arrays": len(flat), "params": int(sum(int(a.size) for a in flat.values())),
        "num_classes": info.get("num_classes"), "resolution": info.get("resolution"),
        "tokens": info.get("num_tokens"),
    }
    fields = [{"field": k, "value": v, "source": source} for k, v in values.items()]
    known = config.name if not config.name.startswith("custom") else None
    return fields, known


def _catalog_names(path: Path) -> list[str]:
    """Names the catalog may know this file by: a registered run's ``final.npz`` (its full
    path), or a file in the download cache (``collection/stem``, then the bare stem)."""
    from vitzoo import config

    try:
        relpath = path.resolve().relative_to(config.cache_dir().resolve())
    except ValueError:
        return []
    stem = relpath.with_suffix("").as_posix()
    return [stem, stem.rsplit("/", 1)[-1]]


def describe_path(typed: str, index: str | None) -> dict[str, Any]:
    """``vitzoo show PATH``: the catalog's entry for this file when it has one (a registered
    run, a cached download), plus what the file itself says; a file of one's own otherwise."""
    from vitzoo.catalog.api import find_local_run
    from vitzoo.catalog.show import architecture_of, describe
    from vitzoo.errors import VitzooError

    path = Path(typed).expanduser()
    if not path.is_file():
        raise VitzooError(f"no such checkpoint file {typed!r}",
                          "check the path, or give a catalog name (`vitzoo list --name PATTERN`)")
    fields, arch = file_facts(path)
    run = find_local_run(path, index)
    names = [run["checkpoint"]] if run is not None else _catalog_names(path)
    for name in names:
        try:
            details = describe(name, index)
        except VitzooError:
            continue
        return {**details, "file": fields}
    return {
        "checkpoint": str(path), "kind": "file", "name": arch, "collection": "none",
        "fields": fields, "architecture": architecture_of(arch), "finetunes": [],
        "downloads": [{"source": "local file", "location": str(path.resolve())}],
        "published": [], "measured": None, "file": fields,
        "caveats": ["not in the catalog: a file of your own (not a registered run's final.npz, "
                    "not a cached download)"],
    }
