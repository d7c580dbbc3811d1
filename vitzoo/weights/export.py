"""Write a checkpoint as a folder that timm, transformers or vit_jax-style tools load directly.

People fine-tune here and deploy in PyTorch, so an export is a ready-to-load folder, not a
conversion recipe:

* ``timm``: ``model.safetensors`` + ``config.json`` for
  ``timm.create_model("local-dir:DIR", pretrained=True)``;
* ``transformers``: ``model.safetensors`` + ``config.json`` + ``preprocessor_config.json`` for
  ``ViTForImageClassification.from_pretrained(DIR)`` and ``ViTImageProcessor.from_pretrained(DIR)``;
* ``npz``: ``model.npz`` in the release layout plus ``class_names.json``, for vitzoo, vit_jax and
  timm's npz loader; a folder like the others, so the weights and their names are replaced together.

The configs state the numerics the weights were trained with, because both libraries
default to something else: GELU is the tanh approximation (timm ``act_layer="gelu_tanh"``,
transformers ``hidden_act="gelu_pytorch_tanh"``), LayerNorm epsilon is 1e-6, and inputs are
scaled to [-1, 1] (mean = std = 0.5). Class names travel along: a run's own names, or the
readable ImageNet names of :mod:`vitzoo.labels`, looked up by :mod:`vitzoo.weights.facts` in the
one order ``predict`` uses too.

An export is one folder, replaced whole: the files are written into a temporary folder
beside ``--out`` that is then swapped in (:func:`vitzoo.atomic.atomic_dir`), so a failure
or a kill leaves the previous export complete, never new weights with an old config or an
``.npz`` with another model's class names; temporaries of a killed export are removed by
the next export to the same folder. Because the folder is replaced, a folder holding
anything but export files is refused. Exports to the same folder take turns: each holds
``.NAME.lock`` beside it (a ``filelock``, kept there) from its clean-up of stale temporaries
to its swap, so a second export neither removes the first one's temporary folder nor swaps
in between; the last to finish wins, whole.

A run started from random weights (``random:ARCH``) says so in the exported config
(``"untrained": true``) whether the source is the untrained file itself (its sidecar) or a
run trained from it (``source.untrained`` in the run's ``run.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.atomic import atomic_dir, output_dir
from vitzoo.data.preprocess import VIT_JAX, eval_recipe
from vitzoo.errors import VitzooError
from vitzoo.labels import DATASET_NAMES, readable
from vitzoo.models.configs import ModelConfig, infer_config
from vitzoo.weights.facts import Labels, class_names_near, labels_from, preprocessing_of
from vitzoo.weights.release import load_npz, save_npz
from vitzoo.weights.task import HF_PROBLEM_TYPE, HeadTask, head_task
from vitzoo.weights.untrained import facts as untrained_facts
from vitzoo.weights.untrained import label as untrained_label
from vitzoo.weights.untrained import sidecar as untrained_sidecar

FORMATS: tuple[str, ...] = ("timm", "transformers", "npz")
WEIGHTS_FILE = "model.safetensors"
#: Inputs are (x - 127.5) / 127.5, i.e. (x / 255 - 0.5) / 0.5 in the libraries' terms
#: (derived from the evaluation recipe's value range).
MEAN, STD = ((v,) * 3 for v in eval_recipe(1).mean_std)
LAYER_NORM_EPS = 1e-6
NUMERICS = ("tanh-approximated GELU, LayerNorm eps 1e-6, inputs scaled to [-1, 1] "
            "(mean = std = 0.5), bilinear resize to the input size")
#: Names that tell which source file a run folder holds, in the order tried.
RUN_FILES = ("final.npz",)
#: Every file an export of any format writes; an existing --out may hold only these.
EXPORT_FILES = frozenset({WEIGHTS_FILE, "config.json", "preprocessor_config.json", "model.npz",
                          "class_names.json", "model.npz.json"})
EXPORT_WHAT = "the export folder"
#: name -> a function writing that file at the path it is given, in writing order.
Files = dict[str, Callable[[Path], None]]
#: timm entry points whose defaults are these widths (the exported model_args set all of them).
_TIMM_SIZES = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}
#: ViT entry points registered in timm (timm/models/vision_transformer.py); any other shape
#: is built from the generic one below with its own model_args.
_TIMM_ENTRY_POINTS = frozenset({
    "vit_tiny_patch16_224", "vit_tiny_patch16_384", "vit_small_patch32_224", "vit_small_patch32_384",
    "vit_small_patch16_224", "vit_small_patch16_384", "vit_base_patch32_224", "vit_base_patch32_384",
    "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch8_224", "vit_large_patch16_224",
    "vit_large_patch16_384", "vit_large_patch32_224", "vit_large_patch32_384", "vit_huge_patch14_224",
})
_TIMM_GENERIC = "vit_base_patch16_224"
#: Entry points that fix what model_args cannot say (timm/models/deit.py and
#: vision_transformer.py): DeiT's distilled class, and CLIP's LayerNorm eps 1e-5.
_TIMM_DISTILLED = "deit_base_distilled_patch16_224"
_TIMM_CLIP = "vit_base_patch16_clip_224"
#: vitzoo classifier -> timm global_pool.
_TIMM_POOLS = {"token": "token", "gap": "avg", "map": "map"}


@dataclass(frozen=True)
class ExportSource:
    """A checkpoint to export and what is known about its classes."""

    npz: Path
    class_names: list[str] | None
    names_from: str
    task: HeadTask = field(default_factory=HeadTask)
    #: Why the weights count as untrained (None: they do not), see :func:`untrained_origin`.
    untrained: str | None = None


def untrained_origin(npz: Path) -> str | None:
    """Why ``npz`` holds weights that started random, or None: the untrained file's own
    sidecar, or the ``run.json`` beside a run's ``final.npz`` whose source was untrained."""
    record = untrained_facts(npz)
    if record is not None:
        return f"random weights ({untrained_label(npz, npz.name)})"
    try:
        run = json.loads((npz.parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = run.get("source") if isinstance(run, dict) else None
    if isinstance(source, dict) and source.get("untrained") is True:
        return (f"the run started from random weights ({source.get('model')}): "
                "run.json source.untrained")
    return None


def open_source(path: str | os.PathLike[str]) -> ExportSource:
    """A run folder (``final.npz`` + ``run.json``) or an ``.npz`` file, with its class names."""
    path = Path(path)
    if path.is_dir():
        npz = next((path / f for f in RUN_FILES if (path / f).is_file()), None)
        if npz is None:
            raise VitzooError(f"{path} is a folder without a final.npz, so not a finished run",
                              "wait for the run to finish, or name an .npz file")
    elif path.is_file():
        npz = path
    else:
        raise VitzooError(f"{path} does not exist", "give a run folder, an .npz file or a catalog name")
    names, where = class_names_near(npz)
    return ExportSource(npz, names, where, head_task(npz), untrained_origin(npz))


def _labels(source: ExportSource, num_classes: int) -> Labels | None:
    """The head's names by :mod:`vitzoo.weights.facts`' one precedence; None without a head."""
    if num_classes == 0:
        return None
    labels = labels_from(source.class_names, source.names_from, num_classes)
    return labels if labels.known else None


def export_checkpoint(source: ExportSource, fmt: str, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``source`` to the folder ``out`` in format ``fmt`` (replacing it whole); returns the files."""
    if fmt not in FORMATS:
        raise VitzooError(f"unknown export format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    out = check_export_folder(out)
    flat = load_npz(source.npz)
    config, info = infer_config(flat)
    labels = _labels(source, info["num_classes"])
    if fmt == "npz":
        files = _export_npz(flat, labels, source.task)
        untrained = untrained_facts(source.npz)
        if untrained:  # the sidecar that keeps an untrained model.npz labelled as such
            files[untrained_sidecar(Path("model.npz")).name] = _json_file(untrained)
    elif fmt == "timm":
        files = _export_timm(flat, config, info, labels, source)
    else:
        files = _export_transformers(flat, config, info, labels, source)
    with export_lock(out), atomic_dir(out, what=EXPORT_WHAT) as tmp:
        for name, write in files.items():
            write(tmp / name)
    return [out / name for name in files]


def export_lock(out: Path) -> Any:
    """The lock that exports to ``out`` take turns on: ``.NAME.lock`` beside the folder."""
    from filelock import FileLock

    target = out.resolve() if out.is_symlink() else out
    output_dir(target.parent, EXPORT_WHAT)  # the lock's folder, with a one-line error
    return FileLock(str(target.parent / f".{target.name}.lock"))


def check_export_folder(out: str | os.PathLike[str]) -> Path:
    """``out`` if an export may replace it: a new folder, or one holding only export files.

    Checked before any conversion, creating nothing, so a wrong ``--out`` costs nothing.
    """
    out = Path(out)
    output_dir(out, EXPORT_WHAT, create=False)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in EXPORT_FILES and not _is_temporary(p.name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise VitzooError(f"{out} holds files that are not part of an export ({shown}); an export "
                              "replaces its whole folder", "give a new or empty folder for --out")
    return out


def _is_temporary(name: str) -> bool:
    """A temporary of an interrupted write (``.model.safetensors.XXXX.tmp``), removed with the folder."""
    return name.startswith(".") and name.endswith(".tmp")


def _json_file(data: Mapping[str, Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            _sync(handle)
    return write


def _safetensors_file(tensors: Mapping[str, np.ndarray]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from safetensors.numpy import save_file

        # transformers refuses safetensors files without format metadata
        save_file(dict(tensors), str(path), metadata={"format": "pt"})
        with open(path, "rb+") as handle:
            _sync(handle)
    return write


def _npz_file(flat: Mapping[str, np.ndarray]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        save_npz(path, flat)  # fsynced
    return write


def _sync(handle: Any) -> None:
    """Data on disk before the folder is swapped in, so a power cut cannot leave empty files."""
    handle.flush()
    os.fsync(handle.fileno())


def _export_npz(flat: Mapping[str, np.ndarray], labels: Labels | None, task: HeadTask) -> Files:
    files: Files = {"model.npz": _npz_file(flat)}
    if labels is not None:  # a multi-label head's task and threshold travel with its names
        files["class_names.json"] = _json_file({"class_names": labels.names, **task.as_dict()})
    return files


def numerics_of(config: ModelConfig) -> str:
    """The numerics of ``config`` in words (:data:`NUMERICS` for vit_jax's own)."""
    if not ({"activation", "layer_norm_eps"} & config.switches().keys()):
        return NUMERICS
    act = {"gelu_tanh": "tanh-approximated GELU", "gelu": "exact (erf) GELU",
           "quick_gelu": "quick GELU x*sigmoid(1.702x)"}[config.activation]
    return f"{act}, LayerNorm eps {config.layer_norm_eps:g}"


def _vitzoo_note(source: ExportSource, config: ModelConfig) -> dict[str, Any]:
    from vitzoo.versions import VITZOO_VERSION as __version__

    note = {"exported_by": f"vitzoo {__version__}", "source": source.npz.name,
            "architecture": config.name, "numerics": numerics_of(config),
            "untrained": source.untrained is not None}  # random:ARCH weights say so
    if source.untrained is not None:
        note["untrained_because"] = source.untrained
    if source.task.multilabel:
        note["task"] = {"task": source.task.task, "threshold": source.task.threshold,
                        "note": "multi-label: independent per-class logits; apply a sigmoid "
                                "(not a softmax) and keep every class at or above the threshold "
                                "(chosen on validation by the fine-tune)"}
    return note


def timm_architecture(config: ModelConfig, resolution: int) -> str:
    """A registered timm ViT entry point near ``config`` (the exported model_args set every width).

    DeiT's distilled model is another class in timm, and CLIP's LayerNorm epsilon is fixed by
    its entry points, so those two pick an entry point of their kind; model_args set the rest.
    """
    if config.distilled:
        if config.layer_norm_eps != 1e-6:
            raise VitzooError("a distilled model with LayerNorm eps "
                              f"{config.layer_norm_eps:g} has no timm entry point",
                              "export it with --to npz")
        return _TIMM_DISTILLED
    if config.layer_norm_eps == 1e-5:
        return _TIMM_CLIP
    if config.layer_norm_eps != 1e-6:
        raise VitzooError(f"timm has no ViT entry point with LayerNorm eps {config.layer_norm_eps:g}",
                          "export it with --to npz")
    size = _TIMM_SIZES.get(config.hidden_size, "base")
    name = f"vit_{size}_patch{config.patch_size}_{384 if resolution > 224 else 224}"
    return name if name in _TIMM_ENTRY_POINTS else _TIMM_GENERIC


def timm_config(config: ModelConfig, info: Mapping[str, Any], labels: Labels | None) -> dict[str, Any]:
    """timm's ``config.json`` for the exported weights (``timm/models/_hub.py`` format)."""
    if config.family != "vit":
        raise VitzooError(
            f"{config.name} is a {'hybrid R+ViT' if config.family == 'hybrid' else 'Mixer'} model; "
            "timm's versions of it use other numerics (exact GELU; hybrids StdConv eps 1e-8, "
            "GroupNorm eps 1e-5) that a config cannot change, so logits would differ",
            "export it with --to npz (timm's npz loader reads it, with those differences)")
    res, num_classes = int(info["resolution"]), int(info["num_classes"])
    token = config.has_class_token
    model_args: dict[str, Any] = {
        "img_size": res, "patch_size": config.patch_size, "embed_dim": config.hidden_size,
        "depth": config.num_layers, "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_dim / config.hidden_size, "qkv_bias": True,
        "class_token": token, "global_pool": "token" if token else "avg",
        "fc_norm": False,  # vitzoo normalises the tokens before pooling, as vit_jax does
        "act_layer": "gelu_tanh",
    }
    model_args |= _timm_switch_args(config)
    cfg: dict[str, Any] = {
        "architecture": timm_architecture(config, res),
        "num_classes": num_classes,
        "num_features": config.hidden_size,
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "vitzoo", "custom_load": False, "input_size": [3, res, res],
            "fixed_input_size": True, "interpolation": "bilinear", "crop_pct": 1.0,
            "crop_mode": "center", "mean": list(MEAN), "std": list(STD),
            "num_classes": num_classes, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head",
        },
    }
    if labels is not None:
        cfg["label_names"] = labels.ids
        if labels.imagenet:  # timm's convention: synsets as names, lemmas as descriptions
            cfg["label_descriptions"] = {s: readable(s).rsplit(" (", 1)[0] for s in labels.ids}
    return cfg


def _timm_switch_args(config: ModelConfig) -> dict[str, Any]:
    """timm's constructor arguments for the family switches that differ from vit_jax's."""
    switches = config.switches()
    if config.patch_bias == config.norm_pre:  # timm: PatchEmbed(bias=not pre_norm)
        raise VitzooError("timm ties the patch-embedding bias to pre_norm (bias=not pre_norm); "
                          f"this model has pre_norm={config.norm_pre} and a "
                          f"{'' if config.patch_bias else 'bias-free '}patch embedding",
                          "export it with --to npz")
    args: dict[str, Any] = {"global_pool": _TIMM_POOLS[config.classifier]}
    if config.classifier != "token" or "class_token" in switches:
        args["class_token"] = config.has_class_token
    if "fc_norm" in switches:
        args["fc_norm"] = True
    if "activation" in switches:
        args["act_layer"] = config.activation
    if config.num_registers:
        args["reg_tokens"] = config.num_registers
    if config.no_embed_class:
        args["no_embed_class"] = True
    if config.norm_pre:
        args["pre_norm"] = True
    if config.layer_scale:
        args["init_values"] = 1e-5  # any value builds ls1/ls2; the weights replace it
    return args


def _export_timm(flat: Mapping[str, np.ndarray], config: ModelConfig, info: Mapping[str, Any],
                 labels: Labels | None, source: ExportSource) -> Files:
    from vitzoo.weights.timm import release_to_timm

    cfg = timm_config(config, info, labels)
    cfg["vitzoo"] = _vitzoo_note(source, config)
    pixels = preprocessing_of(source.npz)  # a fine-tuned DINOv2 is fed as DINOv2 was
    if pixels != VIT_JAX:
        cfg["pretrained_cfg"].update(pixels.timm_fields())
        cfg["vitzoo"]["preprocessing"] = pixels.as_dict()
    state = release_to_timm(flat, config)
    return {WEIGHTS_FILE: _safetensors_file(state), "config.json": _json_file(cfg)}


def transformers_config(config: ModelConfig, info: Mapping[str, Any],
                        labels: Labels | None) -> dict[str, Any]:
    """``config.json`` of a ``ViTForImageClassification`` with vitzoo's numerics."""
    num_classes = int(info["num_classes"])
    names = labels.names if labels is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(set(names)) != len(names):
        raise VitzooError("the class names are not unique, so they cannot key label2id",
                          "fix class_names in run.json / class_names.json")
    return {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.mlp_dim,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": LAYER_NORM_EPS,
        "image_size": int(info["resolution"]),
        "patch_size": config.patch_size,
        "num_channels": 3,
        "qkv_bias": True,
        "encoder_stride": config.patch_size,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
        "torch_dtype": "float32",
    }


def preprocessor_config(resolution: int) -> dict[str, Any]:
    """``ViTImageProcessor`` settings equal to vitzoo's evaluation preprocessing."""
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": resolution, "width": resolution},
        "resample": 2,  # PIL bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(MEAN),
        "image_std": list(STD),
    }


def _export_transformers(flat: Mapping[str, np.ndarray], config: ModelConfig, info: Mapping[str, Any],
                         labels: Labels | None, source: ExportSource) -> Files:
    from vitzoo.weights.hf import release_to_hf

    if config.switches():
        raise VitzooError(
            f"transformers' ViTForImageClassification cannot run this model's "
            f"{', '.join(sorted(config.switches()))} (a DeiT / DINOv2 / CLIP / SigLIP-style ViT)",
            "export it with --to timm or --to npz instead")
    state = release_to_hf(flat, config)  # refuses hybrids, Mixer, GAP, pre_logits, no head
    cfg = transformers_config(config, info, labels)
    if source.task.multilabel:  # BCE-with-logits loss and sigmoid scores in transformers
        cfg["problem_type"] = HF_PROBLEM_TYPE[source.task.task]
    cfg["vitzoo"] = _vitzoo_note(source, config)
    if labels is not None and labels.imagenet:
        cfg["vitzoo"]["labels"] = f"{DATASET_NAMES[len(labels.ids)]} WordNet lemmas and ids"
    return {WEIGHTS_FILE: _safetensors_file(state),
            "preprocessor_config.json": _json_file(preprocessor_config(int(info["resolution"]))),
            "config.json": _json_file(cfg)}
