"""The GPU guard: a GPU or TPU that JAX cannot use stops finetune, evaluate, probe and predict
with the install that fixes it, unless ``--allow-cpu``; ``doctor`` reports the same line.

The hardware is simulated: the probes' paths point into a temporary folder (or
``accelerators.detect`` is replaced); JAX here really is CPU-only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli_helpers import run_cli
from vitzoo import accelerators, runtime
from vitzoo.errors import VitzooError

GPU = accelerators.Accelerator("gpu", "GPU 0: NVIDIA H100 (simulated)")
TPU = accelerators.Accelerator("tpu", "TPU device /dev/accel0 (simulated)")


@pytest.fixture
def no_hardware(monkeypatch, tmp_path):
    """Every probe looks at an empty folder and no nvidia-smi is on PATH."""
    fake = tmp_path / "fake"
    fake.mkdir()
    monkeypatch.setattr(accelerators, "NVIDIA_FILES", (str(fake / "proc_nvidia_version"),))
    monkeypatch.setattr(accelerators, "NVIDIA_DEVICE_GLOB", str(fake / "nvidia[0-9]*"))
    monkeypatch.setattr(accelerators, "PCI_DEVICES_GLOB", str(fake / "pci" / "*"))
    monkeypatch.setattr(accelerators, "TPU_ACCEL_GLOB", str(fake / "accel[0-9]*"))
    monkeypatch.setattr(accelerators, "VFIO_GLOB", str(fake / "vfio" / "[0-9]*"))
    monkeypatch.setenv("PATH", str(fake / "bin"))
    for name in accelerators.TPU_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(accelerators.ALLOW_CPU_ENV, raising=False)
    monkeypatch.setattr(accelerators, "_cli_allow_cpu", None)
    return fake


def test_nothing_is_detected_on_a_bare_machine(no_hardware):
    assert accelerators.detect() is None


def test_an_nvidia_driver_file_or_device_node_is_a_gpu(no_hardware):
    (no_hardware / "proc_nvidia_version").write_text("NVRM version: 550.54")
    assert accelerators.detect().kind == "gpu"
    (no_hardware / "proc_nvidia_version").unlink()
    (no_hardware / "nvidia0").write_text("")
    found = accelerators.detect()
    assert found.kind == "gpu" and "nvidia0" in found.evidence


def test_nvidia_smi_is_asked_only_when_no_file_says_so(no_hardware):
    smi = no_hardware / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-x)'\n")
    smi.chmod(0o755)
    assert accelerators.detect() == accelerators.Accelerator(
        "gpu", "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-x)")
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no devices' >&2; exit 9\n")
    assert accelerators.detect() is None  # the tools without a GPU are not a GPU


def test_tpu_probes_follow_jax(no_hardware, monkeypatch):
    chip = no_hardware / "pci" / "0000:00:04.0"
    chip.mkdir(parents=True)
    (chip / "vendor").write_text("0x1ae0\n")
    (chip / "device").write_text("0x0063\n")  # a v5e, as jax/_src/hardware_utils.py lists it
    assert accelerators.detect().kind == "tpu"
    (chip / "device").write_text("0x9999\n")  # a Google device that is not a TPU
    assert accelerators.detect() is None
    (no_hardware / "accel0").write_text("")
    assert accelerators.detect().kind == "tpu"
    (no_hardware / "accel0").unlink()
    (no_hardware / "vfio").mkdir()
    (no_hardware / "vfio" / "0").write_text("")
    assert accelerators.detect() is None  # vfio alone is any passthrough device
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    assert accelerators.detect().kind == "tpu"


def test_the_guard_stops_under_a_simulated_gpu_and_names_the_extra(no_hardware, monkeypatch):
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    with pytest.raises(VitzooError) as caught:
        runtime.require_accelerator()
    line = caught.value.one_line()
    assert 'pip install "vitzoo[cuda12]"' in line and "--allow-cpu" in line and "\n" not in line
    monkeypatch.setattr(accelerators, "detect", lambda: TPU)
    with pytest.raises(VitzooError, match=r'pip install "vitzoo\[tpu\]"'):
        runtime.require_accelerator()


def test_the_guard_is_silent_without_an_accelerator_or_when_cpu_is_allowed(no_hardware,
                                                                           monkeypatch):
    runtime.require_accelerator()  # bare machine: JAX on the CPU is all there is
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    accelerators.set_allow_cpu(True)
    runtime.require_accelerator()
    accelerators.set_allow_cpu(False)
    monkeypatch.setenv(accelerators.ALLOW_CPU_ENV, "1")
    runtime.require_accelerator()


def test_the_message_is_only_for_the_cpu_platform():
    assert accelerators.unused_accelerator("gpu", GPU) is None
    assert accelerators.unused_accelerator("cpu", None) is None
    assert "vitzoo[cuda12]" in accelerators.unused_accelerator("cpu", GPU)


@pytest.fixture
def tiny_world(tmp_path):
    """A tiny checkpoint and a two-class folder: enough for each command to reach JAX."""
    from tests.support.ckpt_factory import write_tiny_vit

    ckpt = write_tiny_vit(tmp_path / "tiny.npz", num_classes=2, image_size=32, patch=16)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / name / f"{i}.png")
    return ckpt, tmp_path / "photos"


def commands(ckpt: Path, photos: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Each guarded command with arguments that fail *after* the guard (so --allow-cpu shows)."""
    missing = str(tmp_path / "missing") + "/"
    return {
        "finetune": ["finetune", str(ckpt), "--dataset", missing, "--no-progress"],
        "evaluate": ["evaluate", str(ckpt), "--dataset", missing],
        "predict": ["predict", str(ckpt), str(photos / "a" / "0.png"), "--res", "32",
                    "--format", "json"],
        "probe": ["probe", "--dataset", missing, "--candidates", str(ckpt)],
        "finetune --head-only": ["finetune", str(ckpt), "--dataset", missing, "--head-only"],
        "recommend --data": ["recommend", "--data", missing, "--candidates", str(ckpt)],
    }


@pytest.mark.slow
def test_the_four_commands_stop_under_a_simulated_gpu_unless_allow_cpu(no_hardware, monkeypatch,
                                                                       tiny_world, tmp_path,
                                                                       capsys):
    ckpt, photos = tiny_world
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    for name, argv in commands(ckpt, photos, tmp_path).items():
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (name, out, err)
        assert err.count("\n") == 1 and 'pip install "vitzoo[cuda12]"' in err, (name, err)
        code, out, err = run_cli(capsys, *argv, "--allow-cpu")
        assert "vitzoo[cuda12]" not in err, (name, err)
        if name == "predict":  # a real image: past the guard, the prediction
            assert code == 0, (name, err)
        else:  # past the guard: the missing dataset is next
            assert code == 2 and "does not exist" in err, (name, err)
        # --allow-cpu is not remembered: the next call without it is stopped again
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "vitzoo[cuda12]" in err, name


def test_doctor_reports_the_guards_line(no_hardware, monkeypatch):
    from vitzoo import doctor

    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    lines = [line for line in doctor.accelerators() if line.level == "problem"]
    assert [(line.item, line.value) for line in lines] == [
        ("GPU NOT USED", accelerators.unused_accelerator("cpu", GPU))]
    monkeypatch.setattr(accelerators, "detect", lambda: None)
    assert not [line for line in doctor.accelerators() if "NOT USED" in line.item]


@pytest.fixture
def fake_cuda_plugin(tmp_path, monkeypatch):
    """A ``jax_plugins.xla_cuda12`` module on sys.path, as ``jax-cuda12-pjrt`` installs one."""
    plugin = tmp_path / "site" / "jax_plugins" / "xla_cuda12"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def test_the_early_stop_needs_both_the_hardware_and_no_plugin(no_hardware, monkeypatch,
                                                              tmp_path):
    accelerators.stop_early_if_unreachable()  # bare machine
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    with pytest.raises(VitzooError) as caught:  # this test venv has CPU-only JAX
        accelerators.stop_early_if_unreachable()
    line = caught.value.one_line()
    assert 'pip install "vitzoo[cuda12]"' in line and "--allow-cpu" in line and "\n" not in line
    accelerators.set_allow_cpu(True)
    accelerators.stop_early_if_unreachable()
    accelerators.set_allow_cpu(None)
    monkeypatch.setattr(accelerators, "detect", lambda: TPU)
    with pytest.raises(VitzooError, match=r'vitzoo\[tpu\]'):
        accelerators.stop_early_if_unreachable()
    monkeypatch.setenv("TPU_LIBRARY_PATH", str(tmp_path / "libtpu.so"))
    accelerators.stop_early_if_unreachable()  # a libtpu JAX may load: JAX start decides


def test_an_installed_gpu_plugin_leaves_the_decision_to_jax(no_hardware, monkeypatch,
                                                            fake_cuda_plugin):
    assert accelerators.jax_plugin_installed("gpu")
    assert not accelerators.jax_plugin_installed("tpu")
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    accelerators.stop_early_if_unreachable()
    with pytest.raises(VitzooError, match="cuda12"):  # the plugin did not load: JAX is on CPU
        runtime.require_accelerator()


def test_finetune_stops_before_it_looks_at_the_dataset(no_hardware, monkeypatch, tiny_world,
                                                       tmp_path, capsys):
    ckpt, _ = tiny_world
    monkeypatch.setattr(accelerators, "detect", lambda: GPU)
    argv = ["finetune", str(ckpt), "--dataset", str(tmp_path / "missing") + "/", "--no-progress"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "vitzoo[cuda12]" in err and "does not exist" not in err
