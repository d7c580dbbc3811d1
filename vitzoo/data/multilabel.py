"""Multi-label datasets: an image folder described by a labels file, read as multi-hot targets.

The labels file is a CSV: the image's path relative to the dataset folder, then its class
names separated by ``;`` (``train/dog_and_cat.jpg,cat;dog``; an empty second column is an
image with no class). A first row whose path column reads ``path``, ``file``, ``filename``
or ``image`` is a header. The classes are the sorted union of every name in the file, so
train and evaluation agree on the columns whatever each split happens to hold.

Splits follow the first folder of each path: ``test/`` is the test split, ``val/`` or
``validation/`` the validation split, anything else training. Without a validation folder
a deterministic ``val_fraction`` of the training rows is held out (:func:`carve`, seeded
independently of the run): the threshold of the F1 score is chosen there, never on the
split it is reported on. The evaluation split is test when there is one, else validation.

The targets are ``int32 [N, K]`` multi-hot rows in :attr:`Examples.labels`; the in-memory
pipeline gathers rows by index whatever their shape, so batching, sharding and the exact
resume are the single-label ones.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.data.source import DataSplits, carve
from vitzoo.errors import VitzooError

#: ``DataOptions.task`` values: one class per image (softmax) or any number (sigmoid).
MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
TASKS = (MULTICLASS, MULTILABEL)
#: The labels file looked for in the dataset folder when ``--labels`` is not given.
DEFAULT_LABELS_FILE = "labels.csv"
SEPARATOR = ";"
_HEADER_NAMES = {"path", "file", "filename", "image", "relative_path"}
_TEST_DIRS = ("test",)
_VAL_DIRS = ("val", "validation")


def parse_labels(text: str, source: str = "labels file") -> list[tuple[str, list[str]]]:
    """``(relative path, [class, ...])`` per row of a labels file (see the module docstring)."""
    rows: list[tuple[str, list[str]]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            continue
        path = row[0].strip()
        if number == 1 and path.lower() in _HEADER_NAMES:
            continue
        if len(row) > 2:
            raise VitzooError(f"{source} line {number} has {len(row)} columns",
                              "write two columns: path,class1;class2 (quote a path with commas)")
        names = [n.strip() for n in (row[1] if len(row) > 1 else "").split(SEPARATOR)]
        rows.append((path, sorted({n for n in names if n})))
    if not rows:
        raise VitzooError(f"{source} lists no images",
                          "one row per image: relative/path.jpg,class1;class2")
    return rows


def multi_hot(rows: list[list[str]], class_names: list[str]) -> np.ndarray:
    """``int32 [len(rows), len(class_names)]``: 1 where the row names the class."""
    column = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(rows), len(class_names)), np.int32)
    for i, names in enumerate(rows):
        targets[i, [column[n] for n in names]] = 1
    return targets


def labels_file(root: Any, given: str | None) -> Any:
    """The labels file: ``given`` (a path), else ``DIR/labels.csv``; a missing one is one line."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_file() and (root / given).is_file():
            return root / given
        if not path.is_file():
            raise VitzooError(f"labels file {given} does not exist",
                              "give --labels FILE: a CSV of relative/path.jpg,class1;class2")
        return path
    path = root / DEFAULT_LABELS_FILE
    if not path.is_file():
        raise VitzooError(f"--task multilabel needs a labels file and {root} has no "
                          f"{DEFAULT_LABELS_FILE}",
                          "give --labels FILE: a CSV of relative/path.jpg,class1;class2")
    return path


def _split_of(path: str) -> str:
    first = path.replace("\\", "/").split("/", 1)[0].lower()
    return "test" if first in _TEST_DIRS else "val" if first in _VAL_DIRS else "train"


def _split_rows(paths: list[str], source: Path, *, val_fraction: float, need_train: bool,
                eval_split: str | None, notes: list[str]) -> tuple[Any, Any, Any, str]:
    """Row indices of the train, validation and evaluation splits, and the evaluation split's
    name: ``test/`` and ``val/`` paths are theirs, the rest train (a part held out as
    validation when there is no ``val/``: the F1 threshold is chosen there)."""
    by_split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, path in enumerate(paths):
        by_split[_split_of(path)].append(i)
    train_rows = np.asarray(by_split["train"], np.int64)
    if by_split["val"]:
        val_rows = np.asarray(by_split["val"], np.int64)
    else:
        if len(train_rows) < 2:
            raise VitzooError(f"{source} lists {len(train_rows)} training image(s)",
                              "list more images, or put some under val/")
        keep, held = carve(len(train_rows), val_fraction)
        train_rows, val_rows = train_rows[keep], train_rows[held]
        notes.append(f"held out {len(val_rows)} of {len(keep) + len(held)} training images "
                     f"({val_fraction:.0%}) as validation: the F1 threshold is chosen there")
    test_rows = np.asarray(by_split["test"], np.int64)
    chosen = (eval_split or ("test" if len(test_rows) else "val")).lower()
    chosen = "val" if chosen == "validation" else chosen
    if chosen == "all" and need_train:
        raise VitzooError("--eval-split all evaluates on every image, training images included",
                          "use it with `vitzoo evaluate`")
    eval_rows = {"train": train_rows, "val": val_rows, "test": test_rows,
                 "all": np.arange(len(paths))}.get(chosen)
    if eval_rows is None:
        raise VitzooError(f"unknown --eval-split {eval_split!r} for a multi-label folder",
                          "use test, val, train or all")
    if not len(eval_rows):
        raise VitzooError(f"{source} lists no {chosen} images",
                          "put evaluation images under test/ or val/, or omit --eval-split")
    return train_rows, val_rows, eval_rows, chosen


def load_multilabel_folder(root: Any, labels: str | None, *, val_fraction: float = 0.1,
                           need_train: bool = True, eval_split: str | None = None,
                           cache_dir: Path | None = None) -> DataSplits:
    """The folder's train, validation and evaluation splits with multi-hot targets.

    ``eval_split``: None (test, else validation), ``test``, ``val``/``validation``, ``train``
    or ``all`` (every listed image). The images are read and checked as a single-label
    folder's are (:func:`vitzoo.data.folder.read_files`): unreadable files are skipped
    and listed, never fatal.
    """
    from vitzoo.config import vitzoo_home
    from vitzoo.data.folder import read_files

    source = labels_file(root, labels)
    rows = parse_labels(source.read_text(), str(source))
    class_names = sorted({n for _, names in rows for n in names})
    if len(class_names) < 2:
        raise VitzooError(f"{source} names {len(class_names)} class(es); multi-label "
                          "classification needs at least 2", "label the images with more classes")
    targets = multi_hot([names for _, names in rows], class_names)
    notes = [f"multi-label: {len(rows)} images, {len(class_names)} classes from {source}"]
    train_rows, val_rows, eval_rows, chosen = _split_rows(
        [path for path, _ in rows], source, val_fraction=val_fraction, need_train=need_train,
        eval_split=eval_split, notes=notes)
    wanted = {"eval": eval_rows, **({"train": train_rows, "val": val_rows} if need_train else {})}
    convert_dir = cache_dir or (vitzoo_home() / "converted")
    splits, skipped = {}, []
    for name, indices in wanted.items():
        files = [(root / rows[int(i)][0], int(i)) for i in indices]
        examples, missed = read_files(files, root, convert_dir)
        if len(examples) == 0:
            raise VitzooError(f"no readable images in the {name} split listed by {source}",
                              "check the paths: they are relative to the dataset folder")
        # read_files carries each row's index as its label: swap in the multi-hot row
        examples.labels = targets[np.asarray(examples.labels, np.int64)]
        splits[name] = examples
        skipped += [s for s in missed if s not in skipped]
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable or missing file(s)")
    absent = [class_names[i] for i in np.flatnonzero(splits["train"].labels.sum(0) == 0)] \
        if need_train else []
    if absent:
        notes.append(f"{len(absent)} class(es) have no training image: {', '.join(absent[:5])}")
    return DataSplits(name=str(root), kind="folder", class_names=class_names,
                      train=splits.get("train"), eval=splits["eval"],
                      train_split="train" if need_train else None,
                      eval_split={"val": "validation"}.get(chosen, chosen), notes=notes,
                      skipped=skipped, task=MULTILABEL, validation=splits.get("val"))
