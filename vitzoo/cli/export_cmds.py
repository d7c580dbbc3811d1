"""``vitzoo export``: a run, release file or catalog name as a timm / transformers / npz folder.

The conversion lives in :mod:`vitzoo.weights.export`; this module only resolves the
argument (a run folder, a local file, or a name fetched through the one resolver) and
prints the files written, one per line on stdout.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitzoo.cli.data_options import GCS_AUTH


def export_command(
    source: str = typer.Argument(..., help="A run folder (final.npz + run.json), an .npz file, "
                                 "a catalog name or an architecture alias."),
    to: str = typer.Option(..., "--to", help="Format: timm, transformers or npz."),
    out: Path = typer.Option(..., "--out", help="Folder to write: created, or replaced whole if it holds "
                             "only an earlier export (an interrupted export leaves the earlier one)."),
    gcs_auth: bool = GCS_AUTH,
) -> None:
    """Export a checkpoint for timm, Hugging Face transformers, or as a release-layout .npz."""
    from vitzoo.weights.export import FORMATS, check_export_folder, export_checkpoint, open_source

    if to not in FORMATS:
        from vitzoo.errors import VitzooError

        raise VitzooError(f"unknown export format {to!r}", f"use --to {' / '.join(FORMATS)}")
    check_export_folder(out)  # before a download: a wrong --out costs nothing
    path = Path(source).expanduser()
    if not path.is_dir():
        from vitzoo.download.resolve import resolve_checkpoint

        path = resolve_checkpoint(source, gcs_auth=gcs_auth)
    for written in export_checkpoint(open_source(path), to, out):
        typer.echo(str(written))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
