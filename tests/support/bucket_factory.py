"""A faithful stand-in for gs://vit_models/augreg/index.csv.

Every filename is the real grid's (756 pre-trained configs x 68 fine-tunes, plus
3 B/8 checkpoints fine-tuned at 224 only, minus the one missing ImageNet
fine-tune: 51,509 rows, 21 columns in the real order). The METRIC VALUES ARE
TEST DATA drawn from a seeded generator; they mean nothing about the models.

The names are spelled with vitzoo's own formatter, so ``tests/catalog/test_bucket_factory.py``
pins them to names written without it (the published filenames in index/sources and
a hand-typed sample of the grid): a grammar bug shared by both cannot pass unseen.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from vitzoo.catalog.embedded import load_grid
from vitzoo.catalog.schema import INDEX_CSV_NAMES
from vitzoo.config import EMBEDDED_INDEX_DIR
from vitzoo.names import PRETRAIN_DS, AdaptedName, PretrainedName

#: The third B/8 checkpoint is unknown in reality; the fake bucket uses this one.
FAKE_B8_CONFIGS = (("medium2", 0.1, 0.0), ("medium1", 0.1, 0.0), ("strong1", 0.1, 0.0))
#: The fine-tune the real index lacks (one of 756 at imagenet2012/384/lr 0.03); arbitrary here.
MISSING_ROW_ARCH = "Ti/16"


def fake_index_rows(seed: int = 0, i21k_30_token: str = "i21k") -> list[dict]:
    rng = random.Random(seed)
    grid = load_grid(EMBEDDED_INDEX_DIR / "sources")
    pre = grid["pretraining"]
    adaptation = grid["adaptation"]
    configs: list[tuple[PretrainedName, list[int]]] = []
    for arch in pre["archs"]:
        for ds in pre["datasets"]:
            token, epochs = PRETRAIN_DS[ds]
            token = i21k_30_token if ds == "i21k_30" else token
            for aug in pre["augmentations"]:
                for wd in pre["weight_decays"]:
                    for reg in pre["dropout_stochastic_depth"]:
                        name = PretrainedName(arch, ds, epochs, pre["lr"], aug, wd, reg, reg, token)
                        configs.append((name, adaptation["resolutions"]))
    for aug, wd, reg in FAKE_B8_CONFIGS:
        configs.append((PretrainedName("B/8", "i21k", 300, 0.001, aug, wd, reg, reg, "i21k"), [224]))
    rows: list[dict] = []
    skipped = False
    for name, resolutions in configs:
        final_val = round(rng.uniform(0.30, 0.55), 6)
        upstream = {
            "name": name.arch, "ds": name.ds, "epochs": name.epochs, "lr": name.lr,
            "aug": name.aug, "wd": name.wd, "do": name.do, "sd": name.sd,
            "best_val": round(final_val + rng.uniform(0, 0.01), 6), "final_val": final_val,
            "final_test": round(final_val - rng.uniform(0, 0.02), 6),
        }
        for adapt_ds, sweep in adaptation["datasets"].items():
            for steps in sweep["steps"]:
                for lr in sweep["lrs"]:
                    for res in resolutions:
                        if (not skipped and name.arch == MISSING_ROW_ARCH and adapt_ds == "imagenet2012"
                                and res == 384 and lr == 0.03):
                            skipped = True
                            continue
                        adapt = AdaptedName(name, adapt_ds, steps, lr, res)
                        val = round(rng.uniform(0.6, 0.99), 6)
                        rows.append({
                            **upstream, "adapt_ds": adapt_ds, "adapt_lr": lr, "adapt_steps": steps,
                            "adapt_resolution": res, "adapt_final_val": val,
                            "adapt_final_test": round(val - rng.uniform(0, 0.03), 6),
                            "params": rng.randint(5_000_000, 350_000_000),
                            "infer_samples_per_sec": None if name.arch == "B/8" else round(
                                rng.uniform(40, 9000), 2),
                            "filename": name.format(), "adapt_filename": adapt.format(),
                        })
    return rows


def index_csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(INDEX_CSV_NAMES), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in INDEX_CSV_NAMES})
    return buffer.getvalue().encode()


def write_index_csv(path: Path, rows: list[dict] | None = None) -> Path:
    path.write_bytes(index_csv_bytes(rows if rows is not None else fake_index_rows()))
    return path
