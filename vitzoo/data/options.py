"""Which dataset a command reads and how: one record for every command that reads one.

``finetune``, ``finetune --head-only``, ``evaluate``, ``probe`` and ``recommend --dataset``
all describe their data with :class:`DataOptions`; the CLI generates its options from this
record's fields (:mod:`vitzoo.cli.data_options`), so a default written here is the default
of every command, and a new dataset setting is a new field here plus its help line there.
Importing this module imports nothing heavy: :meth:`DataOptions.open` imports the readers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vitzoo.data.source import DataSplits, Split


@dataclass
class DataOptions:
    """A dataset and the settings that decide which images each split holds and how they are read.

    ``dataset`` is a TFDS name (``oxford_iiit_pet``, ``cifar100:3.*``) or an image folder
    (a local path, ``file://``, ``gs://`` or ``s3://``). ``eval_split`` None means test,
    else validation, else a split of ``val_fraction`` carved from the training data.
    ``stream`` forces TFDS splits to be streamed from their files (without it, only the
    splits larger than the memory budget are). ``gcs_auth`` reads a bucket folder with the
    user's own credentials instead of anonymously. ``task`` is ``multiclass`` (one class
    per image) or ``multilabel`` (any number: :mod:`vitzoo.data.multilabel`, whose image
    folders are described by the CSV ``labels``, by default ``DIR/labels.csv``).
    """

    dataset: str
    train_split: str | None = None
    eval_split: str | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    val_fraction: float = 0.1
    stream: bool = False
    gcs_auth: bool = False
    task: str = "multiclass"
    labels: str | None = None

    def check(self) -> None:
        """Refuse impossible settings before any data is read (one-line errors)."""
        from vitzoo.errors import VitzooError

        if not 0.0 < self.val_fraction < 1.0:
            raise VitzooError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}",
                              "e.g. --val-fraction 0.1")
        if self.task not in ("multiclass", "multilabel"):
            raise VitzooError(f"--task must be multiclass or multilabel, got {self.task!r}",
                              "e.g. --task multilabel")
        if self.labels is not None and self.task != "multilabel":
            raise VitzooError("--labels describes a multi-label dataset",
                              "add --task multilabel (or drop --labels)")

    def open(self, *, need_train: bool = True, recorded_stream: bool | None = None,
             validation: bool = False) -> DataSplits:
        """The two splits (:class:`~vitzoo.data.source.DataSplits`) this record names.

        ``recorded_stream``: how a run being resumed read its training data (streamed or
        not); it wins over ``stream``, so a resumed run reads its data the way it started.
        ``validation``: also the dataset's own validation split, when it has one that is
        neither trained nor evaluated on (:func:`vitzoo.data.open_dataset`).
        """
        from vitzoo.data import open_dataset

        stream = recorded_stream if recorded_stream is not None else (True if self.stream else None)
        return open_dataset(self.dataset, train_split=self.train_split,
                            eval_split=self.eval_split, data_dir=self.data_dir,
                            manual_dir=self.manual_dir, val_fraction=self.val_fraction,
                            need_train=need_train, stream=stream, gcs_auth=self.gcs_auth,
                            task=self.task, labels=self.labels, validation=validation)

    def data_options(self) -> DataOptions:
        """Only the dataset settings of this record (a subclass, e.g. a fine-tune's options)."""
        return DataOptions(**{f.name: getattr(self, f.name) for f in fields(DataOptions)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The dataset settings, in the order the record declares them.
DATA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DataOptions))


_given: frozenset[str] = frozenset()  # DataOptions fields the running command was given


def remember_given(names: Iterable[str]) -> None:
    """Record the :class:`DataOptions` fields the running command was given explicitly (the CLI
    calls this for every command), for the rare option whose mere presence decides something
    (:func:`forced_carve`)."""
    global _given
    _given = frozenset(names)


def forced_carve(options: DataOptions) -> float | None:
    """``--val-fraction`` when given explicitly: that share of each training class is then held
    out to choose on (candidates by ``probe``, learning rates by a sweep), even when the dataset
    has its own validation split; None: choose on the dataset's own split when it has one."""
    return options.val_fraction if "val_fraction" in _given else None


def own_validation(data: DataSplits) -> Split | None:
    """The dataset's own validation split to choose on (TFDS ``validation``, a folder's ``val/``,
    read by ``open(validation=True)`` when neither trained nor evaluated on), or None: carve."""
    return data.validation if data.validation_split is not None else None
