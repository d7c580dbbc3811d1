"""``vitzoo data check``: what is wrong with a dataset, found before a fine-tune compiles.

Why: a broken image folder or a TFDS split that leaks test images into training is found
today only after a long compile, or never (a leak just inflates the test accuracy). The
check reads the splits a fine-tune with the same options would use and reports:

- classes and image counts per split, class imbalance (largest/smallest class) and the
  classes with fewer than ``min_images`` images;
- unreadable files: zero bytes, not an image, or corrupt (every image is fully decoded
  with Pillow); files of other types in class folders, which a fine-tune ignores;
- exact duplicates within a split and across splits, found by SHA-256 of the *encoded*
  bytes: a re-encoded, resized or re-compressed copy has other bytes and is not found;
- the image size distribution (min / median / max width and height).

Image folders are read file by file (local or a ``gs://``/``s3://`` folder, the layouts of
:mod:`vitzoo.data.folder`); TFDS splits are read with image decoding skipped, so the hash
is of the stored bytes and decode errors are Pillow's. When the fine-tune would carve a
validation split, the same deterministic carve (:func:`vitzoo.data.source.carve`) is
recomputed here over the readable images, so duplicates across the carve are found too.

:func:`preflight` is the cheap part that ``finetune`` runs on the dataset it has already
opened (counts, the files it skipped as unreadable, tiny classes; no decode, no hashing).
It warns and never stops the run: the unreadable files are already left out of training,
and a dataset that trains today must keep training. ``vitzoo data check`` is the strict
one (exit 1).

This module imports no jax and no catalog; TensorFlow only for TFDS datasets.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitzoo.data.folder import IMAGE_SUFFIXES, ZERO_BYTES, _class_dirs, _layout, _require_classes
from vitzoo.data.remote import READ_WORKERS, RemotePath
from vitzoo.data.source import DataSplits, carve
from vitzoo.errors import VitzooError

#: Classes with fewer images than this in a split are listed (``--min-images``).
MIN_IMAGES = 10
#: ``preflight`` names the smallest training class when the largest has this many times more.
IMBALANCE_WARNING = 10.0
HASH = "sha256"
#: Images decoded at once: bounds the encoded bytes held while a TFDS split is read.
CHUNK = 256
NOT_AN_IMAGE = "not an image"
CORRUPT = "corrupt"


@dataclass(frozen=True)
class Image:
    """One image as read: where it is, its split and class, and what reading it found."""

    split: str
    name: str  # relative path in a folder, ``split[index]`` in TFDS
    label: int
    digest: str | None  # hex SHA-256 of the encoded bytes (None: could not be read at all)
    size: tuple[int, int] | None  # (width, height) when it decoded
    problem: str | None = None  # ZERO_BYTES, NOT_AN_IMAGE or CORRUPT
    detail: str = ""


@dataclass
class CheckReport:
    """What :func:`check_dataset` found; :meth:`as_dict` is the ``--format json`` document."""

    dataset: str
    kind: str  # folder or tfds
    class_names: list[str]
    splits: list[str]
    images: list[Image]
    ignored: list[str] = field(default_factory=list)  # files of other types in class folders
    notes: list[str] = field(default_factory=list)
    min_images: int = MIN_IMAGES

    @property
    def unreadable(self) -> list[Image]:
        return [i for i in self.images if i.problem]

    def counts(self) -> dict[str, list[int]]:
        """``{split: images per class}`` over the readable images."""
        out = {s: [0] * len(self.class_names) for s in self.splits}
        for image in self.images:
            if not image.problem:
                out[image.split][image.label] += 1
        return out

    def duplicates(self) -> list[list[Image]]:
        """Groups of two or more readable images with the same bytes, in reading order."""
        groups: dict[str, list[Image]] = defaultdict(list)
        for image in self.images:
            if image.digest and not image.problem:
                groups[image.digest].append(image)
        return [g for g in groups.values() if len(g) > 1]

    def across_splits(self) -> list[list[Image]]:
        """Duplicate groups that span two or more splits: the leaks."""
        return [g for g in self.duplicates() if len({i.split for i in g}) > 1]

    def within_splits(self) -> list[list[Image]]:
        return [g for g in self.duplicates() if len({i.split for i in g}) == 1]

    @property
    def problems(self) -> list[str]:
        """What would hurt a fine-tune (the CLI exits 1 when there is any)."""
        found = []
        if self.unreadable:
            found.append(f"{len(self.unreadable)} unreadable file(s)")
        if leaks := self.across_splits():
            found.append(f"{len(leaks)} image(s) duplicated across splits (same bytes)")
        return found

    def sizes(self, split: str) -> dict[str, dict[str, int]] | None:
        """min / median / max width and height of the readable images of ``split``."""
        shapes = np.array([i.size for i in self.images if i.split == split and i.size], np.int64)
        if not len(shapes):
            return None
        return {axis: {"min": int(col.min()), "median": int(np.median(col)), "max": int(col.max())}
                for axis, col in (("width", shapes[:, 0]), ("height", shapes[:, 1]))}

    def imbalance(self, split: str) -> dict[str, Any]:
        """Largest/smallest class count (None when a class is empty) and the small classes."""
        counts = self.counts()[split]
        small = [{"class": self.class_names[c], "images": n} for c, n in enumerate(counts)
                 if n < self.min_images]
        low, high = min(counts), max(counts)
        return {"max_over_min": round(high / low, 3) if low else None, "smallest": low,
                "largest": high, "below_min_images": small}

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts()
        splits = []
        for split in self.splits:
            total = sum(counts[split])
            splits.append({
                "split": split, "images": total,
                "unreadable": sum(1 for i in self.unreadable if i.split == split),
                "duplicate_groups_within": sum(1 for g in self.within_splits() if g[0].split == split),
                "sizes": self.sizes(split), "imbalance": self.imbalance(split),
                "classes": [{"class": name, "images": n, "fraction": n / total if total else None}
                            for name, n in zip(self.class_names, counts[split], strict=True)]})
        return {
            "dataset": self.dataset, "kind": self.kind, "num_classes": len(self.class_names),
            "splits": splits, "min_images": self.min_images,
            "unreadable": [{"split": i.split, "file": i.name, "problem": i.problem,
                            "detail": i.detail} for i in self.unreadable],
            "ignored_files": list(self.ignored),
            "duplicates": {"hash": f"{HASH} of the encoded bytes (exact copies only)",
                           "across_splits": [_group(g) for g in self.across_splits()],
                           "within_splits": [_group(g) for g in self.within_splits()]},
            "problems": self.problems, "notes": list(self.notes)}


def _group(images: list[Image]) -> dict[str, Any]:
    return {HASH: images[0].digest, "images": [{"split": i.split, "file": i.name, "label": i.label}
                                               for i in images]}


# --- reading one image ----------------------------------------------------------------


def inspect_bytes(data: bytes) -> tuple[str, tuple[int, int] | None, str | None, str]:
    """(SHA-256, (width, height), problem, detail) of one encoded image, fully decoded."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, None, ZERO_BYTES, ""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            size = image.size
            image.load()
    except UnidentifiedImageError:
        return digest, None, NOT_AN_IMAGE, "Pillow does not recognise the format"
    except Exception as exc:  # Pillow raises many types for damaged files
        return digest, None, CORRUPT, f"{type(exc).__name__}: {exc}"[:200]
    if size[0] < 1 or size[1] < 1:
        return digest, None, CORRUPT, f"empty image {size[0]}x{size[1]}"
    return digest, size, None, ""


def _read_file(path: Any, split: str, name: str, label: int) -> Image:
    try:
        data = path.read_bytes()
    except VitzooError:  # a refused/unreachable remote read fails the check, not one file
        raise
    except OSError as exc:
        return Image(split, name, label, None, None, CORRUPT, f"cannot read: {exc}"[:200])
    digest, size, problem, detail = inspect_bytes(data)
    return Image(split, name, label, digest, size, problem, detail)


def _parallel(function: Callable[[Any], Image], items: Iterable[Any], workers: int) -> list[Image]:
    """``function`` over ``items`` in threads, CHUNK at a time (Pillow and file reads release the GIL)."""
    out: list[Image] = []
    iterator = iter(items)
    with ThreadPoolExecutor(workers) as pool:
        while chunk := list(itertools.islice(iterator, CHUNK)):
            out.extend(pool.map(function, chunk))
    return out


# --- image folders --------------------------------------------------------------------


def _folder_files(split_dir: Any, classes: list[str]) -> tuple[list[tuple[Any, int]], list[Any]]:
    """(image files with their class, other files) under each class folder of ``split_dir``."""
    images, other = [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append((path, label))
            else:
                other.append(path)
    return images, other


def check_folder(root: Any, *, val_fraction: float = 0.1, min_images: int = MIN_IMAGES,
                 workers: int | None = None) -> CheckReport:
    """Check an image folder laid out as ``vitzoo finetune`` reads it (see module docstring)."""
    workers = workers or (READ_WORKERS if isinstance(root, RemotePath)
                          else max(2, min(16, (os.cpu_count() or 2) * 2)))
    train_dir, eval_dir, _ = _layout(root)
    carved = eval_dir is None or train_dir is None
    base = (train_dir or root) if carved else train_dir
    classes = [p.name for p in _class_dirs(base)]
    _require_classes(base, classes)
    notes: list[str] = []
    parts = [("all" if carved else "train", base)] + ([] if carved else [(eval_dir.name, eval_dir)])
    if not carved:
        extra = sorted({p.name for p in _class_dirs(eval_dir)} - set(classes))
        if extra:
            raise VitzooError(f"{eval_dir} has classes that {train_dir} lacks: {', '.join(extra)}",
                              "every evaluation class must also exist in train/")
    images: list[Image] = []
    ignored: list[str] = []
    for split, split_dir in parts:
        files, other = _folder_files(split_dir, classes)
        ignored += [str(p.relative_to(root)) for p in other]
        images += _parallel(lambda f, s=split: _read_file(f[0], s, str(f[0].relative_to(root)), f[1]),
                            files, workers)
    splits = [s for s, _ in parts]
    if carved:
        images, splits = _carve_folder(images, val_fraction, notes)
    return CheckReport(str(root), "folder", classes, splits, images, ignored, notes, min_images)


def _carve_folder(images: list[Image], val_fraction: float,
                  notes: list[str]) -> tuple[list[Image], list[str]]:
    """Name the readable images train or val by the fine-tune's own per-class carve."""
    readable = [i for i, image in enumerate(images) if not image.problem]
    labels = np.array([images[i].label for i in readable], np.int64)
    val_name = f"val (carved {val_fraction:.0%})"
    if len(readable) < 2:
        notes.append("too few readable images to carve a validation split")
        return [_renamed(i, "train") for i in images], ["train", val_name]
    _, val_idx = carve(len(readable), val_fraction, labels)
    in_val = {readable[int(i)] for i in val_idx}
    notes.append(f"no test/ or val/ folder: a fine-tune carves {len(in_val)} of the "
                 f"{len(readable)} readable images per class as validation; checked as split "
                 f"{val_name!r}")
    return ([_renamed(image, val_name if i in in_val else "train") for i, image in enumerate(images)],
            ["train", val_name])


def _renamed(image: Image, split: str) -> Image:
    return Image(split, image.name, image.label, image.digest, image.size, image.problem, image.detail)


# --- TFDS -----------------------------------------------------------------------------


def check_tfds(name: str, *, train_split: str | None = None, eval_split: str | None = None,
               data_dir: str | None = None, manual_dir: str | None = None,
               val_fraction: float = 0.1, min_images: int = MIN_IMAGES,
               workers: int | None = None) -> CheckReport:
    """Check the TFDS splits a fine-tune would read: stored bytes hashed, every image decoded."""
    from vitzoo.data.tfdata import tf_cpu
    from vitzoo.data.tfds import EVAL_CANDIDATES, _builder, _has_split, _keys

    tf_cpu()
    builder = _builder(name, data_dir, manual_dir)
    image_key, label_key = _keys(builder)
    class_names = list(builder.info.features[label_key].names)
    train = train_split or "train"
    chosen = eval_split or next((s for s in EVAL_CANDIDATES if _has_split(builder, s)), None)
    workers = workers or max(2, min(16, (os.cpu_count() or 2) * 2))
    notes: list[str] = []
    images: list[Image] = []
    for split in [train] + ([chosen] if chosen else []):
        images += _parallel(_inspect_example, _examples(builder, split, image_key, label_key), workers)
    splits = [train] + ([chosen] if chosen else [])
    if chosen is None:  # as load_tfds: an unstratified carve over the whole training split
        _, val_idx = carve(len(images), val_fraction)
        in_val = set(val_idx.tolist())
        splits = [f"{train}[-carved {val_fraction:.0%}]", f"{train}[carved {val_fraction:.0%}]"]
        images = [_renamed(image, splits[i in in_val]) for i, image in enumerate(images)]
        notes.append(f"{name} has no test or validation split: a fine-tune carves "
                     f"{len(in_val)} examples of {train} as validation; checked as {splits[1]!r}")
    return CheckReport(name, "tfds", class_names, splits, images, [], notes, min_images)


def _examples(builder: Any, split: str, image_key: str,
              label_key: str) -> Iterator[tuple[str, str, bytes, int]]:
    from vitzoo.data.tfds import encoded_split

    ds = encoded_split(builder, split)
    for index, example in enumerate(ds.as_numpy_iterator()):
        yield split, f"{split}[{index}]", bytes(example[image_key]), int(example[label_key])


def _inspect_example(example: tuple[str, str, bytes, int]) -> Image:
    split, name, data, label = example
    digest, size, problem, detail = inspect_bytes(data)
    return Image(split, name, label, digest, size, problem, detail)


# --- entry points ---------------------------------------------------------------------


def check_dataset(dataset: str, *, train_split: str | None = None, eval_split: str | None = None,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  val_fraction: float = 0.1, gcs_auth: bool = False,
                  min_images: int = MIN_IMAGES) -> CheckReport:
    """Check ``dataset`` (an image folder, local or in a bucket, or a TFDS name) as finetune reads it."""
    from vitzoo.data import image_folder

    if not dataset or not dataset.strip():
        raise VitzooError("empty DATASET", "give a TFDS name or an image folder")
    if not 0.0 < val_fraction < 1.0:
        raise VitzooError(f"--val-fraction must be between 0 and 1, got {val_fraction}",
                          "use e.g. --val-fraction 0.1")
    if min_images < 1:
        raise VitzooError(f"--min-images must be at least 1, got {min_images}")
    path = image_folder(dataset, gcs_auth=gcs_auth)
    if path is not None:
        if train_split not in (None, "train") or eval_split is not None:
            raise VitzooError("--train-split/--eval-split apply to TFDS datasets only",
                              "an image folder uses DIR/train + DIR/test or a --val-fraction split")
        return check_folder(path, val_fraction=val_fraction, min_images=min_images)
    return check_tfds(dataset, train_split=train_split, eval_split=eval_split, data_dir=data_dir,
                      manual_dir=manual_dir, val_fraction=val_fraction, min_images=min_images)


def preflight(data: DataSplits) -> list[str]:
    """One-line warnings about an opened dataset, cheap enough to run before every fine-tune.

    Uses only what opening the dataset already found: the files it skipped as unreadable
    (left out of training) and the class counts of an in-memory training split. No
    decoding, no hashing: duplicates need ``vitzoo data check``.
    """
    warnings = []
    if data.skipped:
        zero = sum(1 for _, reason in data.skipped if reason == ZERO_BYTES)
        first, reason = data.skipped[0]
        warnings.append(
            f"warning: {len(data.skipped)} unreadable file(s) left out of the run"
            f"{f' ({zero} of zero bytes)' if zero else ''}, e.g. {first} ({reason[:80]}); "
            f"`vitzoo data check {data.name}` lists them all")
    labels = getattr(data.train, "labels", None)
    if labels is not None and len(labels):
        labels = np.asarray(labels)
        counts = (labels.sum(0) if labels.ndim == 2  # multi-hot: images per class
                  else np.bincount(labels, minlength=data.num_classes))
        low, high = int(counts.argmin()), int(counts.argmax())
        if counts[low] == 0 or counts[high] >= IMBALANCE_WARNING * counts[low]:
            warnings.append(
                f"warning: class {data.class_names[low]!r} has {counts[low]} training image(s), "
                f"class {data.class_names[high]!r} {counts[high]}; "
                f"`vitzoo data check {data.name}` shows every class")
    return warnings
