"""Rich layouts for ``vitzoo show`` and ``vitzoo index info``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from vitzoo.cli.render import cell


def print_details(details: dict[str, Any]) -> None:
    console = Console(soft_wrap=False)
    console.print(f"[bold]{details['checkpoint']}[/bold]  ({details['kind']}, "
                  f"{details['name'] or '?'}, collection {details['collection']})")
    fields = Table(show_header=True, header_style="bold", pad_edge=False)
    fields.add_column("field", no_wrap=True)
    fields.add_column("value", overflow="fold")
    fields.add_column("source", overflow="fold", style="dim")
    for item in details["fields"]:
        fields.add_row(item["field"], cell(item["field"], item["value"]), item["source"])
    console.print(fields)
    arch = details.get("architecture") or {}
    if arch:
        blocks = f", ResNet blocks {arch['resnet_blocks']}" if arch["resnet_blocks"] else ""
        console.print(
            f"[bold]architecture[/bold] {arch['name']}: width {arch['hidden']}, depth {arch['layers']}, "
            f"heads {arch['heads']}, MLP {arch['mlp']}, patch {arch['patch']}{blocks}, tokens "
            f"{arch['tokens_224'] or '?'} @224 / {arch['tokens_384'] or '?'} @384, params "
            f"{int(arch['params_k1000_224']):,} (1000 classes @224)  [dim]({arch['source']})[/dim]")
    if details["finetunes"]:
        tunes = Table(title="fine-tunes of its pre-trained checkpoint", header_style="bold",
                      pad_edge=False)
        for column in ("dataset", "count", "res", "lr", "steps", "best by val", "val", "test"):
            tunes.add_column(column, overflow="fold")
        for item in details["finetunes"]:
            tunes.add_row(
                item["adapt_ds"], str(item["count"]), ",".join(map(str, item["resolutions"])),
                ",".join(f"{x:g}" for x in item["learning_rates"]),
                ",".join(map(str, item["steps"])),
                item["best_by_adapt_final_val"] or f"? ({item['known_adapt_final_val']} known)",
                cell("adapt_final_val", item["best_adapt_final_val"]),
                cell("adapt_final_test", item["best_adapt_final_test"]),
            )
        console.print(tunes)
    if details["published"]:
        published = Table(title="published facts", header_style="bold", pad_edge=False)
        for column in ("metric", "value", "source"):
            published.add_column(column, overflow="fold")
        for item in details["published"]:
            published.add_row(item["metric"], item["value"], item["source"])
        console.print(published)
    console.print("[bold]download from[/bold]")
    for place in details["downloads"]:
        note = f"  [dim]({place['note']})[/dim]" if place.get("note") else ""
        console.print(f"  {place['source']}: {place['location']}{note}")
    if not details["downloads"]:
        console.print("  ? no known location")
    for caveat in details["caveats"]:
        console.print(f"[yellow]caveat:[/yellow] {caveat}")


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
    for item in manifest.get("missing", []):
        console.print(f"[yellow]missing:[/yellow] {item}")
