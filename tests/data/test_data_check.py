"""``vitzoo data check``: planted leaks, corrupt and empty files are found; counts match an
independent walk of the folder; TFDS splits under ``tfds.testing.mock_data``; exit codes 0/1/2;
and the cheap ``preflight`` that finetune runs before compiling."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli_helpers import run_cli
from vitzoo.data import open_dataset
from vitzoo.data.check import check_dataset, preflight

CLASSES = ("bird", "cat", "dog")
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def write_images(folder: Path, count: int, rng: np.random.Generator, *,
                 start: int = 0) -> list[tuple[int, int]]:
    """``count`` distinct PNGs named ``img<i>.png``; returns their (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(start, start + count):
        width, height = 20 + (i % 7), 16 + (i % 5)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        sizes.append((width, height))
    return sizes


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """train/ + test/ with three classes, clean: distinct random images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pics"
    for n, name in enumerate(CLASSES):
        write_images(root / "train" / name, 6 + n, rng)
        write_images(root / "test" / name, 2, rng, start=100)
    return root


def walk_counts(split_dir: Path) -> dict[str, int]:
    """The oracle: image files per class folder by os.walk, minus the ones the test broke."""
    counts = {}
    for name in CLASSES:
        total = 0
        for _folder, _, files in os.walk(split_dir / name):
            total += sum(1 for f in files if Path(f).suffix.lower() in SUFFIXES
                         and not f.startswith(("broken", "empty", "fake")))
        counts[name] = total
    return counts


def plant_problems(root: Path) -> None:
    """A test image copied into train (a leak), a duplicate within train, a corrupt, an empty
    and a fake image, and a text file a fine-tune ignores."""
    shutil.copy(root / "test" / "cat" / "img100.png", root / "train" / "cat" / "leaked.png")
    shutil.copy(root / "train" / "dog" / "img1.png", root / "train" / "dog" / "again.png")
    good = (root / "train" / "bird" / "img0.png").read_bytes()
    (root / "train" / "bird" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "bird" / "empty.jpg").write_bytes(b"")
    (root / "test" / "dog" / "fake.jpg").write_text("this is not an image")
    (root / "train" / "dog" / "notes.txt").write_text("a fine-tune ignores me")


def test_clean_folder_counts_equal_an_independent_walk_and_exit_0(split_folder, capsys):
    code, out, err = run_cli(capsys, "data", "check", str(split_folder), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    by_split = {s["split"]: s for s in report["splits"]}
    assert set(by_split) == {"train", "test"}
    for split in ("train", "test"):
        counted = {c["class"]: c["images"] for c in by_split[split]["classes"]}
        assert counted == walk_counts(split_folder / split)
        assert by_split[split]["images"] == sum(walk_counts(split_folder / split).values())
        shares = [c["fraction"] for c in by_split[split]["classes"]]
        assert sum(shares) == pytest.approx(1.0)  # fractions in data, not percentages
    assert report["problems"] == [] and report["unreadable"] == []
    assert report["duplicates"]["across_splits"] == []
    code, out, _ = run_cli(capsys, "data", "check", str(split_folder))
    assert code == 0 and "no problem found" in out


def test_planted_leak_corrupt_and_empty_files_are_found_by_name(split_folder, capsys):
    plant_problems(split_folder)
    code, out, err = run_cli(capsys, "data", "check", str(split_folder), "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    leaks = report["duplicates"]["across_splits"]
    assert [sorted(i["file"] for i in g["images"]) for g in leaks] == \
        [["test/cat/img100.png", "train/cat/leaked.png"]]
    leaked = (split_folder / "train" / "cat" / "leaked.png").read_bytes()
    assert leaks[0]["sha256"] == hashlib.sha256(leaked).hexdigest()
    within = report["duplicates"]["within_splits"]
    assert [sorted(i["file"] for i in g["images"]) for g in within] == \
        [["train/dog/again.png", "train/dog/img1.png"]]
    problems = {i["file"]: i["problem"] for i in report["unreadable"]}
    assert problems == {"train/bird/broken.png": "corrupt", "train/bird/empty.jpg": "zero bytes",
                        "test/dog/fake.jpg": "not an image"}
    assert report["ignored_files"] == ["train/dog/notes.txt"]
    for split in ("train", "test"):  # unreadable files are not counted; duplicates are images
        by_split = {s["split"]: s for s in report["splits"]}[split]
        assert {c["class"]: c["images"] for c in by_split["classes"]} == \
            walk_counts(split_folder / split)
    # The table names the same files, one line per row, within 80 columns.
    code, out, _ = run_cli(capsys, "data", "check", str(split_folder))
    assert code == 1
    for name in ("train/cat/leaked.png", "test/cat/img100.png", "train/bird/broken.png",
                 "train/bird/empty.jpg", "test/dog/fake.jpg", "train/dog/again.png"):
        assert name in out, name
    assert "duplicated across splits" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_sizes_and_imbalance_equal_numpy_on_the_known_sizes(tmp_path, capsys):
    rng = np.random.default_rng(3)
    root = tmp_path / "flat"
    sizes = {name: write_images(root / name, n, rng) for name, n in (("a", 12), ("b", 3))}
    report = check_dataset(str(root), val_fraction=0.25, min_images=5).as_dict()
    train, val = report["splits"]
    assert (train["split"], val["split"]) == ("train", "val (carved 25%)")
    everything = np.array(sizes["a"] + sizes["b"])
    # the carve splits the images, so compare the union of both splits' ranges
    for axis, col in (("width", 0), ("height", 1)):
        assert min(s["sizes"][axis]["min"] for s in (train, val)) == everything[:, col].min()
        assert max(s["sizes"][axis]["max"] for s in (train, val)) == everything[:, col].max()
    counts = {c["class"]: c["images"] for c in train["classes"]}
    assert train["imbalance"]["max_over_min"] == pytest.approx(max(counts.values()) / min(counts.values()),
                                                               abs=1e-3)
    assert [c["class"] for c in train["imbalance"]["below_min_images"]] == \
        [k for k, v in counts.items() if v < 5]


def test_median_size_equals_numpy(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "pics"
    train = [*write_images(root / "train" / "a", 5, rng), *write_images(root / "train" / "b", 4, rng)]
    write_images(root / "test" / "a", 1, rng, start=50)
    write_images(root / "test" / "b", 1, rng, start=60)
    sizes = check_dataset(str(root)).sizes("train")
    widths, heights = np.array(train).T
    assert sizes == {"width": {"min": widths.min(), "median": int(np.median(widths)), "max": widths.max()},
                     "height": {"min": heights.min(), "median": int(np.median(heights)),
                                "max": heights.max()}}


def test_the_carved_split_is_the_one_finetune_uses(tmp_path):
    """DIR/<class>/* has no test split: the check names the same validation files as load_folder."""
    rng = np.random.default_rng(5)
    root = tmp_path / "flat"
    for name in CLASSES:
        write_images(root / name, 9, rng)
    (root / "cat" / "empty.png").write_bytes(b"")  # unreadable files must not shift the carve
    shutil.copy(root / "dog" / "img3.png", root / "dog" / "copy.png")
    report = check_dataset(str(root), val_fraction=0.2)
    data = open_dataset(str(root), val_fraction=0.2)
    finetune_val = {str(Path(p).relative_to(root)) for p in data.eval.payload} if \
        data.eval.from_files else None
    if finetune_val is None:  # held in memory as bytes: compare by content
        finetune_val = {hashlib.sha256(b).hexdigest() for b in data.eval.payload}
        checked = {i.digest for i in report.images if i.split == report.splits[1]}
    else:
        checked = {i.name for i in report.images if i.split == report.splits[1]}
    assert checked == finetune_val
    assert len(report.splits) == 2 and report.splits[1] == "val (carved 20%)"


def test_bad_input_is_one_line_and_exit_2(tmp_path, split_folder, capsys):
    for args in (["data", "check", str(tmp_path / "missing") + "/"],
                 ["data", "check", str(split_folder), "--format", "xml"],
                 ["data", "check", str(split_folder), "--min-images", "0"],
                 ["data", "check", str(split_folder), "--val-fraction", "1.5"],
                 ["data", "check", str(split_folder), "--train-split", "train[:50%]"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (args, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_the_command_imports_no_jax(split_folder):
    import subprocess
    import sys

    code = ("import sys\nfrom vitzoo.cli import main\n"
            "try:\n    main(['data', 'check', sys.argv[1]])\nexcept SystemExit as e:\n    assert not e.code\n"
            "bad = [m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code, str(split_folder)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- TFDS -----------------------------------------------------------------------------


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (12, 10 + seed % 3, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def planted_tfds(num: dict[str, int], *, leak: tuple[int, int] | None = None,
                 corrupt: int | None = None):
    """An ``as_dataset_fn``: split examples ``label = i % 37``; train[leak[0]] is test[leak[1]]'s
    image, train[corrupt] is half a PNG."""
    from types import SimpleNamespace

    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(self, split, decoders=None, **kwargs):
        instruction = tfds.core.ReadInstruction.from_spec(str(split))
        name = instruction.split_name
        (absolute,) = instruction.to_absolute({name: SimpleNamespace(num_examples=num[name])})
        offset = 0 if name == "train" else 10_000

        def gen():
            for i in range(num[name])[absolute.from_:absolute.to]:
                image = _png(offset + i)
                if name == "train" and leak and i == leak[0]:
                    image = _png(10_000 + leak[1])
                if name == "train" and i == corrupt:
                    image = image[: len(image) // 2]
                yield {"image": image, "label": i % 37}

        return tf.data.Dataset.from_generator(gen, output_signature={
            "image": tf.TensorSpec((), tf.string), "label": tf.TensorSpec((), tf.int64)})

    return as_dataset


@pytest.mark.slow
def test_tfds_per_split_counts_equal_the_mock(capsys):
    import tensorflow_datasets as tfds

    from tests.support.tfds_mock import pets_examples

    num = {"train": 45, "test": 12}
    with tfds.testing.mock_data(as_dataset_fn=pets_examples(num)):
        code, out, err = run_cli(capsys, "data", "check", "oxford_iiit_pet", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "tfds" and report["num_classes"] == 37
    for split in report["splits"]:
        expected = np.bincount(np.arange(num[split["split"]]) % 37, minlength=37)  # the mock's labels
        assert [c["images"] for c in split["classes"]] == expected.tolist()
        assert split["images"] == num[split["split"]]


@pytest.mark.slow
def test_tfds_leak_and_decode_error_are_found(capsys):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=planted_tfds({"train": 20, "test": 6}, leak=(7, 2),
                                                           corrupt=4)):
        code, out, err = run_cli(capsys, "data", "check", "oxford_iiit_pet", "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    assert [sorted(i["file"] for i in g["images"]) for g in report["duplicates"]["across_splits"]] \
        == [["test[2]", "train[7]"]]
    assert [(i["file"], i["problem"]) for i in report["unreadable"]] == [("train[4]", "corrupt")]
    train = report["splits"][0]
    assert train["images"] == 19  # the corrupt example is not counted


@pytest.mark.slow
def test_tfds_slices_and_the_carve_are_the_ones_finetune_reads(monkeypatch):
    import tensorflow_datasets as tfds

    from vitzoo.data import tfds as vitzoo_tfds

    with tfds.testing.mock_data(as_dataset_fn=planted_tfds({"train": 30, "test": 6})):
        sliced = check_dataset("oxford_iiit_pet", train_split="train[:80%]",
                               eval_split="train[80%:]")
        monkeypatch.setattr(vitzoo_tfds, "EVAL_CANDIDATES", ())  # as if there were no test split
        carved = check_dataset("oxford_iiit_pet", val_fraction=0.2)
        data = open_dataset("oxford_iiit_pet", val_fraction=0.2)
    assert sliced.splits == ["train[:80%]", "train[80%:]"]
    assert [sum(i.split == s for i in sliced.images) for s in sliced.splits] == [24, 6]
    assert carved.splits == ["train[-carved 20%]", "train[carved 20%]"]
    assert {i.digest for i in carved.images if i.split == carved.splits[1]} == \
        {hashlib.sha256(b).hexdigest() for b in data.eval.payload}


# --- the cheap part finetune runs -------------------------------------------------------


def test_preflight_warns_about_skipped_files_and_a_tiny_class(split_folder):
    plant_problems(split_folder)
    for extra in range(60):  # cat: 7 + 1 leaked + 60 -> 68 images; bird: 6 (over 10x)
        shutil.copy(split_folder / "train" / "cat" / "img0.png",
                    split_folder / "train" / "cat" / f"more{extra}.png")
    data = open_dataset(str(split_folder))
    warnings = preflight(data)
    assert len(warnings) == 2, warnings
    skipped, imbalance = warnings
    assert "3 unreadable file(s)" in skipped and "(1 of zero bytes)" in skipped
    assert f"vitzoo data check {data.name}" in skipped
    assert "'bird' has 6 training image(s)" in imbalance and "'cat' 68" in imbalance
    assert all("\n" not in w for w in warnings)


def test_preflight_is_silent_on_a_clean_balanced_folder(split_folder):
    assert preflight(open_dataset(str(split_folder))) == []


def test_finetune_prints_the_preflight_warning_before_the_model_is_loaded(split_folder,
                                                                         monkeypatch):
    """runner._prepare_data shows preflight's lines (a display stand-in records them)."""
    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.adapt.runner import _prepare_data

    plant_problems(split_folder)
    notes: list[str] = []
    display = type("D", (), {"note": lambda self, m: notes.append(m)})()
    _prepare_data(FinetuneOptions(model="Ti/16", dataset=str(split_folder)), None, [], display)
    assert any(n.startswith("warning: 3 unreadable file(s)") for n in notes), notes


def test_unreadable_files_are_the_ones_finetune_skips(tmp_path):
    """Every format finetune reads (WebP, CMYK, palette BMP, ...) passes; its skipped file fails."""
    from tests.support.images import mixed_image_folder

    root = mixed_image_folder(tmp_path / "mixed")
    report = check_dataset(str(root), val_fraction=0.3)
    data = open_dataset(str(root), val_fraction=0.3)
    assert [(i.name, i.problem) for i in report.unreadable] == [(f, "corrupt") for f, _ in data.skipped]
    assert report.ignored == ["dog/notes.txt"]
    assert sum(sum(report.counts()[s]) for s in report.splits) == len(data.train) + len(data.eval)


def test_a_bucket_folder_is_checked_like_the_local_one(gcs, split_folder):
    plant_problems(split_folder)
    (split_folder / "train" / "bird" / "empty.jpg").unlink()  # the emulator stores no empty object
    gcs.create_bucket("photos")
    for path in sorted(p for p in split_folder.rglob("*") if p.is_file()):
        gcs.upload("photos", f"pics/{path.relative_to(split_folder).as_posix()}", path.read_bytes())
    here = check_dataset(str(split_folder)).as_dict()
    there = check_dataset("gs://photos/pics").as_dict()
    for key in ("splits", "unreadable", "duplicates", "ignored_files", "problems"):
        assert there[key] == here[key], key


def test_the_help_states_the_default_min_images(capsys):
    """The CLI cannot import data.check at start-up (numpy); its help must still say the default."""
    from vitzoo.data.check import MIN_IMAGES

    code, out, _ = run_cli(capsys, "data", "check", "--help")
    assert code == 0 and f"(default {MIN_IMAGES})" in " ".join(out.split())


@pytest.mark.parametrize("command", [["data", "check"], ["evaluate", "random:Ti/16", "--dataset"],
                                     ["plot-run"]])
def test_a_file_where_a_folder_is_needed_is_named_as_a_file(capsys, tmp_path, command):
    photo = tmp_path / "x.jpg"
    Image.new("RGB", (4, 4)).save(photo)
    code, out, err = run_cli(capsys, *command, str(photo))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "is a file, not a" in err and "does not exist" not in err and "TFDS" not in err.split(".")[0]
