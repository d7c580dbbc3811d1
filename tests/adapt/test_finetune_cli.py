"""``vitzoo finetune`` / ``vitzoo evaluate`` end to end through the CLI: an image folder with
mixed formats, a corrupt file, grayscale and RGBA images; TFDS oxford_iiit_pet under
``tfds.testing.mock_data``; every bad input a one-line error before anything compiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.support.adapt_helpers import cli, color_image, run_python, tiny_checkpoint, write_folder
from tests.support.tfds_mock import finetune_code
from vitzoo.cli import main


def _messy_folder(root):
    write_folder(root, color_image, ["red", "green"], train=6, test=3, size=36)
    rng = np.random.default_rng(5)
    Image.fromarray(color_image(0, 36, rng)[..., 0]).save(root / "train" / "red" / "gray.jpg")
    rgba = np.dstack([color_image(1, 36, rng), np.full((36, 36), 200, np.uint8)])
    Image.fromarray(rgba).save(root / "train" / "green" / "alpha.png")
    Image.fromarray(color_image(1, 36, rng)).save(root / "train" / "green" / "w.webp")
    Image.fromarray(color_image(0, 36, rng)).convert("P").save(root / "test" / "red" / "p.gif")
    Image.fromarray(color_image(0, 36, rng)).save(root / "train" / "red" / "x.bmp")
    (root / "train" / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xdb" + b"\x00" * 40)
    return root


@pytest.mark.slow
def test_folder_finetune_outputs_catalog_and_evaluate(tmp_path):
    from vitzoo.weights.release import load_checkpoint

    data = _messy_folder(tmp_path / "data")
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    home = {"VITZOO_HOME": str(tmp_path / "home")}
    work = tmp_path / "my-run"
    proc = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(work),
                "--steps", "6", "--warmup", "2", "--batch", "8", "--res", "32",
                "--eval-every", "3", "--log-every", "2", "--accum", "2", "--no-progress"],
               devices=2, env=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stderr.split())
    assert "skipped 1 unreadable file" in text and "fine-tune finished" in text

    config, info, _ = load_checkpoint(work / "final.npz")
    assert (info["num_classes"], info["resolution"], config.num_layers) == (2, 32, 2)
    run = json.loads((work / "run.json").read_text())
    assert run["status"] == "finished" and run["class_names"] == ["green", "red"]
    assert run["batch"] == {"global": 8, "per_device": 4, "accum": 2, "micro_batch": 2,
                            "devices": 2, "processes": 1}
    assert run["dataset"]["skipped_files"][0]["file"] == "train/red/corrupt.jpg"
    assert run["preprocessing"]["train"] == {"resize": 37, "crop": 32, "flip": True,
                                             "mean": [0.5] * 3, "std": [0.5] * 3,
                                             "method": "bilinear", "antialias": False,
                                             "keep_aspect": False, "center_crop": False}
    assert run["preprocessing"]["checkpoint"]["origin"] == "the vit_jax rule of release checkpoints"
    assert "corrupt.jpg" in (work / "run.log").read_text()
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    assert {"train_loss", "lr", "img_per_sec"} <= records[0].keys()
    assert {"eval_accuracy", "eval_loss"} <= records[1].keys()
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    registry = json.loads((tmp_path / "home" / "local_runs.json").read_text())
    assert registry[0]["checkpoint"] == "my-run"

    listed = cli(["list", "--local", "--format", "json"], env=home)
    assert listed.returncode == 0 and "my-run" in listed.stdout

    for target in (str(work / "final.npz"), "my-run"):
        ev = cli(["evaluate", target, "--dataset", str(data), "--format", "json",
                  "--per-class"], env=home)
        assert ev.returncode == 0, ev.stderr[-2000:]
        report = json.loads(ev.stdout)
        assert report["examples"] == 7 and report["split"] == "test"
        assert report["top1"] == pytest.approx(run["final_metrics"]["eval_accuracy"], abs=1e-6)
        assert [c["class"] for c in report["per_class"]] == ["green", "red"]
        assert sum(c["examples"] for c in report["per_class"]) == 7
        assert report["top5"] is None  # two classes: top-5 would be 100% by construction
        assert report["matmul"]["backend"] == "xla"  # the suite pins VITZOO_CPU_MATMUL=xla
    ev = cli(["evaluate", "my-run", "--dataset", str(data), "--eval-split", "test",
              "--format", "csv"], env=home)
    assert ev.returncode == 0, ev.stderr[-2000:]
    header, values = ev.stdout.splitlines()
    row = dict(zip(header.split(","), values.split(","), strict=True))
    assert (row["examples"], row["split"], row["top5"]) == ("7", "test", "")
    assert "matmul" not in row  # a record, not a scalar: JSON only
    assert float(row["top1"]) == pytest.approx(run["final_metrics"]["eval_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_tfds_oxford_iiit_pet_under_mock_data(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    work = tmp_path / "pets"
    code = finetune_code(str(ckpt), str(work), {"train": 24, "test": 10},
                         "--steps", "3", "--warmup", "1", "--batch", "8", "--res", "32")
    proc = run_python(code, devices=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((work / "run.json").read_text())
    assert len(run["class_names"]) == 37 and run["class_names"][0] == "Abyssinian"
    assert run["dataset"]["eval_split"] == "test" and run["dataset"]["eval_examples"] == 10
    assert run["final_metrics"]["eval_examples"] == 10


@pytest.mark.parametrize("case, expect", [
    ("one_class", "only one class"),
    ("unknown_tfds", "unknown TFDS dataset"),
    ("missing_folder", "does not exist"),
    ("accum_not_dividing", "does not divide"),
    ("accum_garbage", "'auto' or a positive integer"),
    ("bad_dtype", "--dtype must be float32 or bfloat16"),
    ("missing_checkpoint", "no such file"),
    ("bad_steps", "--steps must be at least 1"),
    ("coordinator_without_ids", "needs --num-processes"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, case, expect):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz")
    folder = write_folder(tmp_path / "ok", color_image, ["a", "b"], train=3, test=1, size=16)
    args = ["finetune", str(ckpt), "--dataset", str(folder), "--workdir", str(tmp_path / "w"),
            "--steps", "2", "--warmup", "1", "--batch", "4", "--res", "32", "--no-progress"]
    if case == "one_class":
        args[3] = str(write_folder(tmp_path / "one", color_image, ["a"], train=2, test=None))
    elif case == "unknown_tfds":
        args[3] = "definitely_not_a_dataset"
    elif case == "missing_folder":
        args[3] = str(tmp_path / "nowhere") + "/"
    elif case == "accum_not_dividing":
        args += ["--accum", "3"]
    elif case == "accum_garbage":
        args += ["--accum", "lots"]
    elif case == "bad_dtype":
        args += ["--dtype", "float16"]
    elif case == "missing_checkpoint":
        args[1] = str(tmp_path / "missing.npz")
    elif case == "bad_steps":
        args[args.index("--steps") + 1] = "0"
    elif case == "coordinator_without_ids":
        args += ["--coordinator", "127.0.0.1:1234"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert expect in err
    assert not (tmp_path / "w" / "checkpoint.npz").exists()


def test_evaluate_refuses_a_head_of_the_wrong_size(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "tiny.npz", num_classes=10)
    folder = write_folder(tmp_path / "ok", color_image, ["a", "b"], train=2, test=1, size=16)
    with pytest.raises(SystemExit):
        main(["evaluate", str(ckpt), "--dataset", str(folder)])
    assert "10-class head" in capsys.readouterr().err


def test_finetune_option_defaults_are_the_finetune_options_defaults():
    """One place for every default: the typer options read them from FinetuneOptions."""
    import dataclasses
    import inspect

    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.cli.adapt_cmds import finetune_command

    options = inspect.signature(finetune_command).parameters
    field_of = {"register_run": "register"}
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneOptions)}
    modes = {"ctx", "model", "dataset", "head_only", "dry_run", "compile_cache", "autotune",
             "allow_cpu"}
    flags = set(options) - modes  # mode, process
    assert len(flags) == 29  # 26 + --task, --labels, --recipe
    for flag in flags:
        default = options[flag].default.default
        default = float(default) if flag == "lr" else default  # --lr takes a list: text
        assert default == defaults[field_of.get(flag, flag)], flag
    assert (FinetuneOptions.steps, FinetuneOptions.lr, FinetuneOptions.res) == (500, 0.03, 384)
