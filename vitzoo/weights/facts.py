"""Everything known about one weight file, decided once: its class names, its preprocessing and
whether a source can serve it (the role of timm's ``PretrainedCfg``).

``predict``, ``evaluate`` and ``export`` ask here instead of deciding themselves, so they cannot
disagree about what a checkpoint's output 3 is called or how its input pixels were made.

**Class names**, in this one order of precedence:

1. ``class_names.json`` next to the ``.npz`` (``{"class_names": [...]}``): the file dedicated to
   names, which ``export --to npz`` writes and a person may edit to rename classes;
2. ``run.json`` next to the ``.npz``: the names the fine-tune was trained with;
3. ImageNet-1k or -21k WordNet names for 1000- and 21843-class heads (:mod:`vitzoo.labels`);
4. otherwise class indices.

A file that is present but does not fit the head (wrong count, not a list) is an error, not
a silent fall-through: it belongs to another checkpoint.

**Preprocessing** (a :class:`~vitzoo.data.preprocess.Preprocessing`: mean/std, resize and crop,
interpolation) belongs to the checkpoint, in this one order of precedence
(:func:`preprocessing_of`):

1. timm's layout (a folder, or a ``.safetensors`` file in one): the ``pretrained_cfg`` of the
   ``config.json`` beside the weights, as timm evaluates them (:func:`timm_preprocessing`);
2. the sidecar ``<file>.json`` of a file vitzoo converted from timm's layout (a Hub download, a
   local timm folder): the rule read from its ``config.json`` when it was converted;
3. ``run.json`` next to the file (``preprocessing.checkpoint``): a vitzoo run keeps the rule of
   the checkpoint it started from, so a fine-tuned DINOv2 is fed as DINOv2 was;
4. otherwise the vit_jax rule of the release checkpoints (:data:`~vitzoo.data.preprocess.VIT_JAX`):
   bilinear resize without antialiasing to the input size, no crop, pixels in [-1, 1].

:mod:`vitzoo.data.preprocess` turns it into the recipe at a resolution and makes the pixels,
the one implementation every command uses.

**Availability**: whether the Hugging Face copy can serve a file is
:func:`vitzoo.config.hub_can_serve` (one offline rule, the one ``huggingface_hub`` applies); it
lives below the catalog so the catalog's ``available`` column can use it without this layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitzoo.config import hub_can_serve
from vitzoo.data.preprocess import VIT_JAX, Preprocess, Preprocessing, eval_recipe
from vitzoo.errors import VitzooError
from vitzoo.labels import DATASET_NAMES, imagenet_labels, imagenet_synsets

#: Files next to a checkpoint that may hold ``{"class_names": [...]}``, first wins.
CLASS_NAME_FILES = ("class_names.json", "run.json")
#: timm's description of a checkpoint in its layout, beside ``model.safetensors``.
TIMM_CONFIG = "config.json"


@dataclass(frozen=True)
class Labels:
    """A head's class names: ``names`` what people read, ``ids`` unique keys, and their origin.

    ``names``/``ids`` are ``None`` when nothing is known (outputs are then called by index).
    For ImageNet heads ``ids`` are WordNet ids and ``names`` the readable lemmas with the id.
    """

    names: list[str] | None
    ids: list[str] | None
    source: str
    imagenet: bool = False

    @property
    def known(self) -> bool:
        return self.names is not None

    def __call__(self, index: int) -> str:
        return self.names[index] if self.names is not None else str(index)


def _names_in(path: Path) -> list[str] | None:
    """``class_names`` of one JSON file: ``None`` when the file or the key is absent."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VitzooError(f"cannot read class names from {path} ({exc})",
                          "fix or remove the file") from None
    names = data.get("class_names") if isinstance(data, dict) else None
    if names is None:
        return None
    if not isinstance(names, list):
        raise VitzooError(f"{path} has a class_names that is not a list",
                          "fix or remove the file")
    return [str(n) for n in names]


def class_names_near(checkpoint: Path | None) -> tuple[list[str] | None, str]:
    """The class names stored next to ``checkpoint`` and the file they came from (or ``""``)."""
    if checkpoint is None:
        return None, ""
    for filename in CLASS_NAME_FILES:
        path = Path(checkpoint).parent / filename
        if (names := _names_in(path)) is not None:
            return names, str(path)
    return None, ""


def labels_from(names: list[str] | None, where: str, num_classes: int) -> Labels:
    """:class:`Labels` for a ``num_classes`` head, given the names found beside the file."""
    if names is not None:
        if len(names) != num_classes:
            raise VitzooError(
                f"{where} has {len(names)} class names but the checkpoint has {num_classes} "
                "outputs", "the file belongs to another checkpoint; fix or remove it")
        return Labels(names, names, f"class_names from {where}")
    synsets = imagenet_synsets(num_classes)
    if synsets is not None:
        return Labels(imagenet_labels(num_classes), list(synsets),
                      f"{DATASET_NAMES[num_classes]} WordNet lemmas and ids (vitzoo.labels)",
                      imagenet=True)
    return Labels(None, None, "class indices (no class_names.json/run.json next to the checkpoint)")


def find_labels(checkpoint: Path | None, num_classes: int) -> Labels:
    """The class names of a checkpoint with ``num_classes`` outputs (precedence: module doc)."""
    return labels_from(*class_names_near(checkpoint), num_classes)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VitzooError(f"cannot read {what} from {path} ({exc})", "fix or remove the file") from None


def timm_preprocessing(config: dict[str, Any], where: str) -> Preprocessing:
    """The preprocessing a timm ``config.json`` implies.

    A configuration vitzoo exported carries its exact rule in its ``vitzoo`` section (exports
    without one came from release checkpoints: the vit_jax rule). Google's releases in timm's
    layout (AugReg and the original ImageNet-21k and SAM weights, by their tag) keep the
    vit_jax rule their published accuracies were measured with. Any other follows its
    ``pretrained_cfg``, as timm evaluates it.
    """
    from vitzoo.weights.timm_config import GOOGLE_TAGS

    note = config.get("vitzoo")
    if isinstance(note, dict):
        recorded = note.get("preprocessing")
        return (Preprocessing.from_dict(recorded, f"recorded in {where}")
                if isinstance(recorded, dict) else VIT_JAX)
    pretrained = config.get("pretrained_cfg")
    tag = str(pretrained.get("tag") or "") if isinstance(pretrained, dict) else ""
    if tag.startswith(GOOGLE_TAGS):
        return replace(VIT_JAX, origin=f"the vit_jax rule of Google's release (tag {tag!r} in {where})")
    return Preprocessing.from_timm(config, where)


def preprocessing_of(checkpoint: Path | None) -> Preprocessing:
    """How ``checkpoint``'s input pixels are made (precedence: module doc)."""
    if checkpoint is None:
        return VIT_JAX
    path = Path(checkpoint)
    timm_folder = path if path.is_dir() else path.parent if path.suffix == ".safetensors" else None
    if timm_folder is not None and (timm_folder / TIMM_CONFIG).is_file():
        config_path = timm_folder / TIMM_CONFIG
        config = _read_json(config_path, "timm's configuration")
        if not isinstance(config, dict):
            raise VitzooError(f"{config_path} is not a JSON object", "fix or remove the file")
        return timm_preprocessing(config, str(config_path))
    for record_path, key in ((path.with_name(path.name + ".json"), ()),  # a conversion's sidecar
                             ((path if path.is_dir() else path.parent) / "run.json", ("checkpoint",))):
        if record_path.is_file():
            recorded = _read_json(record_path, "the recorded preprocessing")
            recorded = recorded.get("preprocessing") if isinstance(recorded, dict) else None
            for part in key:
                recorded = recorded.get(part) if isinstance(recorded, dict) else None
            if isinstance(recorded, dict):
                first = recorded.get("origin") or "a rule"
                return Preprocessing.from_dict(recorded, f"{first}; recorded in {record_path}")
    return VIT_JAX


@dataclass(frozen=True)
class WeightFacts:
    """One weight file: its labels, its preprocessing (the rule, and the recipe at the
    resolution it runs at) and its Hugging Face copy, if any."""

    path: Path | None
    labels: Labels
    preprocessing: Preprocess
    hf_repo: str | None = None
    pixels: Preprocessing = VIT_JAX

    @property
    def hub_can_serve(self) -> bool:
        return hub_can_serve(self.hf_repo)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "labels": self.labels.source,
                "preprocessing": {**self.preprocessing.as_dict(), "origin": self.pixels.origin},
                "hf_repo": self.hf_repo}


def facts_for(checkpoint: Path | None, *, num_classes: int, resolution: int,
              hf_repo: str | None = None) -> WeightFacts:
    """The facts of a local checkpoint (its class names and preprocessing looked up beside it)."""
    pixels = preprocessing_of(checkpoint)
    return WeightFacts(None if checkpoint is None else Path(checkpoint),
                       find_labels(checkpoint, num_classes), eval_recipe(resolution, pixels),
                       hf_repo, pixels)


def dataset_disagreement(labels: Labels, dataset: str, class_names: list[str]) -> str | None:
    """A note when a checkpoint's own class names are not the dataset's, output for output.

    ``evaluate`` scores output ``i`` as the dataset's class ``i``; a fine-tune whose names
    (by the one precedence above) say otherwise was trained on another class order.
    """
    if not labels.known or labels.imagenet or labels.names == list(class_names):
        return None
    differ = [i for i, (a, b) in enumerate(zip(labels.names or [], class_names, strict=False))
              if a != b]
    first = differ[0] if differ else 0
    return (f"the checkpoint's {labels.source} differ from {dataset}'s class names "
            f"({len(differ)} of {len(class_names)}, first: output {first} is "
            f"{labels(first)!r} there, {class_names[first]!r} here); per-class rows use "
            f"{dataset}'s")
