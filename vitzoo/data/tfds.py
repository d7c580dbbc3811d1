"""TFDS datasets by name (``oxford_iiit_pet``, ``cifar100:3.*``), read into random-access form.

The split is read once with image decoding skipped, so what is kept in memory is
the encoded JPEG/PNG bytes (a few hundred MB for Pets or CIFAR), and every later
epoch decodes in parallel inside tf.data. Class names come from the dataset's own
``ClassLabel`` feature. When the dataset has no test split, a deterministic
validation split is carved from the training split and the run says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitzoo.data.source import DataSplits, Examples, carve, memory_budget
from vitzoo.errors import VitzooError

EVAL_CANDIDATES = ("test", "validation")


def _builder(name: str, data_dir: str | None, manual_dir: str | None) -> Any:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # DatasetNotFoundError and version errors
        raise VitzooError(f"unknown TFDS dataset {name!r} ({str(exc).splitlines()[0][:160]})",
                          "give a TFDS name like oxford_iiit_pet or cifar100:3.*, "
                          "or the path of an image folder") from None
    try:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        builder.download_and_prepare(download_config=config)
    except Exception as exc:
        raise VitzooError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and could not be "
            f"downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})",
            "prepare it on a machine with network access (tfds build) and pass --data-dir, "
            "or --manual-dir for datasets that need manual downloads") from None
    return builder


def _keys(builder: Any) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise VitzooError(f"TFDS dataset {builder.name!r} is not an image classification "
                          "dataset (needs an Image and a ClassLabel feature)",
                          "choose another dataset")
    image = "image" if "image" in images else images[0]
    label = "label" if "label" in labels else labels[0]
    return image, label


def _read_split(builder: Any, split: str, image_key: str, label_key: str) -> Examples:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    decoders = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
                if isinstance(f, tfds.features.Image)}
    try:
        ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except Exception as exc:
        known = ", ".join(builder.info.splits.keys()) or "unknown"
        raise VitzooError(f"cannot read split {split!r} of {builder.name} "
                          f"({str(exc).splitlines()[0][:160]})",
                          f"available splits: {known}; slicing like train[:90%] works") from None
    ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
    payload, labels = [], []
    for data, label in ds.as_numpy_iterator():
        payload.append(bytes(data))
        labels.append(int(label))
    return Examples(payload, np.asarray(labels, np.int32))


def _has_split(builder: Any, split: str) -> bool:
    known = set(builder.info.splits.keys())
    base = split.split("[")[0]
    return base in known if known else True  # unknown metadata (mock): try it


def load_tfds(
    name: str,
    *,
    train_split: str | None = "train",
    eval_split: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    val_fraction: float = 0.1,
    need_train: bool = True,
) -> DataSplits:
    """Read a TFDS dataset (see module docstring); ``eval_split`` None picks test/validation."""
    builder = _builder(name, data_dir, manual_dir)
    image_key, label_key = _keys(builder)
    class_names = list(builder.info.features[label_key].names)
    if len(class_names) < 2:
        raise VitzooError(f"{name} has {len(class_names)} class(es); need at least 2")
    size = builder.info.dataset_size
    budget = memory_budget()
    if size and int(size) > budget:
        raise VitzooError(
            f"{name} is {int(size) / 2**30:.1f} GiB encoded, more than the {budget / 2**30:.1f} "
            "GiB this run may hold in memory",
            "streaming datasets larger than memory is not supported yet; use a split slice "
            "like train[:20%] or a machine with more memory")
    notes: list[str] = []
    train_split = train_split or "train"
    chosen_eval = eval_split
    carved = False
    if chosen_eval is None:
        chosen_eval = next((s for s in EVAL_CANDIDATES if _has_split(builder, s)), None)
        if chosen_eval is None:
            carved = True
    train = None
    if carved:
        everything = _read_split(builder, train_split, image_key, label_key)
        train_idx, val_idx = carve(len(everything), val_fraction)
        notes.append(f"{name} has no test or validation split: carved a deterministic "
                     f"{val_fraction:.0%} validation split ({len(val_idx)} examples) from "
                     f"{train_split}")
        train = everything.subset(train_idx) if need_train else None
        evaluation = everything.subset(val_idx)
        eval_name = f"{train_split}[carved {val_fraction:.0%}]"
        train_split = f"{train_split}[-carved {val_fraction:.0%}]"
    else:
        if need_train:
            train = _read_split(builder, train_split, image_key, label_key)
        evaluation = _read_split(builder, chosen_eval, image_key, label_key)
        eval_name = chosen_eval
    for what, examples in (("training", train), ("evaluation", evaluation)):
        if examples is not None and len(examples) == 0:
            raise VitzooError(f"the {what} split of {name} is empty", "check the split slicing")
    return DataSplits(name=name, kind="tfds", class_names=class_names, train=train,
                      eval=evaluation, train_split=train_split if need_train else None,
                      eval_split=eval_name, notes=notes)
