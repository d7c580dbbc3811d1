"""Catalog commands: ``list``, ``show``, ``recommend`` and ``index build|info``.

These must start fast: only typer and pyarrow are imported (never pandas, jax,
flax or tensorflow); rich is loaded when a table is drawn.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitzoo.cli import filter_options as opt
from vitzoo.cli import render
from vitzoo.cli.accelerator_option import ALLOW_CPU
from vitzoo.cli.cluster_options import COORDINATOR, NUM_PROCESSES, PROCESS_ID
from vitzoo.cli.data_options import data_options, runtime_options
from vitzoo.config import DEFAULT_INDEX_CSV
from vitzoo.data.options import DataOptions
from vitzoo.errors import VitzooError

RECOMMEND_TABLE_COLUMNS = (
    "checkpoint", "name", "ds", "aug", "wd", "do", "final_val", "adapt_ds", "adapt_resolution",
    "adapt_lr", "adapt_final_val", "adapt_final_test", "infer_samples_per_sec", "caveats",
)


def list_command(
    arch: list[str] = opt.ARCH,
    ds: list[str] = opt.DS,
    aug: list[str] = opt.AUG,
    wd: list[str] = opt.WD,
    do: list[str] = opt.DO,
    sd: list[str] = opt.SD,
    adapt_ds: list[str] = typer.Option(None, "--adapt-ds", help="Fine-tuning dataset (imagenet2012, oxford_iiit_pet, kitti, cifar100, resisc45)."),
    res: list[str] = typer.Option(None, "--res", help="Fine-tuning resolution (224, 384)."),
    adapt_lr: list[str] = opt.ADAPT_LR,
    steps: list[str] = opt.STEPS,
    collection: list[str] = opt.COLLECTION,
    name: list[str] = opt.NAME,
    pretrained: bool = typer.Option(False, "--pretrained", help="One row per pre-trained checkpoint, with a count of its fine-tunes."),
    local: bool = opt.LOCAL,
    downloadable: bool = opt.DOWNLOADABLE,
    where: str = opt.WHERE,
    sort: str = typer.Option(None, "--sort", help="Column to sort by (the names in the table header)."),
    desc: bool = typer.Option(False, "--desc", help="Sort descending."),
    limit: int = opt.LIMIT,
    columns: str = typer.Option(None, "--columns", help="Comma-separated columns to show (default: a readable subset; 'all' for every column)."),
    wide: bool = opt.WIDE,
    fmt: opt.OutputFormat = opt.FORMAT,
    index: str = opt.INDEX,
    distinct: str = typer.Option(None, "--distinct", metavar="COLUMN", help=(
        "Instead of rows: each value of COLUMN with its number of rows, after the filters "
        "(e.g. --distinct name, --distinct adapt_ds --arch B/16).")),
) -> None:
    """List checkpoints matching the filters (the 21 index.csv columns plus vitzoo's)."""
    from vitzoo.catalog import api, schema
    from vitzoo.catalog.families import COLLECTION as FAMILIES_COLLECTION

    filters = opt.build_filters(arch=arch, ds=ds, aug=aug, wd=wd, do=do, sd=sd, adapt_ds=adapt_ds,
                                res=res, adapt_lr=adapt_lr, steps=steps, collection=collection,
                                name=name, where=where)
    notes = []
    stems = [] if pretrained or local else api.names_pretrained_files(index, filters)
    if stems:
        pretrained = True
        notes.append(f"--name gives a pre-trained file, so this is its row (as `vitzoo show` "
                     f"resolves it); its fine-tunes: `vitzoo list --where 'filename == "
                     f"\"{stems[0]}\"'`")
    if columns == "all":
        chosen = None
    elif columns:
        chosen = opt.split_values([columns])
        if fmt == "table" and render.CAVEATS_COLUMN not in chosen:  # read for the marks only
            chosen.append(render.CAVEATS_COLUMN)
    else:  # the defaults carry the caveat codes: marks in a table, a column in csv/json
        families = bool(filters.collection) and all(
            c.split("/")[0] == FAMILIES_COLLECTION for c in filters.collection)
        chosen = [*(schema.DEFAULT_FAMILY_COLUMNS if families and not local else
                    schema.DEFAULT_PRETRAINED_COLUMNS if pretrained else schema.DEFAULT_LOCAL_COLUMNS
                    if local else schema.DEFAULT_LIST_COLUMNS), render.CAVEATS_COLUMN]
    if distinct:
        if columns:
            raise VitzooError("--distinct and --columns do not go together",
                              "--distinct COLUMN prints that column's values and their row counts")
        chosen = None
    needed = api.columns_needed(filters, [distinct] if distinct else chosen,
                                None if distinct and sort in (None, "rows") else sort, pretrained)
    table = api.load_table(index, columns=needed)
    options = {"pretrained": pretrained, "local_only": local, "downloadable": downloadable}
    result = api.run_query(table, filters=filters, sort=sort, desc=desc, limit=limit,
                           columns=None if distinct else chosen, distinct=distinct, **options)
    if local and not result.num_rows and not opt.any_filter(filters):
        notes.append("no registered runs yet: `vitzoo finetune ... --workdir DIR` registers one")
    elif not result.num_rows:
        notes.append(api.nothing_matches_note(table, filters, **options))
    render.emit(result, fmt, notes=notes, wide=wide,
                asked=[distinct, "rows"] if distinct else
                opt.split_values([columns]) if columns and columns != "all" else ())


def show_command(
    name: str = typer.Argument(..., metavar="CHECKPOINT", help=(
        "A checkpoint name, collection/name, a timm or Hugging Face name "
        "(timm/vit_base_patch16_224.augreg_in21k), or an architecture (its recommended checkpoint).")),
    fmt: opt.OutputFormat = opt.FORMAT,
    index: str = opt.INDEX,
) -> None:
    """Everything about one checkpoint: every field with its source, fine-tunes, downloads."""
    from vitzoo.catalog.show import describe

    if _is_path(name):
        from vitzoo.cli.show_view import describe_path

        details = describe_path(name, index)
    else:
        details = describe(name, index)
    if fmt == "table":
        from vitzoo.cli.show_view import print_details

        print_details(details)
    else:  # csv: the field table; json/jsonl: everything
        render.emit_document(details, fmt, rows=details["fields"])


def _is_path(name: str) -> bool:
    """A file the user points at (``./final.npz``, ``runs/x/final.npz``, ``~/a.npz``), not a
    catalog name: catalog names have at most one ``/`` (``collection/stem``) and no ``.npz``,
    except ``collection/stem.npz`` spelled like a bucket path, which is a path only if it exists."""
    path = Path(name).expanduser()
    if path.is_file():
        return True
    return name.endswith(".npz") and (name.startswith((".", "/", "~")) or name.count("/") > 1)


@runtime_options(autotune=True)
@data_options(required=False)
def recommend_command(
    data: DataOptions | None,
    arch: list[str] = opt.ARCH,
    adapt_ds: str = typer.Option(None, "--adapt-ds", help=(
        "Best fine-tune for this dataset, chosen by adapt_final_val (validation). Test accuracy "
        "is never used to choose: choosing on test overfits it and overstates the result.")),
    res: int = typer.Option(None, "--res", help="Only fine-tunes at this resolution."),
    min_throughput: float = typer.Option(None, "--min-throughput", help="Only checkpoints with at least this many images/s (V100, timm)."),
    pareto: bool = typer.Option(False, "--pareto", help="The accuracy-vs-throughput Pareto front instead."),
    metric: str = typer.Option(None, "--metric", help="Accuracy column for --pareto (default: adapt_final_val with --adapt-ds, else adapt_final_test)."),
    by: str = typer.Option(None, "--by", help=(
        "Rank by this numeric column instead, per architecture, over every row that knows it "
        "(e.g. imagenet_r_top1 for robustness, as measured by timm); test-split columns are refused. "
        "With --data: the probe score that chooses, on the validation part (default "
        "linear_accuracy; knn, Kshot, img_per_sec; see `vitzoo probe --sort`).")),
    wide: bool = opt.WIDE,
    fmt: opt.OutputFormat = opt.FORMAT,
    index: str = opt.INDEX,
    candidates: list[str] = typer.Option(None, "--candidates", help="With --dataset: recommended (default), downloadable, or names/paths."),
    coordinator: str = COORDINATOR,
    num_processes: int = NUM_PROCESSES,
    process_id: int = PROCESS_ID,
    allow_cpu: bool = ALLOW_CPU,
) -> None:
    """Recommended checkpoint per architecture: best i21k upstream by final_val (paper sec. 4.5).

    Ranks only where final_val is known for every candidate (a real index.csv was
    indexed); otherwise shows the published recommendation and says so. With --dataset,
    probes the candidates on that dataset and chooses by measured accuracy (see probe); with
    --coordinator, over several processes as probe does (process 0 writes the output).
    """
    cluster = {declared.param_decls[0]: value for declared, value in (
        (COORDINATOR, coordinator), (NUM_PROCESSES, num_processes), (PROCESS_ID, process_id))}
    if data:
        from vitzoo.backbone.distributed import resolve
        from vitzoo.cli.probe_cmds import recommend_by_data

        given = {"--adapt-ds": adapt_ds, "--res": res, "--min-throughput": min_throughput,
                 "--pareto": pareto or None, "--metric": metric}
        for option, value in given.items():
            if value is not None:
                raise VitzooError(f"{option} does not apply with --data (it filters the published "
                                  "catalog, not a probe)", f"drop {option}, or drop --data")
        return recommend_by_data(data, candidates=candidates, arch=arch, fmt=fmt,
                                 by=by or "linear_accuracy", wide=wide, index=index,
                                 cluster=resolve(coordinator, num_processes, process_id))
    for option, value in cluster.items():
        if value is not None:
            raise VitzooError(f"{option} applies to recommend --dataset only (a probe over "
                              "several processes)", f"drop {option}, or add --dataset")
    from vitzoo.catalog import api

    result = api.run_recommend(api.load_table(index), arch=opt.split_values(arch), adapt_ds=adapt_ds,
                               res=res, min_throughput=min_throughput, pareto=pareto,
                               metric=metric, by=by)
    table, notes = result.table, list(result.notes)
    if fmt == "table" and pareto:
        return _print_fronts(table, notes, result.metric, wide=wide)
    if fmt == "table":  # the basis column is long and mostly repeated: say it once below
        if "basis" in table.column_names:
            notes = _basis_notes(table) + notes
        if not adapt_ds and not pareto and not by:
            notes.append("each row is the pick's ImageNet fine-tune, with its results; "
                         "`vitzoo show ARCH` names the pre-trained checkpoint to fine-tune")
        shown = by_table_columns(by) if by else RECOMMEND_TABLE_COLUMNS
        table = table.select([c for c in shown if c in table.column_names])
    render.emit(table, fmt, notes=notes, wide=wide, asked=[by] if by else ())


def _basis_notes(table) -> list[str]:
    """``chosen by BASIS`` once per distinct basis, naming the architectures when they differ."""
    groups: dict[str, list[str]] = {}
    for basis, name in zip(table.column("basis"), table.column("name"), strict=True):
        if basis:
            groups.setdefault(basis, []).append(name or "?")
    if len(groups) == 1:
        return [f"chosen by {next(iter(groups))}"]
    return [f"chosen by {basis}: {', '.join(names)}" for basis, names in groups.items()]


def by_table_columns(by: str) -> tuple[str, ...]:
    """What ``recommend --by`` shows: the ranked value beside the name, then what it costs."""
    return ("checkpoint", "name", by, "adapt_resolution", "infer_samples_per_sec", "caveats")


#: What a Pareto table shows: the trade-off itself first, so it survives 80 columns.
PARETO_TABLE_COLUMNS = ("checkpoint", "infer_samples_per_sec", "name", "adapt_resolution", "caveats")


def _print_fronts(table, notes: list[str], metric: str | None, *, wide: bool) -> None:
    """One table per fine-tuning dataset, titled with it: fronts of different datasets are
    not comparable, and the dataset and throughput must stay visible at 80 columns."""
    datasets = list(dict.fromkeys(table.column("adapt_ds")))
    titles = {n.split(":", 1)[0]: n for n in notes if ": Pareto front of " in n}
    marks = ""
    for adapt_ds in datasets:
        part = table.filter([d == adapt_ds for d in table.column("adapt_ds")])
        columns = [c for c in (*PARETO_TABLE_COLUMNS[:2], metric, *PARETO_TABLE_COLUMNS[2:])
                   if c and c in part.column_names]
        title = titles.get(adapt_ds or "pre-trained", f"{adapt_ds}: Pareto front")
        marks += render.print_table(part.select(columns), title=title, wide=wide,
                                    asked=[c for c in columns if c != "caveats"], legend=False)
    render.print_legend(marks)
    render.print_table_notes([n for n in notes if ": Pareto front of " not in n])


index_app = typer.Typer(help="Build and inspect the catalog.", no_args_is_help=True)


def index_build(
    source: str = typer.Option(
        DEFAULT_INDEX_CSV, "--source",
        help="index.csv to merge: any fsspec URL or local path; 'embedded' for the published facts alone."),
    listing: str = typer.Option(
        "auto", "--listing",
        help="Bucket folder to list for sizes/checksums; 'auto' = beside a remote index.csv; 'none' to skip."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: VITZOO_HOME/index, which then takes precedence)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if no source changed."),
) -> None:
    """Build catalog.parquet + manifest.json from the sources, atomically."""
    from vitzoo.catalog.build import build_catalog
    from vitzoo.config import user_index_dir

    out_dir = out or user_index_dir()
    result = build_catalog(
        out_dir,
        index_csv=None if source == "embedded" else source,
        listing=None if listing == "none" else listing,
        force=force,
    )
    for message in result.messages:
        typer.echo(message, err=True)
    manifest = result.manifest
    verb = "built" if result.changed else "unchanged"
    typer.echo(f"{verb}: {result.catalog_path} ({manifest['rows']:,} rows: "
               + ", ".join(f"{k} {v:,}" for k, v in manifest["rows_by_source"].items() if v)
               + ")")


def index_info(
    fmt: opt.OutputFormat = opt.FORMAT,
    index: str = opt.INDEX,
) -> None:
    """Which catalog is in use, where its rows came from, and what is missing."""
    from vitzoo.catalog import store

    location = store.locate(index)
    manifest = store.read_manifest(location)
    if fmt != "table":  # csv: rows by source; json/jsonl: the whole manifest
        by_source = [{"source": k, "rows": v} for k, v in manifest.get("rows_by_source", {}).items()]
        render.emit_document({"catalog": str(location.path), "origin": location.origin, **manifest},
                             fmt, rows=by_source)
        return
    from vitzoo.cli.show_view import print_manifest

    print_manifest(location, manifest)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("show")(show_command)
    app.command("recommend")(recommend_command)
    index_app.command("build")(index_build)
    index_app.command("info")(index_info)
    app.add_typer(index_app, name="index")
