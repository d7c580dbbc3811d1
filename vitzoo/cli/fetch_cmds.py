"""``vitzoo download``, ``vitzoo cache list|clear|verify`` and ``vitzoo doctor``.

Heavy libraries (gcsfs, huggingface_hub, jax, tensorflow) are imported inside the
command functions only. Paths go to stdout (one per line, for scripts); progress,
notes and errors go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vitzoo.cli.data_options import GCS_AUTH

SOURCE_HELP = ("Where to fetch from: auto (cache, mirrors, GCS, Hugging Face), cache, mirror, "
               "gcs, hf, or a URL prefix laid out like the bucket.")


def download_command(
    names: list[str] = typer.Argument(..., metavar="CHECKPOINT", help=(
        "Catalog names, timm/Hugging Face names, architecture aliases (B/16), gs:// / https:// "
        "URLs or local paths.")),
    source: str = typer.Option("auto", "--source", help=SOURCE_HELP),
    to: Path = typer.Option(None, "--to", help="Put the files in this folder instead of the cache."),
    gcs_auth: bool = GCS_AUTH,
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Download checkpoints, verified, into the cache (or --to DIR); prints their paths."""
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.errors import VitzooError

    if to is not None:  # before any transfer: a wrong --to costs nothing
        from vitzoo.atomic import output_dir

        output_dir(to, "the download folder (--to)", create=False)
    failed: list[str] = []
    for name in names:
        try:
            path = resolve_checkpoint(name, source=source, to=to, gcs_auth=gcs_auth,
                                      progress=not no_progress)
        except VitzooError as exc:
            if len(names) == 1:
                raise
            sys.stderr.write(f"error: {exc.one_line()}\n")
            failed.append(name)
            continue
        typer.echo(str(path))
    if failed:
        raise VitzooError(f"{len(failed)} of {len(names)} downloads failed: {', '.join(failed)}",
                          "see the messages above")


cache_app = typer.Typer(help="Inspect, verify or clear downloaded checkpoints.",
                        no_args_is_help=True, add_completion=False)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


@cache_app.command("list")
def cache_list() -> None:
    """Cached files with size, source and state (recorded / modified / unrecorded / partial)."""
    from rich.console import Console
    from rich.table import Table

    from vitzoo import config
    from vitzoo.download import cache

    found = cache.entries()
    console = Console()
    if not found:
        console.print(f"cache is empty ({config.cache_dir()})", markup=False)
        return
    table = Table(title=str(config.cache_dir()), title_justify="left")
    for column in ("name", "size", "source", "state"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for entry in found:
        table.add_row(entry.name, _human(entry.size), entry.source or "-", entry.state)
    console.print(table)
    total = sum(e.size for e in found)
    console.print(f"{len(found)} files, {_human(total)}; `vitzoo cache verify` re-hashes them",
                  markup=False)


def _matching(name: str | None) -> list[Path]:
    from vitzoo.download import cache

    found = [e for e in cache.entries() if e.state != "partial" or name is None]
    if name is None:
        return [e.path for e in found]
    stem = name.removesuffix(".npz")
    hits = [e.path for e in found
            if e.name.removesuffix(".npz") == stem or e.path.name.removesuffix(".npz") == stem
            or e.path.name.removesuffix(".npz.part") == stem]
    if not hits:
        try:
            from vitzoo.catalog.api import find_checkpoint

            filename = find_checkpoint(name).filename
            hits = [e.path for e in found if e.path.name in (f"{filename}.npz",
                                                               f"{filename}.npz.part")]
        except Exception:  # an unknown name is reported below, not as a catalog error
            hits = []
    return hits


@cache_app.command("clear")
def cache_clear(
    name: str = typer.Argument(None, metavar="CHECKPOINT", help="Only this checkpoint (name, alias or cache path)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete cached checkpoints (all of them, or NAME), with their records."""
    from vitzoo import config
    from vitzoo.download import cache
    from vitzoo.errors import VitzooError

    paths = _matching(name)
    if not paths:
        if name is None:
            typer.echo(f"cache is already empty ({config.cache_dir()})")
            return
        raise VitzooError(f"{name!r} is not in the cache", "see `vitzoo cache list`")
    if not yes:
        what = name or f"all {len(paths)} cached files"
        if not sys.stdin.isatty():
            raise VitzooError(f"refusing to delete {what} without confirmation",
                              "pass --yes")
        typer.confirm(f"delete {what} from {config.cache_dir()}?", abort=True)
    for path in paths:
        base = path.with_name(path.name.removesuffix(cache.PART_SUFFIX))
        cache.remove(base)
        typer.echo(f"deleted {base}")


@cache_app.command("verify")
def cache_verify(
    name: str = typer.Argument(None, metavar="CHECKPOINT", help="Only this checkpoint."),
    delete: bool = typer.Option(False, "--delete", help="Delete files that fail."),
) -> None:
    """Re-hash cached files against their download records and check the zip signature."""
    from vitzoo import config
    from vitzoo.download import cache
    from vitzoo.errors import VitzooError

    paths = [p for p in _matching(name) if p.name.endswith(".npz")]
    if name is not None and not paths:
        raise VitzooError(f"{name!r} is not in the cache", "see `vitzoo cache list`")
    bad = 0
    for path in paths:
        reason = cache.check(path, full=True)
        if cache.Record.load(path) is None and reason is None:
            reason_text = "ok (no download record; archive CRCs checked)"
        else:
            reason_text = "ok" if reason is None else f"BAD: {reason}"
        typer.echo(f"{path.relative_to(config.cache_dir()).as_posix()}: {reason_text}")
        if reason is not None:
            bad += 1
            if delete:
                cache.remove(path)
                typer.echo(f"deleted {path}")
    if bad:
        raise VitzooError(f"{bad} of {len(paths)} cached files failed verification",
                          "delete them (--delete) and download again" if not delete else
                          "download them again")
    partial = sum(e.state == "partial" for e in cache.entries()) if name is None else 0
    skipped = f"; {partial} partial download(s) not checked (they resume)" if partial else ""
    if not paths:
        typer.echo(f"checked 0 files: the cache ({config.cache_dir()}) holds no complete "
                   f"checkpoint{skipped}")
    else:
        typer.echo(f"checked {len(paths)} file(s) in {config.cache_dir()}: all ok{skipped}")


def doctor_command(
    skip_ml: bool = typer.Option(False, "--skip-ml",
                                 help="Do not import jax/tensorflow (faster)."),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds per reachability check."),
) -> None:
    """Versions, accelerators, source reachability and cache size; exit 1 on a problem."""
    from vitzoo.doctor import run_doctor

    raise typer.Exit(run_doctor(skip_ml=skip_ml, timeout=timeout))


def register(app: typer.Typer) -> None:
    app.command("download")(download_command)
    app.add_typer(cache_app, name="cache")
    app.command("doctor")(doctor_command)
