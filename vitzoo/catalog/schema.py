"""The one column schema of the catalog.

The first 21 columns are exactly those of the bucket's ``augreg/index.csv`` (as
documented by vit_jax's ``get_augreg_df``), so code written against the
reference notebook keeps working. The rest are vitzoo's: where each file lives,
whether it is known to exist, and where every value came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # str, float, int or bool
    doc: str


_F, _I, _S, _B = "float", "int", "str", "bool"

#: The 21 columns of gs://vit_models/augreg/index.csv, in file order.
INDEX_CSV_COLUMNS: tuple[Column, ...] = (
    Column("name", _S, "architecture as in the paper, e.g. B/16 or R26+S/32"),
    Column("ds", _S, "pre-training dataset: i1k (300 ep), i21k (300 ep), i21k_30 (30 ep); other "
           "families: as timm's tag names it (lvd142m, laion2b, openai, webli, ...)"),
    Column("epochs", _I, "pre-training epochs"),
    Column("lr", _F, "pre-training learning rate"),
    Column("aug", _S, "pre-training augmentation: none light0 light1 medium1 medium2 strong1 strong2"),
    Column("wd", _F, "pre-training weight decay"),
    Column("do", _F, "pre-training dropout"),
    Column("sd", _F, "pre-training stochastic depth"),
    Column("best_val", _F, "best upstream validation accuracy during pre-training (fraction)"),
    Column("final_val", _F, "final upstream validation accuracy (fraction); recommend ranks by it"),
    Column("final_test", _F, "final upstream test accuracy (fraction)"),
    Column("adapt_ds", _S, "fine-tuning dataset (TFDS name)"),
    Column("adapt_lr", _F, "fine-tuning learning rate"),
    Column("adapt_steps", _I, "fine-tuning steps at batch 512"),
    Column("adapt_resolution", _I, "fine-tuning resolution in pixels"),
    Column("adapt_final_val", _F, "fine-tuned validation accuracy (fraction); used to choose"),
    Column("adapt_final_test", _F, "fine-tuned test accuracy (fraction); reported, never used to choose"),
    Column("params", _I, "number of parameters"),
    Column("infer_samples_per_sec", _F, "inference throughput, images/s on a V100 with timm"),
    Column("filename", _S, "pre-trained checkpoint file stem (without .npz)"),
    Column("adapt_filename", _S, "fine-tuned checkpoint file stem (without .npz)"),
)

#: vitzoo's own columns.
EXTRA_COLUMNS: tuple[Column, ...] = (
    Column("checkpoint", _S, "the name to type: the fine-tune's stem, or collection/stem (older ones)"),
    Column("collection", _S, "augreg, imagenet21k, imagenet21k+imagenet2012, sam, mixer/..., "
           "timm-families/<family>, local"),
    Column("url", _S, "where the pre-trained file lives"),
    Column("adapt_url", _S, "where the fine-tuned file lives"),
    Column("row_source", _S, "grid (reconstructed), index.csv (real), legacy (reference README), "
           "timm (timm's pretrained configurations), local"),
    Column("value_sources", _S, "field=source pairs for values that came from published facts"),
    Column("filename_verified", _B, "false when the filename spelling is a reconstruction not seen anywhere"),
    Column("exists", _B, "the fine-tuned file is known to exist (null: unknown)"),
    Column("exists_source", _S, "what says so: bucket listing, index.csv, published reference"),
    Column("size_bytes", _I, "fine-tuned file size from the bucket listing"),
    Column("md5", _S, "fine-tuned file md5 (hex) from the bucket listing"),
    Column("crc32c", _S, "fine-tuned file crc32c (base64) from the bucket listing"),
    Column("generation", _I, "fine-tuned file GCS generation"),
    Column("upstream_size_bytes", _I, "pre-trained file size from the bucket listing"),
    Column("upstream_md5", _S, "pre-trained file md5 (hex)"),
    Column("upstream_crc32c", _S, "pre-trained file crc32c (base64)"),
    Column("hf_repo", _S, "timm's copy of the fine-tuned file on the Hugging Face Hub, when one exists"),
    Column("upstream_hf_repo", _S, "timm's copy of the pre-trained file on the Hugging Face Hub"),
    Column("recommended", _S, "published pick: 'pretrained' (README/notebook recommended upstream) or "
           "'pretrained+finetune' (also its best ImageNet fine-tune)"),
    Column("note", _S, "caveats about this row, in words"),
    Column("caveats", _S, "comma-separated caveat codes ('' = none); legend in vitzoo.catalog.caveats"),
)

#: Test sets timm measured its copies of Google's checkpoints on: column prefix -> what it is.
MEASURED_SETS: dict[str, str] = {
    "imagenet": "ImageNet-1k validation (50,000 images)",
    "imagenet_real": "ImageNet-1k validation with the ReaL labels",
    "imagenetv2_mf": "ImageNetV2 matched-frequency",
    "sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A (200-class subset)",
    "imagenet_r": "ImageNet-R (200-class subset)",
}

#: timm's measurements of the file (its ``results/*.csv``): fractions, on the row they were
#: measured for only (index/sources/timm_results.csv).
MEASURED_COLUMNS: tuple[Column, ...] = (
    *(Column(f"{prefix}_{k}", _F, f"{what} top-{k[3:]} accuracy measured by timm (fraction)")
      for prefix, what in MEASURED_SETS.items() for k in ("top1", "top5")),
    Column("measured_resolution", _I, "input resolution timm measured the *_top1/*_top5 columns at"),
    Column("measured_crop_pct", _F, "centre-crop fraction timm measured the *_top1/*_top5 columns with"),
    Column("measured_source", _S, "where the *_top1/*_top5 columns come from (timm results files, commit)"),
)
#: The measured accuracy columns (fractions), in table order.
MEASURED_ACCURACY_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in MEASURED_COLUMNS if c.name.endswith(("_top1", "_top5")))

#: The other families' checkpoints that timm serves (index/sources/timm_families.csv): what
#: the file is, beyond the architecture. Null on Google's releases.
FAMILY_COLUMNS: tuple[Column, ...] = (
    Column("family", _S, "deit, deit3, dino, dinov2, mae, clip or siglip (null: Google's releases)"),
    Column("resolution", _I, "input resolution the file was trained at, pixels (timm input_size)"),
    Column("head", _S, "classifier (trained labels), projection (CLIP image-text embedding) or none"),
    Column("num_classes", _I, "outputs of the head: classes, or a projection's width; 0 without one"),
    Column("head_ds", _S, "data the classifier head was trained on (in1k, in12k); null without one"),
    Column("license", _S, "licence timm records for the weights"),
    Column("mean", _S, "per-channel mean the file expects (timm pretrained_cfg, space-separated)"),
    Column("std", _S, "per-channel standard deviation the file expects (space-separated)"),
    Column("interpolation", _S, "resize interpolation the file was evaluated with (bicubic, bilinear)"),
    Column("crop_pct", _F, "centre-crop fraction of timm's evaluation transform"),
    Column("crop_mode", _S, "timm's crop mode (center, squash)"),
    Column("switches", _S, "the model switches the file needs (tokens, pooling, activation, norms)"),
)
FAMILY_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in FAMILY_COLUMNS)

COLUMNS: tuple[Column, ...] = INDEX_CSV_COLUMNS + EXTRA_COLUMNS + MEASURED_COLUMNS + FAMILY_COLUMNS
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
INDEX_CSV_NAMES: tuple[str, ...] = tuple(c.name for c in INDEX_CSV_COLUMNS)
COLUMN_TYPES: dict[str, str] = {c.name: c.type for c in COLUMNS}

ACCURACY_COLUMNS = ("best_val", "final_val", "final_test", "adapt_final_val", "adapt_final_test",
                    *MEASURED_ACCURACY_COLUMNS)
#: Columns describing the pre-trained checkpoint (shared by all its fine-tunes).
PRETRAINED_COLUMNS = (
    "name", "ds", "epochs", "lr", "aug", "wd", "do", "sd", "best_val", "final_val",
    "final_test", "filename", "url", "upstream_size_bytes", "upstream_md5", "upstream_crc32c",
    "upstream_hf_repo", "filename_verified", "collection", *FAMILY_COLUMN_NAMES,
)
#: Shown by ``vitzoo list`` when ``--columns`` is not given; the checkpoint name first
#: (``available`` and, for pre-trained rows, ``finetunes`` are computed by the query).
DEFAULT_LIST_COLUMNS = (
    "checkpoint", "name", "ds", "aug", "wd", "do", "adapt_ds", "adapt_lr", "adapt_steps",
    "adapt_resolution", "adapt_final_val", "adapt_final_test", "infer_samples_per_sec",
    "available",
)
DEFAULT_PRETRAINED_COLUMNS = (
    "checkpoint", "name", "ds", "aug", "wd", "do", "sd", "final_val", "finetunes", "available",
)
#: ``vitzoo list --collection timm-families[/...]``: what tells the other families' files apart.
DEFAULT_FAMILY_COLUMNS = (
    "checkpoint", "name", "family", "ds", "resolution", "head", "head_ds", "params",
    "imagenet_top1", "license", "available",
)
DEFAULT_LOCAL_COLUMNS = (
    "checkpoint", "name", "adapt_ds", "adapt_resolution", "adapt_steps", "adapt_final_val",
    "adapt_final_test", "filename", "available",
)


def arrow_schema() -> pa.Schema:
    """The parquet schema (pyarrow is imported only by code that reads or writes parquet)."""
    import pyarrow as pa

    types = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
    return pa.schema([pa.field(c.name, types[c.type]) for c in COLUMNS])


def table_from_rows(rows: list[dict]) -> pa.Table:
    """Build a parquet-ready table; missing keys become null."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=arrow_schema())


def value_sources_of(row: dict) -> dict[str, str]:
    """``value_sources`` (``column=source; column=source``) as ``{column: source}``."""
    out = {}
    for part in (row.get("value_sources") or "").split("; "):
        if "=" in part:
            key, source = part.split("=", 1)
            out[key] = source
    return out
