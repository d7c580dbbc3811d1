"""Checkpoint filename grammar and architecture aliases.

This is the single place that knows how AugReg files are named. Everything else
(the catalog, downloads, the CLI) parses and formats names through it, so a name
that comes from the outside world (a CSV row, a URL, a command-line argument) is
validated here before it ever becomes a path. Pure Python on purpose: it is
imported by every command and must stay instant.

Grammar (verified against the published filenames)::

    {arch}-{ds}-{epochs}ep-lr_{lr}-aug_{aug}-wd_{wd}-do_{do}-sd_{sd}
    {pretrained}--{adapt_ds}-steps_{k}k-lr_{lr}-res_{res}

``steps_{k}k`` is the step count divided by 1000 and rounded down, so
``steps_0k`` means 500 steps and ``steps_2k`` means 2,500.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from vitzoo.arch_registry import ARCHITECTURES
from vitzoo.errors import VitzooError

# --- architectures -----------------------------------------------------------

#: AugReg architectures: canonical name -> filename form (from :mod:`vitzoo.arch_registry`).
AUGREG_ARCHS: dict[str, str] = {a.name: a.file_form for a in ARCHITECTURES if a.augreg}

#: Architectures of the older collections: canonical name -> legacy file stem.
LEGACY_ARCHS: dict[str, str] = {a.name: a.legacy_stem for a in ARCHITECTURES if a.legacy}

ALL_ARCHS: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES)

#: timm's model names (without the ``_224``/``_384`` resolution suffix) -> canonical name.
TIMM_ARCHS: dict[str, str] = {
    "vit_tiny_patch16": "Ti/16", "vit_small_patch32": "S/32", "vit_small_patch16": "S/16",
    "vit_base_patch32": "B/32", "vit_base_patch16": "B/16", "vit_base_patch8": "B/8",
    "vit_large_patch16": "L/16", "vit_large_patch32": "L/32", "vit_huge_patch14": "H/14",
    "vit_tiny_r_s16_p8": "R+Ti/16", "vit_small_r26_s32": "R26+S/32",
    "vit_large_r50_s32": "R50+L/32", "vit_base_r50_s16": "R50+B/16",
    "mixer_b16": "Mixer-B/16", "mixer_b32": "Mixer-B/32", "mixer_l16": "Mixer-L/16",
}
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf://", "https://huggingface.co/")


def strip_hub_prefix(name: str) -> str:
    """``hf-hub:timm/x.tag`` / ``hf://timm/x.tag`` -> ``timm/x.tag`` (how timm and the Hub write repos)."""
    text = name.strip()
    for prefix in _HUB_PREFIXES:
        if text.lower().startswith(prefix):
            return text[len(prefix):]
    return text


def timm_arch(name: str) -> str | None:
    """The canonical architecture of a timm model or Hub repo name, e.g.
    ``timm/vit_base_patch16_224.augreg_in21k`` -> ``B/16``; None if it is not one."""
    base = strip_hub_prefix(name).lower().removeprefix("timm/").split(".", 1)[0]
    base = re.sub(r"_(224|384)$", "", base)
    return TIMM_ARCHS.get(base)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"did you mean 'X'? "`` for the closest choice (case-insensitive), or ``""``."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    close = difflib.get_close_matches(str(value).strip().lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[close[0]]!r}? " if close else ""


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical in ALL_ARCHS:
        spellings = {canonical, canonical.replace("/", "_")}
        if canonical in AUGREG_ARCHS:
            spellings.add(AUGREG_ARCHS[canonical])
        if canonical in LEGACY_ARCHS:
            legacy = LEGACY_ARCHS[canonical]
            spellings |= {legacy, legacy.replace("_", "/")}
        if "+" in canonical:  # R26+S/32 -> R26+ViT-S/32, R26+ViT-S_32
            stem, tail = canonical.split("+", 1)
            spellings |= {f"{stem}+ViT-{tail}", f"{stem}+ViT-{tail.replace('/', '_')}"}
        elif not canonical.startswith("Mixer"):
            spellings |= {f"ViT-{canonical}", f"ViT-{canonical.replace('/', '_')}"}
        for spelling in spellings:
            table[spelling.lower()] = canonical
    return table


_ALIASES = _alias_table()


def canonical_arch(name: str) -> str:
    """Return the canonical architecture name (``B/16``) for any accepted spelling.

    Accepts the paper form (``R26+S/32``), the AugReg file form (``R26_S_32``) and
    the legacy form (``ViT-B_16``, ``R50+ViT-B_16``, ``Mixer-B_16``) and timm's
    (``vit_base_patch16_224``, ``timm/vit_base_patch16_224.augreg_in21k``), any case.
    """
    canonical = _ALIASES.get(name.strip().lower()) or timm_arch(name)
    if canonical is None:
        raise VitzooError(
            f"unknown architecture {name!r}",
            f"{did_you_mean(name, [*ALL_ARCHS, *AUGREG_ARCHS.values(), *TIMM_ARCHS])}"
            f"known architectures: {', '.join(ALL_ARCHS)} (timm names such as vit_base_patch16_224 "
            "work too)",
        )
    return canonical


def arch_file_form(arch: str) -> str:
    """The AugReg filename prefix of an architecture (``R26+S/32`` -> ``R26_S_32``)."""
    canonical = canonical_arch(arch)
    if canonical not in AUGREG_ARCHS:
        raise VitzooError(
            f"{canonical} is not an AugReg architecture",
            f"AugReg architectures are {', '.join(AUGREG_ARCHS)}",
        )
    return AUGREG_ARCHS[canonical]


# --- grid vocabulary ---------------------------------------------------------

#: Pre-training datasets as written in index.csv's ``ds`` column -> (filename token, epochs).
#: The filename spelling of i21k_30 is not verified (no published filename shows it);
#: ``i21k-30ep`` follows the ``{dataset}-{epochs}ep`` pattern of the other two.
PRETRAIN_DS: dict[str, tuple[str, int]] = {
    "i1k": ("i1k", 300),
    "i21k": ("i21k", 300),
    "i21k_30": ("i21k", 30),
}
UNVERIFIED_DS_SPELLINGS = frozenset({"i21k_30"})

PRETRAIN_DS_ALIASES: dict[str, str] = {
    "i1k": "i1k",
    "imagenet": "i1k",
    "imagenet1k": "i1k",
    "imagenet-1k": "i1k",
    "imagenet2012": "i1k",
    "ilsvrc2012": "i1k",
    "i21k": "i21k",
    "imagenet21k": "i21k",
    "imagenet-21k": "i21k",
    "i21k_300": "i21k",
    "i21k_30": "i21k_30",
    "i21k-30": "i21k_30",
    "imagenet21k_30": "i21k_30",
    "imagenet21k-30ep": "i21k_30",
    # timm's pretrained tags
    "in1k": "i1k",
    "augreg_in1k": "i1k",
    "in21k": "i21k",
    "augreg_in21k": "i21k",
}

AUGMENTATIONS: tuple[str, ...] = (
    "none", "light0", "light1", "medium1", "medium2", "strong1", "strong2"
)
WEIGHT_DECAYS: tuple[float, ...] = (0.03, 0.1)
REGULARIZATIONS: tuple[float, ...] = (0.0, 0.1)  # dropout == stochastic depth
PRETRAIN_LR = 0.001
RESOLUTIONS: tuple[int, ...] = (224, 384)
ADAPT_DATASETS: tuple[str, ...] = (
    "imagenet2012", "oxford_iiit_pet", "kitti", "cifar100", "resisc45"
)
#: ``steps_{k}k`` token value -> real number of steps (k is steps // 1000).
STEPS_BY_TOKEN: dict[int, int] = {0: 500, 2: 2500, 10: 10000, 20: 20000}


def canonical_pretrain_ds(name: str) -> str:
    """Map ``imagenet21k``, ``I21K`` ... to the index's ``ds`` code."""
    code = PRETRAIN_DS_ALIASES.get(name.strip().lower())
    if code is None:
        raise VitzooError(
            f"unknown pre-training dataset {name!r}",
            f"{did_you_mean(name, PRETRAIN_DS_ALIASES)}valid choices: i1k (imagenet2012), "
            "i21k (imagenet21k, 300 epochs), i21k_30 (imagenet21k, 30 epochs)",
        )
    return code


# --- filenames ---------------------------------------------------------------

_NUMBER = re.compile(r"^(?:0|[1-9]\d*)(?:\.\d+)?$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.+]+$")


def _fmt(value: float) -> str:
    """Shortest round-tripping spelling, which is how the release prints numbers."""
    return repr(float(value))


@dataclass(frozen=True)
class PretrainedName:
    arch: str  # canonical, e.g. "B/16"
    ds: str  # index code: i1k, i21k, i21k_30
    epochs: int
    lr: float
    aug: str
    wd: float
    do: float
    sd: float
    ds_token: str = ""  # the dataset spelling as found in the filename

    def format(self) -> str:
        ds_token = self.ds_token or PRETRAIN_DS[self.ds][0]
        return (
            f"{arch_file_form(self.arch)}-{ds_token}-{self.epochs}ep-lr_{_fmt(self.lr)}"
            f"-aug_{self.aug}-wd_{_fmt(self.wd)}-do_{_fmt(self.do)}-sd_{_fmt(self.sd)}"
        )


@dataclass(frozen=True)
class AdaptedName:
    pretrained: PretrainedName
    adapt_ds: str
    steps: int
    lr: float
    res: int

    def format(self) -> str:
        return (
            f"{self.pretrained.format()}--{self.adapt_ds}-steps_{self.steps // 1000}k"
            f"-lr_{_fmt(self.lr)}-res_{self.res}"
        )


def _bad(name: str, part: str, problem: str) -> VitzooError:
    return VitzooError(
        f"invalid checkpoint name {name!r}: {part} {problem}",
        "AugReg names look like B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
        "[--oxford_iiit_pet-steps_0k-lr_0.003-res_384]",
    )


def _keyed_number(name: str, part: str, key: str) -> float:
    prefix = f"{key}_"
    if not part.startswith(prefix) or not _NUMBER.match(part[len(prefix):]):
        raise _bad(name, repr(part), f"should be {key}_<number>")
    return float(part[len(prefix):])


def _check_safe(name: str) -> None:
    if not name or "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise VitzooError(
            f"unsafe checkpoint name {name!r}: names may not be empty or contain '/', '\\' or '..'",
            "use the plain filename without directories or the .npz suffix",
        )


def parse_pretrained(name: str) -> PretrainedName:
    """Parse an upstream AugReg filename (without ``.npz``); errors name the bad part."""
    _check_safe(name)
    parts = name.split("-")
    if len(parts) != 8:
        raise _bad(name, "it", f"has {len(parts)} '-'-separated parts, expected 8")
    arch_part, ds_part, ep_part, lr_part, aug_part, wd_part, do_part, sd_part = parts
    file_forms = {v: k for k, v in AUGREG_ARCHS.items()}
    if arch_part not in file_forms:
        raise _bad(name, f"architecture {arch_part!r}", f"is not one of {', '.join(file_forms)}")
    if not re.fullmatch(r"\d+ep", ep_part):
        raise _bad(name, repr(ep_part), "should be <epochs>ep")
    epochs = int(ep_part[:-2])
    ds = {("i1k", 300): "i1k", ("i21k", 300): "i21k", ("i21k", 30): "i21k_30",
          ("i21k_30", 30): "i21k_30"}.get((ds_part, epochs))
    if ds is None:
        raise _bad(name, f"dataset/epochs {ds_part}-{ep_part}",
                   "is not one of i1k-300ep, i21k-300ep, i21k-30ep")
    aug = aug_part.removeprefix("aug_")
    if not aug_part.startswith("aug_") or aug not in AUGMENTATIONS:
        raise _bad(name, f"augmentation {aug_part!r}", f"is not one of aug_{'/'.join(AUGMENTATIONS)}")
    parsed = PretrainedName(
        arch=file_forms[arch_part],
        ds=ds,
        epochs=epochs,
        lr=_keyed_number(name, lr_part, "lr"),
        aug=aug,
        wd=_keyed_number(name, wd_part, "wd"),
        do=_keyed_number(name, do_part, "do"),
        sd=_keyed_number(name, sd_part, "sd"),
        ds_token=ds_part,
    )
    if parsed.format() != name:
        raise _bad(name, "a number", "is not written in canonical form (e.g. 0.1, not 0.10)")
    return parsed


def parse_adapted(name: str) -> AdaptedName:
    """Parse a fine-tuned AugReg filename ``{pretrained}--{adaptation}``."""
    _check_safe(name)
    if name.count("--") != 1:
        raise _bad(name, "it", "should contain exactly one '--' between the pre-trained "
                   "name and the adaptation")
    upstream, adaptation = name.split("--")
    pretrained = parse_pretrained(upstream)
    adapt_ds, steps, lr, res = parse_adaptation(adaptation, name)
    adapted = AdaptedName(pretrained=pretrained, adapt_ds=adapt_ds, steps=steps, lr=lr, res=res)
    if adapted.format() != name:
        raise _bad(name, "a number", "is not written in canonical form")
    return adapted


def parse_adaptation(adaptation: str, name: str | None = None) -> tuple[str, int, float, int]:
    """Parse the part after ``--``: returns (adapt_ds, steps, lr, resolution)."""
    name = adaptation if name is None else name
    parts = adaptation.split("-")
    if len(parts) != 4:
        raise _bad(name, f"adaptation {adaptation!r}",
                   "should be <dataset>-steps_<k>k-lr_<lr>-res_<res>")
    ds_part, steps_part, lr_part, res_part = parts
    if not _SAFE_TOKEN.match(ds_part):
        raise _bad(name, f"adaptation dataset {ds_part!r}", "contains invalid characters")
    match = re.fullmatch(r"steps_(\d+)k", steps_part)
    if not match or int(match.group(1)) not in STEPS_BY_TOKEN:
        raise _bad(name, f"steps {steps_part!r}", "is not one of steps_0k, steps_2k, "
                   "steps_10k, steps_20k")
    res_match = re.fullmatch(r"res_(\d+)", res_part)
    if not res_match:
        raise _bad(name, f"resolution {res_part!r}", "should be res_<pixels>")
    steps = STEPS_BY_TOKEN[int(match.group(1))]
    return ds_part, steps, _keyed_number(name, lr_part, "lr"), int(res_match.group(1))


def parse_any(name: str) -> PretrainedName | AdaptedName:
    """Parse either kind of AugReg filename; a trailing ``.npz`` is ignored."""
    stem = name.removesuffix(".npz")
    return parse_adapted(stem) if "--" in stem else parse_pretrained(stem)


def validate_path_component(value: str, what: str = "name") -> str:
    """Refuse a catalog value that would escape its folder once joined into a path."""
    if (
        not value
        or "/" in value
        or "\\" in value
        or value in {".", ".."}
        or ".." in value
        or "\x00" in value
        or not re.fullmatch(r"[A-Za-z0-9_.+\-]+", value)
    ):
        raise VitzooError(
            f"unsafe {what} {value!r}: it may only contain letters, digits and _ . + - "
            "and never '/' or '..'",
            "the catalog may be corrupt or malicious; rebuild it from a trusted source",
        )
    return value
