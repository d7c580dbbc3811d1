"""Datasets for fine-tuning: TFDS names or image folders (local or in a bucket), one recipe format.

``open_dataset`` decides which source a ``--dataset`` value means and returns
:class:`~vitzoo.data.source.DataSplits`: two splits behind one interface
(:class:`~vitzoo.data.source.Split`), held in memory (:mod:`vitzoo.data.pipeline`) or
streamed (:mod:`vitzoo.data.stream`); :mod:`vitzoo.data.tfdata` holds what both share.
Importing this package imports neither TensorFlow nor numpy (the CLI reads
:mod:`vitzoo.data.options` at start-up): the names below are loaded when first used.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from vitzoo.errors import VitzooError

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data.options import DataOptions
    from vitzoo.data.pipeline import Examples
    from vitzoo.data.preprocess import VIT_JAX, Preprocess, Preprocessing, eval_recipe, train_recipe
    from vitzoo.data.source import DataSplits, Split
    from vitzoo.data.tfdata import Layout, tf_cpu

__all__ = ["VIT_JAX", "DataOptions", "DataSplits", "Examples", "Layout", "Preprocess",
           "Preprocessing", "Split", "eval_recipe", "open_dataset", "tf_cpu", "train_recipe"]

#: Public name -> the module that defines it (imported on first use).
_HOME = {"DataOptions": "options", "Examples": "pipeline", "Preprocess": "preprocess",
         "Preprocessing": "preprocess", "VIT_JAX": "preprocess",
         "eval_recipe": "preprocess", "train_recipe": "preprocess", "DataSplits": "source",
         "Split": "source", "Layout": "tfdata", "tf_cpu": "tfdata"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or os.sep in value


def image_folder(dataset: str, *, gcs_auth: bool = False) -> Any:
    """The image folder ``dataset`` names (local path, ``file://``, ``gs://``/``s3://``), or
    None when it is a TFDS name. A path that is a file or missing is one line, not a TFDS
    lookup: every command that reads a dataset decides this here."""
    if not dataset or not dataset.strip():
        raise VitzooError("empty --dataset", "give a TFDS name or an image folder")
    from vitzoo.data.remote import dataset_folder

    path = dataset_folder(dataset, gcs_auth=gcs_auth)
    if path.is_dir():
        return path
    is_file_url = dataset.strip().lower().startswith("file://")
    if path.is_file() or is_file_url or (_looks_like_path(dataset)
                                          and ":" not in dataset.split("/")[0]):
        if path.exists():
            raise VitzooError(f"dataset {path} is a file, not a folder",
                              "give a folder of class folders (DIR/<class>/*), or a TFDS name")
        raise VitzooError(f"dataset folder {path if is_file_url else dataset} does not exist",
                          "check the path, or give a TFDS name like oxford_iiit_pet")
    return None


def check_named(dataset: str, *, data_dir: str | None = None, gcs_auth: bool = False) -> None:
    """That ``dataset`` names a folder that is there or a TFDS dataset TFDS knows; nothing read.

    For a command that must resolve its checkpoint before it can open the dataset
    (``evaluate``: the head's task decides how the data is read), so that a typo is one
    line before the download; :func:`open_dataset` reports the same mistakes the same way.
    """
    if image_folder(dataset, gcs_auth=gcs_auth) is not None:
        return
    from vitzoo.data.tfdata import tf_cpu
    from vitzoo.data.tfds import lookup

    tf_cpu()
    lookup(dataset, data_dir)


def open_dataset(
    dataset: str,
    *,
    train_split: str | None = None,
    eval_split: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    val_fraction: float = 0.1,
    need_train: bool = True,
    stream: bool | None = None,
    gcs_auth: bool = False,
    task: str = "multiclass",
    labels: str | None = None,
    validation: bool = False,
) -> DataSplits:
    """``dataset`` is an image folder (local, or a ``gs://``/``s3://`` URL) or a TFDS name.

    A folder URL is read anonymously unless ``gcs_auth`` (see :mod:`vitzoo.data.remote`).

    ``stream`` (TFDS only): None streams the splits too large for the memory budget, True
    streams every split, False keeps every split in memory or fails.

    ``task`` ``multilabel``: multi-hot targets (:mod:`vitzoo.data.multilabel`); an image
    folder is then described by the CSV ``labels`` (default ``DIR/labels.csv``).

    ``validation``: also read the dataset's own validation split (TFDS ``validation``, a
    folder's ``val/``) into ``DataSplits.validation`` when it is neither trained nor
    evaluated on; None there when the dataset has no such split.
    """
    path = image_folder(dataset, gcs_auth=gcs_auth)
    if path is not None and task == "multilabel":
        from vitzoo.data.multilabel import load_multilabel_folder

        return load_multilabel_folder(path, labels, val_fraction=val_fraction,
                                      need_train=need_train, eval_split=eval_split)
    if path is not None:
        if train_split not in (None, "train"):
            raise VitzooError("--train-split applies to TFDS datasets only",
                              "an image folder uses DIR/train or a --val-fraction split")
        from vitzoo.data.folder import load_folder

        data = load_folder(path, val_fraction=val_fraction, need_train=need_train,
                           eval_split=eval_split, validation=validation)
        if stream:
            data.notes.append("--stream applies to TFDS datasets; an image folder is read "
                              "from its files when it does not fit in memory")
        return data
    from vitzoo.data.tfdata import tf_cpu
    from vitzoo.data.tfds import load_tfds

    tf_cpu()

    return load_tfds(dataset, train_split=train_split or "train", eval_split=eval_split,
                     data_dir=data_dir, manual_dir=manual_dir, val_fraction=val_fraction,
                     need_train=need_train, stream=stream, task=task, validation=validation)
