"""TFDS datasets by name (``oxford_iiit_pet``, ``cifar100:3.*``), read into random-access form.

The split is read once with image decoding skipped, so what is kept in memory is
the encoded JPEG/PNG bytes (a few hundred MB for Pets or CIFAR), and every later
epoch decodes in parallel inside tf.data. Class names come from the dataset's own
``ClassLabel`` feature. When the dataset has no test split, a deterministic
validation split is carved from the training split and the run says so.

A split whose encoded size exceeds the memory budget (from the split metadata, or found
out while reading when there is none) is not read into memory: it becomes a
:class:`~vitzoo.data.stream.StreamSplit`, read sequentially every epoch, and the run
notes says so. ``stream=True`` asks for that path for every split, ``stream=False``
refuses it (a resumed run must read its training data the way it started).
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from vitzoo.data.memory import memory_budget
from vitzoo.data.pipeline import Examples
from vitzoo.data.source import DataSplits, Split, carve
from vitzoo.data.stream import StreamSplit, count_examples, label_row
from vitzoo.data.tfdata import skip_decoders
from vitzoo.errors import VitzooError

EVAL_CANDIDATES = ("test", "validation")


def lookup(name: str, data_dir: str | None) -> Any:
    """The TFDS builder of ``name``, nothing prepared or read: an unknown name is one line."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # DatasetNotFoundError and version errors
        raise VitzooError(f"unknown TFDS dataset {name!r} ({str(exc).splitlines()[0][:160]})",
                          "give a TFDS name like oxford_iiit_pet or cifar100:3.*, "
                          "or the path of an image folder") from None


def _builder(name: str, data_dir: str | None, manual_dir: str | None) -> Any:
    import tensorflow_datasets as tfds

    builder = lookup(name, data_dir)
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


def _multilabel_key(builder: Any) -> tuple[str, str, list[str]]:
    """``(image key, label key, class names)`` of a dataset whose label is a sequence of classes.

    ``voc``'s ``labels`` is ``Sequence(ClassLabel)``: the classes present in the image.
    """
    import tensorflow_datasets as tfds

    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    sequences = [k for k, f in features.items() if isinstance(f, tfds.features.Sequence)
                 and isinstance(f.feature, tfds.features.ClassLabel)]
    if not images or not sequences:
        raise VitzooError(f"TFDS dataset {builder.name!r} has no label sequence for multi-label "
                          "classification (needs an Image and a Sequence(ClassLabel) feature)",
                          "drop --task multilabel, or use an image folder with --labels FILE")
    label = "labels" if "labels" in sequences else sequences[0]
    return ("image" if "image" in images else images[0]), label, list(features[label].feature.names)


def _keys(builder: Any) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        sequences = [k for k, f in features.items() if isinstance(f, tfds.features.Sequence)
                     and isinstance(f.feature, tfds.features.ClassLabel)]
        raise VitzooError(f"TFDS dataset {builder.name!r} is not an image classification "
                          "dataset (needs an Image and a ClassLabel feature)",
                          f"its {sequences[0]!r} lists classes per image: add --task multilabel"
                          if images and sequences else "choose another dataset")
    image = "image" if "image" in images else images[0]
    label = "label" if "label" in labels else labels[0]
    return image, label


def encoded_split(builder: Any, split: str) -> Any:
    """``split`` of a prepared builder with its images left encoded (bytes, in file order);
    a split TFDS cannot read is one line naming the splits it has."""
    try:
        return builder.as_dataset(split=split, decoders=skip_decoders(builder), shuffle_files=False)
    except Exception as exc:
        known = ", ".join(builder.info.splits.keys()) or "unknown"
        raise VitzooError(f"cannot read split {split!r} of {builder.name} "
                          f"({str(exc).splitlines()[0][:160]})",
                          f"available splits: {known}; slicing like train[:90%] works") from None


def _read_split(builder: Any, split: str, image_key: str, label_key: str,
                cap: int | None = None, multi_hot: int = 0) -> tuple[Examples, int, bool]:
    """Encoded examples of ``split``, their bytes, and whether the whole split was read.

    With ``cap`` the read stops as soon as more than ``cap`` bytes are held: the caller
    then streams the split instead.
    """
    ds = encoded_split(builder, split)
    ds = ds.map(lambda ex: (ex[image_key], label_row(ex[label_key], multi_hot)))
    payload, labels = [], []
    held = 0
    for data, label in ds.as_numpy_iterator():
        payload.append(bytes(data))
        labels.append(label if multi_hot else int(label))
        held += len(data)
        if cap is not None and held > cap:
            return Examples(payload, np.asarray(labels, np.int32)), held, False
    return Examples(payload, np.asarray(labels, np.int32)), held, True


def _split_bytes(builder: Any, split: str) -> tuple[int, int] | None:
    """(examples, encoded bytes) of ``split`` from its metadata; None when unknown."""
    try:
        info = builder.info.splits[split]
        examples, size = int(info.num_examples), int(info.num_bytes)
    except Exception:  # no metadata (e.g. mocked), or a split spec TFDS cannot size
        return None
    return (examples, size) if examples > 0 and size > 0 else None


def _stream(builder: Any, split: str, image_key: str, label_key: str,
            partial: tuple[int, int] | None = None, multi_hot: int = 0) -> StreamSplit:
    """A :class:`StreamSplit` for ``split``; ``partial`` is (examples, bytes) read so far."""
    known = _split_bytes(builder, split)
    if known is not None:
        return StreamSplit(builder, split, image_key, label_key, known[0], known[1] / known[0],
                           multi_hot=multi_hot)
    n = count_examples(builder, split, label_key)
    if n == 0:
        raise VitzooError(f"split {split!r} of {builder.name} is empty", "check the split slicing")
    avg = partial[1] / max(partial[0], 1) if partial else 1.0
    return StreamSplit(builder, split, image_key, label_key, n, avg, counted=True,
                       multi_hot=multi_hot)


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**27 else f"{size / 2**20:.1f} MiB"


class _Reader:
    """Reads splits in memory while they fit the budget, and streams the ones that do not."""

    def __init__(self, builder: Any, image_key: str, label_key: str, stream: bool | None,
                 multi_hot: int = 0):
        self.builder, self.image_key, self.label_key = builder, image_key, label_key
        self.stream = stream
        self.multi_hot = multi_hot  # multi-label: the number of classes of each 0/1 row
        self.budget = memory_budget()
        self.held = 0
        self.notes: list[str] = []

    def __call__(self, split: str) -> Split:
        """The split in memory when it fits (or streaming is refused), else streamed."""
        if self.stream:
            source = _stream(self.builder, split, self.image_key, self.label_key,
                             multi_hot=self.multi_hot)
            self.notes.append(f"streaming {split} ({source.num_examples} examples) from "
                              "the TFDS files instead of reading it into memory, as asked")
            return source
        room = self.budget - self.held
        examples, size, partial = self._fit(split)
        if examples is not None:
            return examples
        if self.stream is False:
            self._refuse(split, size, room, must_fit=False)
        return self._fallback(split, size, room, partial)

    def whole(self, split: str) -> Examples:
        """The split in memory, for carving a validation split (random access needed)."""
        room = self.budget - self.held
        examples, size, _ = self._fit(split)
        if examples is None:
            self._refuse(split, size, room, must_fit=True)
        return examples

    def _fit(self, split: str) -> tuple[Examples | None, int, tuple[int, int] | None]:
        """(the split in memory, its bytes, None), or (None, bytes, what was read) when too large."""
        room = self.budget - self.held
        known = _split_bytes(self.builder, split)
        if known is not None and known[1] > room:
            return None, known[1], None
        examples, size, complete = _read_split(self.builder, split, self.image_key,
                                               self.label_key, cap=room, multi_hot=self.multi_hot)
        if not complete:
            return None, size, (len(examples), size)
        self.held += size
        return examples, size, None

    def _fallback(self, split: str, size: int, room: int,
                  partial: tuple[int, int] | None) -> StreamSplit:
        source = _stream(self.builder, split, self.image_key, self.label_key, partial,
                         multi_hot=self.multi_hot)
        more = "" if partial is None else "more than "
        self.notes.append(
            f"streaming {split}: {more}{_gib(size)} encoded does not fit the {_gib(max(room, 0))} "
            f"memory budget left, so it is read from the TFDS files every epoch "
            f"({source.num_examples} examples; set VITZOO_MEMORY_BUDGET to change the budget)")
        return source

    def _refuse(self, split: str, size: int, room: int, must_fit: bool) -> NoReturn:
        if must_fit:
            raise VitzooError(
                f"{self.builder.name} has no test or validation split, and {split} "
                f"({_gib(size)} encoded) is too large to carve one in memory "
                f"({_gib(max(room, 0))} budget)",
                "give both splits as slices, e.g. --train-split train[:95%] "
                "--eval-split train[95%:]")
        raise VitzooError(
            f"{split} of {self.builder.name} is {_gib(size)} encoded, more than the "
            f"{_gib(max(room, 0))} this run may hold in memory, and this run reads it in memory",
            "resume with more memory (or a larger VITZOO_MEMORY_BUDGET), or start a new "
            "--workdir, where it will be streamed")


def _has_split(builder: Any, split: str) -> bool:
    known = set(builder.info.splits.keys())
    base = split.split("[")[0]
    return base in known if known else True  # unknown metadata (mock): try it


def own_validation(builder: Any, train_split: str, eval_name: str) -> str | None:
    """The dataset's own ``validation`` split when it is neither trained on nor reported on
    (None otherwise): where a choice can be made without the evaluation split.

    Only a split the dataset's metadata lists: this split is optional (without it a part
    of train is carved), so a dataset without metadata is not read for one on the off chance.
    """
    used = {s.split("[")[0].strip() for s in (train_split, eval_name)}
    listed = "validation" in set(builder.info.splits.keys())
    return "validation" if listed and "validation" not in used else None


def load_tfds(
    name: str,
    *,
    train_split: str | None = "train",
    eval_split: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    val_fraction: float = 0.1,
    need_train: bool = True,
    stream: bool | None = None,
    task: str = "multiclass",
    validation: bool = False,
) -> DataSplits:
    """Read a TFDS dataset (see module docstring); ``eval_split`` None picks test/validation.

    ``stream``: None streams the splits that do not fit the memory budget, True streams
    every split, False reads every split in memory (an error when one does not fit).
    ``validation``: also read the dataset's own validation split (:func:`own_validation`)
    into ``DataSplits.validation`` (a multi-label run always reads one).
    """
    builder = _builder(name, data_dir, manual_dir)
    multilabel = task == "multilabel"
    if multilabel:
        image_key, label_key, class_names = _multilabel_key(builder)
    else:
        image_key, label_key = _keys(builder)
        class_names = list(builder.info.features[label_key].names)
    if len(class_names) < 2:
        raise VitzooError(f"{name} has {len(class_names)} class(es); need at least 2")
    read = _Reader(builder, image_key, label_key, stream, len(class_names) if multilabel else 0)
    notes: list[str] = read.notes
    train_split = train_split or "train"
    chosen_eval = eval_split
    carved = False
    if chosen_eval is None:
        chosen_eval = next((s for s in EVAL_CANDIDATES if _has_split(builder, s)), None)
        if chosen_eval is None:
            carved = True
    train: Split | None = None
    evaluation: Split
    if carved:
        everything = read.whole(train_split)
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
            train = read(train_split)
        evaluation = read(chosen_eval)
        eval_name = chosen_eval
    held_out: Split | None = None
    held_out_name = None
    if multilabel and need_train:  # where the F1 threshold is chosen
        train, held_out, train_split = _threshold_split(read, train, evaluation, eval_name,
                                                        train_split, val_fraction)
    elif validation and need_train and not carved:
        held_out_name = own_validation(builder, train_split, eval_name)
        held_out = read(held_out_name) if held_out_name else None
        if held_out is not None and len(held_out) == 0:  # nothing to choose on: carve instead
            held_out, held_out_name = None, None
    for what, examples in (("training", train), ("evaluation", evaluation)):
        if examples is not None and len(examples) == 0:
            raise VitzooError(f"the {what} split of {name} is empty", "check the split slicing")
    return DataSplits(name=name, kind="tfds", class_names=class_names, train=train,
                      eval=evaluation, train_split=train_split if need_train else None,
                      eval_split=eval_name, notes=notes,
                      task="multilabel" if multilabel else "multiclass", validation=held_out,
                      validation_split=held_out_name)


def _threshold_split(read: _Reader, train: Split | None, evaluation: Split, eval_name: str,
                     train_split: str, val_fraction: float) -> tuple[Split | None, Split, str]:
    """``(train, validation, train split name)`` of a multi-label run: the validation split
    chooses the F1 threshold. The dataset's own ``validation`` when the evaluation split is
    test; the evaluation split itself when it is a validation split; else a deterministic
    ``val_fraction`` held out of training (the notes say which)."""
    if not eval_name.startswith("test"):
        read.notes.append(f"multi-label: the F1 threshold is chosen on {eval_name}, the split "
                          "it is reported on")
        return train, evaluation, train_split
    if _has_split(read.builder, "validation"):
        read.notes.append("multi-label: the F1 threshold is chosen on the validation split")
        return train, read("validation"), train_split
    if not isinstance(train, Examples):
        raise VitzooError(
            f"{read.builder.name} has no validation split to choose the F1 threshold on, and "
            "its training split is streamed, so none can be held out of it",
            "hold the training split in memory (drop --stream, or raise VITZOO_MEMORY_BUDGET), "
            "or evaluate on a validation split: --eval-split validation")
    keep, held = carve(len(train), val_fraction)
    read.notes.append(f"multi-label: held out {len(held)} training examples ({val_fraction:.0%}) "
                      "to choose the F1 threshold")
    return train.subset(keep), train.subset(held), f"{train_split}[-held out {val_fraction:.0%}]"
