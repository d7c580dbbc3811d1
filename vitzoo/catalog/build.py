"""``vitzoo index build``: merge the sources into ``catalog.parquet`` + ``manifest.json``.

Sources, weakest first: (a) the embedded reconstruction (always), (b) a real
``index.csv`` from any fsspec URL, (c) the bucket's object listing. Real rows
replace reconstructed ones; the listing says which files exist and gives their
size and checksums. The build is all-or-nothing: everything is read and
validated in memory, then written whole into a new version folder, and one
atomic rename of the ``CURRENT`` pointer switches readers over (the layout is
described in :mod:`vitzoo.catalog.store`). Stopped at any moment, a build leaves
either the previous catalog or the new one in use, never a mix; the next build
clears what a stopped one left behind. When every source has the same
fingerprint as in the manifest in use, nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vitzoo.atomic import atomic_write, output_dir, write_json
from vitzoo.catalog import embedded, measured
from vitzoo.catalog.frame import sha256_file, write_column_file
from vitzoo.catalog.index_csv import read_index_csv
from vitzoo.catalog.schema import arrow_schema, table_from_rows
from vitzoo.catalog.store import (
    CATALOG_FILE,
    CATALOG_FILES,
    COLUMNS_FILE,
    MANIFEST_FILE,
    POINTER_FILE,
    STAGING_PREFIX,
    VERSION_PREFIX,
    current_version,
    is_version_name,
    read_manifest,
)
from vitzoo.config import DEFAULT_INDEX_CSV, EMBEDDED_INDEX_DIR
from vitzoo.errors import VitzooError
from vitzoo.versions import VITZOO_VERSION as __version__

SCHEMA_VERSION = 1
UNITS = ("accuracies (best_val ... adapt_final_test, imagenet_top1 ... imagenet_r_top5) are fractions "
         "in [0, 1] in the catalog, CSV and "
         "JSON; only formatted tables and plots show percentages. infer_samples_per_sec is images/s "
         "(V100, timm), params a count, size_bytes bytes")


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    changed: bool
    messages: list[str] = field(default_factory=list)
    version_dir: Path | None = None  # the folder now in use (holds the parquet)

    @property
    def catalog_path(self) -> Path:
        return (self.version_dir or self.out_dir) / CATALOG_FILE


def _schema_fingerprint() -> str:
    return hashlib.sha256(str(arrow_schema()).encode()).hexdigest()[:16]


def _embedded_source(sources_dir: Path) -> dict:
    files = {name: hashlib.sha256((sources_dir / name).read_bytes()).hexdigest()
             for name in sorted(embedded.SOURCE_FILES) if (sources_dir / name).exists()}
    repo = EMBEDDED_INDEX_DIR.parent
    # Relative inside the repository, so the committed manifest does not depend on where
    # the checkout lives (and a rebuild elsewhere is still a no-op).
    where = sources_dir.resolve()
    path = str(where.relative_to(repo)) if where.is_relative_to(repo) else str(where)
    fingerprint = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"kind": "embedded", "path": path, "files": files, "fingerprint": fingerprint}


def _remote_fingerprint(meta: dict) -> str:
    for key in ("md5", "etag", "generation", "crc32c"):
        if meta.get(key):
            return f"{key}:{meta[key]}"
    return ""


def _read_index_csv(url: str) -> tuple[pa.Table, dict]:
    from vitzoo import storage

    data, meta = storage.read_bytes(url)
    if meta.get("size") is not None and meta["size"] != len(data):
        raise VitzooError(
            f"{url}: truncated read ({len(data)} of {meta['size']} bytes)",
            "try again; a partial index.csv is never indexed",
        )
    if meta.get("md5"):
        actual = hashlib.md5(data).hexdigest()
        if actual != meta["md5"]:
            raise VitzooError(f"{url}: md5 mismatch (got {actual}, expected {meta['md5']})",
                              "the file changed or was corrupted in transit; try again")
    table = read_index_csv(data, url)
    source = {
        "kind": "index.csv", "url": url, "rows": table.num_rows,
        "size": len(data), "md5": meta.get("md5") or hashlib.md5(data).hexdigest(),
        "etag": meta.get("etag"), "generation": meta.get("generation"),
    }
    source["fingerprint"] = _remote_fingerprint(source)
    return table, source


def _listing_url_for(csv_url: str) -> str | None:
    """The bucket folder next to an index.csv in a bucket; web and local copies have none."""
    if not csv_url.startswith(("gs://", "s3://")):
        return None
    return csv_url.rsplit("/", 1)[0] + "/"


def _read_listing(url: str) -> tuple[dict[str, dict], dict]:
    from vitzoo import storage

    objects = storage.list_objects(url)
    files = {o["name"].removesuffix(".npz"): o for o in objects if o["name"].endswith(".npz")}
    listing_fp = hashlib.sha256(
        json.dumps(sorted((k, v.get("md5"), v.get("generation")) for k, v in files.items()),
                   default=str).encode()
    ).hexdigest()
    return files, {"kind": "listing", "url": url, "objects": len(files), "fingerprint": listing_fp}


def _real_rows(table: pa.Table, csv_url: str) -> list[dict]:
    prefix = csv_url.rsplit("/", 1)[0] if "/" in csv_url else "."
    rows = table.to_pylist()
    for row in rows:
        row.update(
            checkpoint=row["adapt_filename"], collection="augreg", row_source="index.csv",
            url=f"{prefix}/{row['filename']}.npz", adapt_url=f"{prefix}/{row['adapt_filename']}.npz",
            filename_verified=True, exists=True, exists_source="index.csv", caveats="",
        )
    return rows


def _apply_listing(rows: list[dict], files: dict[str, dict], url: str) -> int:
    found = 0
    for row in rows:
        if row.get("collection") != "augreg":
            continue
        adapt = files.get(row.get("adapt_filename") or "")
        upstream = files.get(row.get("filename") or "")
        row["exists"] = adapt is not None
        row["exists_source"] = f"bucket listing {url}"
        if adapt is not None:
            found += 1
            row.update(size_bytes=adapt.get("size"), md5=adapt.get("md5"),
                       crc32c=adapt.get("crc32c"), generation=adapt.get("generation"))
        if upstream is not None:
            row.update(upstream_size_bytes=upstream.get("size"), upstream_md5=upstream.get("md5"),
                       upstream_crc32c=upstream.get("crc32c"))
    return found


def _current_state(out_dir: Path) -> tuple[Path | None, dict]:
    """The version folder in use and its manifest; a damaged catalog counts as none (rebuilt)."""
    try:
        version = current_version(out_dir) if out_dir.is_dir() else None
        manifest = read_manifest(version) if version is not None else {}
    except VitzooError:
        return None, {}
    if version is None or manifest.get("catalog_sha256") != sha256_file(version / CATALOG_FILE):
        return None, {}
    return version, manifest


def _write_version(out_dir: Path, table: pa.Table, manifest: dict) -> Path:
    """Write the three files into a private folder, then name it ``catalog-<sha12>``.

    Nothing points at the folder yet, so readers cannot see it while it is incomplete.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a catalog is for every user
        pq.write_table(table, staging / CATALOG_FILE, compression="zstd", row_group_size=1 << 20)
        manifest["catalog_sha256"] = sha256_file(staging / CATALOG_FILE)
        write_column_file(staging / COLUMNS_FILE, table.to_pydict(), manifest["catalog_sha256"])
        write_json(staging / MANIFEST_FILE, manifest)
        version = out_dir / f"{VERSION_PREFIX}{manifest['catalog_sha256'][:12]}"
        suffix = 1
        while version.exists():  # a forced rebuild of identical rows: never touch the one in use
            suffix += 1
            version = out_dir / f"{VERSION_PREFIX}{manifest['catalog_sha256'][:12]}-{suffix}"
        os.replace(staging, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version


def _fsync(*paths: Path) -> None:
    """Flush files and folders to disk, so a power cut cannot leave ``CURRENT`` naming empty files."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _switch_to(out_dir: Path, version: Path) -> None:
    """The one step that changes what readers see: replace ``CURRENT`` atomically."""
    _fsync(*(version / name for name in CATALOG_FILES), version, out_dir)
    with atomic_write(out_dir / POINTER_FILE, "w", fsync=True) as handle:
        handle.write(version.name + "\n")
    _fsync(out_dir)


def _is_leftover_file(name: str) -> bool:
    """A 0.1 flat-layout file, or the temporary file of a pointer/flat write that was stopped."""
    if name in CATALOG_FILES:
        return True
    return name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in (*CATALOG_FILES, POINTER_FILE))


def _remove_stale(out_dir: Path, keep: Path) -> None:
    """Clear older versions, a stopped build's folders and a 0.1 flat layout's files.

    Only once ``CURRENT`` names ``keep``: before that, the old files may still be the catalog.
    """
    if keep == out_dir:  # a 0.1 flat layout still in use: its files are the catalog
        return
    for entry in out_dir.iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and (is_version_name(entry.name) or entry.name.startswith(STAGING_PREFIX)):
            shutil.rmtree(entry)
        elif entry.is_file() and _is_leftover_file(entry.name):
            entry.unlink()


def _publish(out_dir: Path, table: pa.Table, manifest: dict) -> Path:
    """Write a version, switch to it, clear the rest; a stop before the switch changes nothing.

    A version written but not switched to stays on disk until the next build clears it
    (removing it here could race a switch that did happen just before an interrupt).
    """
    version = _write_version(out_dir, table, manifest)
    _switch_to(out_dir, version)
    _remove_stale(out_dir, keep=version)
    return version


def _index_counts(rows: list[dict], index_csv: str) -> dict:
    augreg = [r for r in rows if r.get("collection") == "augreg"]
    pretrained = len({r["filename"] for r in augreg})
    return {"catalog_pretrained": pretrained, "catalog_finetunes": len(augreg),
            "explanation": f"{pretrained:,} pre-trained / {len(augreg):,} fine-tuned AugReg rows, "
                           f"as listed by {index_csv}"}


def _missing(table: pa.Table, have_csv: bool, have_listing: bool) -> list[str]:
    notes = []
    if not have_csv:
        notes.append("index.csv not read: pre-training and fine-tuning accuracies are known only "
                     "where a published source gives them; the rest are null")
    if not have_listing:
        notes.append("bucket listing not read: file sizes and checksums are unknown and "
                     "existence is known only for published files")
    total = table.num_rows
    for column in ("final_val", "adapt_final_val", "adapt_final_test", "infer_samples_per_sec",
                   "imagenet_top1"):
        known = pc.sum(pc.is_valid(table.column(column))).as_py() or 0
        if known < total:
            notes.append(f"{column}: known for {known:,} of {total:,} rows")
    unverified = pc.sum(pc.equal(table.column("filename_verified"), False)).as_py() or 0
    if unverified:
        notes.append(f"{unverified:,} rows have a reconstructed filename spelling that no source "
                     "confirms (i21k_30, caveat unconfirmed_name)")
    return notes


def _up_to_date(version: str | None, old: dict[str, Any], fingerprints: list[tuple]) -> bool:
    """Whether the published catalog was built by this tool and schema from these very sources."""
    return (version is not None
            and old.get("tool_version") == __version__
            and old.get("schema_version") == SCHEMA_VERSION
            and [tuple(x) for x in old.get("fingerprints", [])] == fingerprints)


def _with_index_rows(rows: list[dict[str, Any]], real_table: Any, index_csv: str,
                     sources_dir: Path, messages: list[str]) -> list[dict[str, Any]]:
    """The bucket's index.csv rows (with the embedded facts applied) replace the reconstructed
    AugReg grid; the other collections stay. Grid rows the CSV lacks are counted in ``messages``."""
    grid_names = {r["adapt_filename"] for r in rows if r["collection"] == "augreg"}
    real = _real_rows(real_table, index_csv)
    embedded.apply_timm(real, sources_dir)
    embedded.apply_published(real, sources_dir)
    embedded.apply_recommendations(real, sources_dir)
    dropped = len(grid_names - {r["adapt_filename"] for r in real})
    if dropped:
        messages.append(f"{dropped} reconstructed rows are not in {index_csv} and were dropped")
    return real + [r for r in rows if r["collection"] != "augreg"]


def _read_bucket(index_csv: str | None, listing: str | None, sources: list[dict[str, Any]],
                 messages: list[str]) -> tuple[Any, Any, str | None]:
    """``(index.csv table or None, listed files or None, listing URL)``; each source read is
    appended to ``sources``. An unreadable listing is a message, not a failed build."""
    real_table = None
    if index_csv:
        real_table, csv_source = _read_index_csv(index_csv)
        sources.append(csv_source)
    listing_url = _listing_url_for(index_csv) if (listing == "auto" and index_csv) else (
        None if listing == "auto" else listing
    )
    files = None
    if listing_url:
        try:
            files, listing_source = _read_listing(listing_url)
            sources.append(listing_source)
        except VitzooError as exc:
            messages.append(f"bucket listing skipped: {exc.one_line()}")
    return real_table, files, listing_url


def build_catalog(
    out_dir: Path,
    *,
    index_csv: str | None = DEFAULT_INDEX_CSV,
    listing: str | None = "auto",
    sources_dir: Path | None = None,
    force: bool = False,
) -> BuildResult:
    """Build (or confirm up to date) the catalog in ``out_dir``.

    ``index_csv=None`` builds from the embedded sources alone. ``listing="auto"``
    lists the bucket folder beside a remote index.csv; a listing that cannot be
    read is recorded as missing rather than failing the build.
    """
    started = time.perf_counter()
    output_dir(out_dir, "the catalog folder", create=False)  # before reading any source
    sources_dir = sources_dir or EMBEDDED_INDEX_DIR / "sources"
    messages: list[str] = []
    rows, stats = embedded.embedded_rows(sources_dir)
    sources = [_embedded_source(sources_dir) | {"rows": len(rows), "stats": stats}]
    rows_by_source = {"grid": 0, "index.csv": 0, "legacy": 0}
    real_table, files, listing_url = _read_bucket(index_csv, listing, sources, messages)

    version, old = _current_state(out_dir)
    fingerprints = [(s["kind"], s.get("url") or s.get("path"), s["fingerprint"]) for s in sources]
    fingerprints.append(("schema", "vitzoo", _schema_fingerprint()))
    if not force and _up_to_date(version, old, fingerprints):
        _remove_stale(out_dir, keep=version)  # what a build stopped after its switch left behind
        return BuildResult(out_dir, old, changed=False, messages=[*messages, "catalog is up to date"],
                           version_dir=version)

    if real_table is not None:
        rows = _with_index_rows(rows, real_table, index_csv, sources_dir, messages)
    measured_result = measured.apply_measured(rows, sources_dir)
    if measured_result.unmapped:
        messages.append(f"timm results: {len(measured_result.unmapped)} of {measured_result.names} "
                        "measured names have no catalog row: "
                        + "; ".join(f"{k} ({v})" for k, v in sorted(measured_result.unmapped.items())))
    if files is not None:
        found = _apply_listing(rows, files, listing_url)
        messages.append(f"bucket listing: {found} fine-tuned files found")
    for row in rows:
        rows_by_source[row["row_source"]] = rows_by_source.get(row["row_source"], 0) + 1

    final = table_from_rows(rows)
    counts = stats["release_counts"] if real_table is None else _index_counts(rows, index_csv)
    manifest = {
        "tool": "vitzoo",
        "tool_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": final.num_rows,
        "rows_by_source": rows_by_source,
        "sources": sources,
        "fingerprints": fingerprints,
        "counts": counts,
        "measured": measured_result.as_dict(),
        "units": UNITS,
        "missing": _missing(final, real_table is not None, files is not None),
        "build_seconds": None,
    }
    manifest["build_seconds"] = round(time.perf_counter() - started, 3)
    version = _publish(out_dir, final, manifest)
    return BuildResult(out_dir, manifest, changed=True, messages=messages, version_dir=version)
