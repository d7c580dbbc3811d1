"""Image folders as datasets: ``DIR/train|test|val/<class>/*`` or ``DIR/<class>/*``.

Every candidate file is opened once with Pillow before anything is compiled, so a
corrupt file, an empty class or a folder with one class is reported up front, never
as a crash at step 3,000. Files that TensorFlow's native decoders read correctly
(JPEG/PNG/GIF/BMP in ordinary colour modes) are passed through untouched; anything else
Pillow can read (WebP, CMYK JPEG, palette BMP, 16-bit images, ...) is converted once to
an RGB PNG (:func:`vitzoo.data.preprocess.to_rgb_png`, the conversion ``predict`` applies to
the same file). Unreadable files are skipped and listed.

Folders whose names start with ``.`` (``.ipynb_checkpoints``, ``.git``, a class hidden on
purpose) are never classes; each one skipped is named in the notes, so a class does not
vanish without a word. ``eval_split="all"`` (``vitzoo evaluate --eval-split all``) scores
every readable image of the folder, whatever its layout: nothing is carved or held back.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitzoo.atomic import atomic_write, output_errors
from vitzoo.data.memory import memory_budget
from vitzoo.data.pipeline import Examples
from vitzoo.data.preprocess import is_native, to_rgb_png
from vitzoo.data.remote import READ_WORKERS, RemotePath
from vitzoo.data.source import DataSplits, carve
from vitzoo.errors import VitzooError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TRAIN_DIRS = ("train",)
EVAL_DIRS = ("test", "val", "validation")
_VAL_NAMES = ("val", "validation")
#: The reason a skipped empty file is given (``vitzoo data check`` and finetune's warning count them).
ZERO_BYTES = "zero bytes"
#: ``eval_split`` that evaluates every image of the folder (train, test and val alike).
ALL_IMAGES = "all"
#: The ``eval_split`` values a folder has: train, its held-out split (test/, val/ or carved), all.
FOLDER_EVAL_SPLITS = ("train", "test", "val", "validation", ALL_IMAGES)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _hidden_note(*folders: Path) -> list[str]:
    """A note naming the hidden folders (``.name``) that were not read as classes."""
    notes = []
    for folder in folders:
        hidden = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("."))
        if hidden:
            shown = ", ".join(hidden[:5]) + (f" and {len(hidden) - 5} more" if len(hidden) > 5 else "")
            notes.append(f"skipped {len(hidden)} hidden folder(s) in {folder}: {shown} (a name "
                         "starting with '.' is not a class; rename it to use it)")
    return notes


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _check(path: Path, keep_bytes: bool, convert_dir: Path) -> tuple[object | None, str | None,
                                                                       bool]:
    """Read one file: (payload, error, converted). Payload is bytes or a path string."""
    from PIL import Image

    try:
        data = path.read_bytes()
        if not data:
            return None, ZERO_BYTES, False
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode = image.format, image.mode
            if fmt == "JPEG" and is_native(fmt, mode):
                image.draft(mode, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
            image.load()
        if image.size[0] < 1 or image.size[1] < 1:
            return None, "empty image", False
    except VitzooError:  # a refused or unreachable remote read fails the folder, not one file
        raise
    except Exception as exc:  # PIL raises many types for bad files
        return None, f"{type(exc).__name__}: {exc}".strip()[:200], False
    if is_native(fmt, mode):
        return (data if keep_bytes else _file_payload(path, data)), None, False
    try:
        png = to_rgb_png(data)
    except Exception as exc:
        return None, f"cannot convert {fmt} {mode}: {exc}"[:200], False
    if keep_bytes:
        return png, None, True
    with output_errors(convert_dir, "the converted-image cache"):
        convert_dir.mkdir(parents=True, exist_ok=True)
    # keyed on the original's bytes (already read): a file rewritten in place never finds
    # the conversion of its old content
    target = convert_dir / f"{hashlib.sha256(data).hexdigest()}.png"
    if not target.exists():
        with atomic_write(target) as handle:
            handle.write(png)
    return str(target), None, True


def _file_payload(path: Path | RemotePath, data: bytes) -> str:
    """What TensorFlow reads later: the file itself, or a local copy of a remote object (hook)."""
    return path.local_copy(data) if isinstance(path, RemotePath) else str(path)


def _read(files: list[tuple[Path, int]], root: Path, keep_bytes: bool, convert_dir: Path,
          ) -> tuple[Examples, list[tuple[str, str]], int]:
    workers = READ_WORKERS if isinstance(root, RemotePath) else max(2, min(16, (os.cpu_count() or 2) * 2))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda f: _check(f[0], keep_bytes, convert_dir), files))
    payload, labels, skipped, converted = [], [], [], 0
    for (path, label), (item, error, was_converted) in zip(files, results, strict=True):
        if item is None:
            skipped.append((str(path.relative_to(root)), error or "unreadable"))
            continue
        payload.append(item)
        labels.append(label)
        converted += was_converted
    return (Examples(payload, np.asarray(labels, np.int32), from_files=not keep_bytes),
            skipped, converted)


def read_files(files: list[tuple[Path, int]], root: Path, convert_dir: Path
               ) -> tuple[Examples, list[tuple[str, str]]]:
    """Read and check ``(file, label)`` pairs as a folder's images are: the multi-label reader.

    Kept in memory when their bytes fit the budget; unreadable files are skipped and listed.
    """
    keep = sum(f.stat().st_size for f, _ in files if f.is_file()) <= memory_budget()
    examples, skipped, _ = _read(files, root, keep, convert_dir)
    return examples, skipped


def _layout(root: Path, eval_split: str | None = None
            ) -> tuple[Path | None, Path | None, Path | None]:
    """``(train/, the held-out folder evaluated on, a val/ folder beside it)``, each or None.

    The evaluated folder is the one ``eval_split`` names when the folder has it (``val``
    reads ``val/`` even beside a ``test/``), else the first of :data:`EVAL_DIRS`. The third
    is the folder's own validation split when it is not the evaluated one (``val/`` beside
    an evaluated ``test/``): where the probe chooses between candidates.
    """
    names = {p.name.lower(): p for p in _class_dirs(root)}
    train = next((names[n] for n in TRAIN_DIRS if n in names), None)
    asked = _VAL_NAMES if eval_split in _VAL_NAMES else (eval_split,)
    evaluation = next((names[n] for n in (*asked, *EVAL_DIRS) if n in names), None)
    validation = next((names[n] for n in _VAL_NAMES if n in names), None)
    return train, evaluation, validation if validation != evaluation else None


def _files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            out.extend((f, label) for f in _image_files(folder))
    return out


def _require_classes(root: Path, classes: list[str]) -> None:
    if not classes:
        raise VitzooError(f"{root} has no class folders",
                          "lay it out as DIR/<class>/* or DIR/train/<class>/* + DIR/test/<class>/*")
    if len(classes) < 2:
        raise VitzooError(f"{root} has only one class ({classes[0]!r}); classification needs "
                          "at least 2", "add a folder per class")


def _require_filled(where: str, examples: Examples, classes: list[str]) -> None:
    if len(examples) == 0:
        raise VitzooError(f"no readable images in {where}",
                          "supported formats: JPEG, PNG, BMP, GIF, WebP, TIFF")
    counts = np.bincount(examples.labels, minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise VitzooError(f"{len(empty)} class folder(s) in {where} have no readable images: "
                          f"{shown}", "add images or remove the empty folders")


@dataclass
class _Scan:
    """What one folder layout yields before the notes common to both layouts are added."""

    classes: list[str]
    train: Examples | None
    evaluation: Examples
    train_name: str | None
    eval_name: str
    skipped: list[tuple[str, str]]
    converted: int
    notes: list[str] = field(default_factory=list)


def load_folder(
    root: str | os.PathLike[str] | RemotePath,
    *,
    val_fraction: float = 0.1,
    need_train: bool = True,
    eval_split: str | None = None,
    cache_dir: Path | None = None,
    validation: bool = False,
) -> DataSplits:
    """Scan an image folder into train/eval :class:`Examples` (see module docstring).

    ``eval_split`` (evaluation only): ``train``, ``test``/``val``, ``all`` (every image of
    the folder) or None (the held-out split the fine-tune would have used).
    ``validation``: also read the folder's own ``val/`` when it is not the evaluated split
    (``DIR/train``, ``DIR/val`` and ``DIR/test``) into ``DataSplits.validation``.
    """
    from vitzoo.config import vitzoo_home

    root = root if isinstance(root, RemotePath) else Path(root).expanduser()
    if not root.is_dir():
        raise VitzooError(f"dataset folder {root} does not exist", "check the path")
    if eval_split is not None and eval_split not in FOLDER_EVAL_SPLITS:  # never a silent default
        raise VitzooError(f"--eval-split {eval_split!r} is not a split of an image folder",
                          "use train, test or val (the test/ or val/ folder, else the carved "
                          "part) or all; TFDS-style slices apply to TFDS datasets only")
    convert_dir = cache_dir or (vitzoo_home() / "converted")
    train_dir, eval_dir, val_dir = _layout(root, eval_split)
    if eval_split == ALL_IMAGES:
        if need_train:
            raise VitzooError("--eval-split all evaluates on every image, training images included",
                              "use it with `vitzoo evaluate`; a fine-tune evaluates on held-out images")
        scan = _scan_all(root, train_dir, eval_dir, convert_dir)
    elif train_dir is not None and eval_dir is not None:
        scan = _scan_split_folders(root, train_dir, eval_dir, convert_dir,
                                   need_train=need_train, eval_split=eval_split)
    else:
        scan = _scan_and_carve(root, train_dir, convert_dir, val_fraction=val_fraction,
                               need_train=need_train, eval_split=eval_split)
    notes = ([root.listing.note()] if isinstance(root, RemotePath) else []) + scan.notes
    if scan.converted:
        notes.append(f"converted {scan.converted} image(s) TensorFlow cannot decode natively "
                     "(WebP, CMYK, palette BMP, ...) to RGB PNG")
    if scan.skipped:
        notes.append(f"skipped {len(scan.skipped)} unreadable file(s)")
    held_out = None
    if validation and need_train and val_dir is not None and scan.train_name == "train":
        _require_eval_classes(train_dir, val_dir, scan.classes)
        files = _files(val_dir, scan.classes)
        keep = sum(f.stat().st_size for f, _ in files) <= memory_budget()
        held_out, skipped, _ = _read(files, root, keep, convert_dir)
        scan.skipped += skipped
    return DataSplits(name=str(root), kind="folder", class_names=scan.classes, train=scan.train,
                      eval=scan.evaluation, train_split=scan.train_name,
                      eval_split=scan.eval_name, notes=notes, skipped=scan.skipped,
                      validation=held_out if held_out is not None and len(held_out) else None,
                      validation_split=val_dir.name if held_out is not None and len(held_out)
                      else None)


def _scan_split_folders(root: Path, train_dir: Path, eval_dir: Path, convert_dir: Path, *,
                        need_train: bool, eval_split: str | None) -> _Scan:
    """``DIR/train/<class>/*`` and ``DIR/test|val/<class>/*``: the classes are train's."""
    classes = [p.name for p in _class_dirs(train_dir)]
    _require_classes(train_dir, classes)
    _require_eval_classes(train_dir, eval_dir, classes)
    want_train = need_train or eval_split == "train"
    train_files = _files(train_dir, classes) if want_train else []
    eval_files = _files(eval_dir, classes) if eval_split != "train" else []
    keep = sum(f.stat().st_size for f, _ in train_files + eval_files) <= memory_budget()
    skipped: list[tuple[str, str]] = []
    train = None
    converted = 0
    if want_train:
        train, skipped_train, c = _read(train_files, root, keep, convert_dir)
        skipped += skipped_train
        converted += c
        _require_filled(str(train_dir), train, classes)
    if train is not None and eval_split == "train":
        evaluation, eval_name = train, "train"
    else:
        evaluation, skipped_eval, c = _read(eval_files, root, keep, convert_dir)
        skipped += skipped_eval
        converted += c
        eval_name = eval_dir.name
        if len(evaluation) == 0:
            raise VitzooError(f"no readable images in {eval_dir}",
                              "supported formats: JPEG, PNG, BMP, GIF, WebP, TIFF")
    return _Scan(classes, train, evaluation, "train" if train is not None else None, eval_name,
                 skipped, converted, _hidden_note(train_dir, eval_dir))


def _require_eval_classes(train_dir: Path, eval_dir: Path, classes: list[str]) -> None:
    extra = sorted({p.name for p in _class_dirs(eval_dir)} - set(classes))
    if extra:
        raise VitzooError(f"{eval_dir} has classes that {train_dir} lacks: {', '.join(extra)}",
                          "every evaluation class must also exist in train/")


def _scan_all(root: Path, train_dir: Path | None, eval_dir: Path | None, convert_dir: Path) -> _Scan:
    """Every readable image, for ``evaluate --eval-split all``: train/ and test|val/ together,
    or the whole ``DIR/<class>/*`` folder, uncarved. The classes are train's (or the root's)."""
    folders = ([train_dir, eval_dir] if eval_dir is not None else [train_dir]) if train_dir is not None \
        else [root]
    classes = [p.name for p in _class_dirs(folders[0])]
    _require_classes(folders[0], classes)
    if len(folders) == 2:
        _require_eval_classes(folders[0], folders[1], classes)
    files = [f for folder in folders for f in _files(folder, classes)]
    keep = sum(f.stat().st_size for f, _ in files) <= memory_budget()
    everything, skipped, converted = _read(files, root, keep, convert_dir)
    _require_filled(" and ".join(str(f) for f in folders), everything, classes)
    where = " + ".join(f"{f.name}/" for f in folders) if folders != [root] else str(root)
    notes = [f"--eval-split all: every readable image of {where} ({len(everything)}), "
             "training images included", *_hidden_note(*folders)]
    return _Scan(classes, None, everything, None, ALL_IMAGES, skipped, converted, notes)


def _scan_and_carve(root: Path, train_dir: Path | None, convert_dir: Path, *,
                    val_fraction: float, need_train: bool, eval_split: str | None) -> _Scan:
    """``DIR/<class>/*`` (or a lone ``DIR/train``): a validation split is carved per class."""
    notes = []
    if train_dir is not None:
        notes.append(f"{train_dir} has no test/ or val/ sibling: using it as the whole "
                     "dataset and carving a validation split")
    root_classes = train_dir if train_dir is not None else root
    classes = [p.name for p in _class_dirs(root_classes)]
    _require_classes(root_classes, classes)
    notes += _hidden_note(root_classes)
    files = _files(root_classes, classes)
    keep = sum(f.stat().st_size for f, _ in files) <= memory_budget()
    everything, skipped, converted = _read(files, root, keep, convert_dir)
    _require_filled(str(root_classes), everything, classes)
    train_idx, val_idx = carve(len(everything), val_fraction, everything.labels)
    if len(val_idx) == 0:
        raise VitzooError(f"{root} is too small to carve a validation split",
                          "add images, or provide DIR/train and DIR/test folders")
    notes.append(f"no test/ or val/ folder: carved a deterministic validation split of "
                 f"{len(val_idx)} images ({val_fraction:.0%} per class) from {len(everything)}")
    train_part, val_part = everything.subset(train_idx), everything.subset(val_idx)
    return _Scan(
        classes, train_part if (need_train or eval_split == "train") else None,
        train_part if eval_split == "train" else val_part, f"all[-{val_fraction:.0%} per class]",
        "train" if eval_split == "train" else f"carved {val_fraction:.0%} per class",
        skipped, converted, notes)
