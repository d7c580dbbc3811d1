"""Which backend computes the dense products, and the one-line reasons when it cannot be oneDNN.

The auto rule is checked as a pure function of (dtype, platform, CPU flags, availability);
the fallbacks by taking away what the build needs (the oneDNN wheel, the compiler).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from vitzoo.errors import VitzooError
from vitzoo.kernels import build, matmul

BF16_CPU = frozenset({"avx512f", "avx512_bf16"})
AMX_CPU = frozenset({"avx512f", "amx_bf16", "amx_tile"})
PLAIN_CPU = frozenset({"avx2", "avx512f"})


def _ok():
    return None


def _never():
    raise AssertionError("availability must not be probed here")


@pytest.mark.parametrize("dtype,platform,flags,available,want", [
    (jnp.bfloat16, "cpu", BF16_CPU, _ok, "onednn"),
    (jnp.bfloat16, "cpu", AMX_CPU, _ok, "onednn"),
    (jnp.bfloat16, "cpu", PLAIN_CPU, _never, "xla"),  # no bf16 units
    (jnp.float32, "cpu", BF16_CPU, _never, "xla"),  # float32 compute stays with XLA
    (jnp.bfloat16, "gpu", BF16_CPU, _never, "xla"),
    (jnp.bfloat16, "cpu", BF16_CPU, lambda: "no oneDNN", "xla"),
])
def test_auto_rule(dtype, platform, flags, available, want):
    name, reason = matmul.choose_backend("auto", dtype, platform, flags, available)
    assert name == want and reason


def test_auto_reasons_name_the_cause():
    assert "no bf16 units" in matmul.choose_backend("auto", jnp.bfloat16, "cpu", PLAIN_CPU,
                                                    _never)[1]
    assert "float32" in matmul.choose_backend("auto", jnp.float32, "cpu", BF16_CPU, _never)[1]
    assert "no oneDNN" in matmul.choose_backend("auto", jnp.bfloat16, "cpu", BF16_CPU,
                                                lambda: "no oneDNN")[1]


def test_xla_and_forced_modes():
    assert matmul.choose_backend("xla", jnp.bfloat16, "cpu", BF16_CPU, _never)[0] == "xla"
    # forced: whatever the dtype or flags, if the kernel loads
    assert matmul.choose_backend("onednn", jnp.float32, "cpu", PLAIN_CPU, _ok)[0] == "onednn"
    with pytest.raises(VitzooError) as err:
        matmul.choose_backend("onednn", jnp.bfloat16, "cpu", BF16_CPU, lambda: "no compiler")
    assert "\n" not in str(err.value) and "no compiler" in str(err.value)
    assert "VITZOO_CPU_MATMUL=xla" in str(err.value)
    with pytest.raises(VitzooError, match="needs JAX on CPU"):
        matmul.choose_backend("onednn", jnp.bfloat16, "gpu", BF16_CPU, _ok)


def test_bad_mode_is_one_line(monkeypatch):
    monkeypatch.setenv(matmul.ENV, "mkl")
    with pytest.raises(VitzooError) as err:
        matmul.mode()
    assert "one of auto, onednn, xla" in str(err.value) and "\n" not in str(err.value)


def test_missing_onednn_is_one_line(monkeypatch, tmp_path):
    real = importlib.metadata.distribution

    def without_onednn(name):
        if name.startswith("onednn"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_onednn)
    with pytest.raises(VitzooError) as err:
        build.build(tmp_path)
    assert "oneDNN is not installed" in str(err.value) and "vitzoo[cpu-bf16]" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing half-built


def test_missing_compiler_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(VitzooError, match=r"no C\+\+ compiler found"):
        build.find_compiler()


def test_failed_compile_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("filelock")
    try:
        build.find_onednn()
        build.find_compiler()
    except VitzooError as exc:
        pytest.skip(exc.one_line())
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++;\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    with pytest.raises(VitzooError) as err:
        build.build(tmp_path / "out", announce=False)
    assert str(err.value).startswith("compiling the oneDNN kernel failed: ")
    assert "\n" not in str(err.value)
    built = build.built_path(tmp_path / "out")
    assert not built.exists() and not list(built.parent.glob(f".{built.name}.*"))


def test_build_command_fails_in_one_line_without_compiler(tmp_path):
    """``python -m vitzoo.kernels.build`` (``make kernels``): non-zero, one line, no traceback."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "VITZOO_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "vitzoo.kernels.build"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    if "oneDNN" in done.stderr:  # no wheel on this machine: that is the first reason
        assert lines == [lines[0]] and "not installed" in lines[0]
    else:
        assert lines == [lines[0]] and "no C++ compiler found" in lines[0], done.stderr


def test_key_depends_on_source_jaxlib_and_library(tmp_path):
    lib = tmp_path / "libdnnl.so.3"
    base = build.build_key(b"src", "0.10.2", lib)
    assert len({base, build.build_key(b"src2", "0.10.2", lib),
                build.build_key(b"src", "0.10.3", lib),
                build.build_key(b"src", "0.10.2", tmp_path / "other" / "libdnnl.so.3")}) == 4
    assert build.build_key(b"src", "0.10.2", lib) == base


def test_second_build_reuses_the_file(kernel):
    root = kernel.parent.parent
    assert build.build(root, announce=False) == kernel
    mtime = kernel.stat().st_mtime_ns
    assert build.build(root, announce=False) == kernel and kernel.stat().st_mtime_ns == mtime


def test_matmul_backend_of_this_process(kernel, monkeypatch):
    monkeypatch.setenv(matmul.ENV, "onednn")
    assert matmul.matmul_backend(jnp.bfloat16) == ("onednn", "VITZOO_CPU_MATMUL=onednn")
    monkeypatch.setenv(matmul.ENV, "xla")
    assert matmul.matmul_backend(jnp.bfloat16)[0] == "xla"
    monkeypatch.setenv(matmul.ENV, "auto")
    want = "onednn" if matmul._cpu_flags() & matmul.BF16_FLAGS else "xla"
    assert matmul.matmul_backend(jnp.bfloat16)[0] == want
    assert matmul.matmul_backend(jnp.float32)[0] == "xla"


@pytest.mark.parametrize("backend,dtype", [("onednn", "bfloat16"), ("xla", "bfloat16"),
                                           ("auto", "float32")])
def test_finetune_runtime_records_the_backend(kernel, monkeypatch, backend, dtype):
    """``runtime.matmul`` in run.json: what finetune's start decided, and why."""
    from vitzoo.adapt.options import FinetuneOptions
    from vitzoo.adapt.runner import start_runtime

    monkeypatch.setenv(matmul.ENV, backend)
    settings = start_runtime(FinetuneOptions(model="Ti/16", dataset="x", dtype=dtype), tune=False)
    entry = settings["matmul"]
    assert entry["mode"] == backend
    assert entry["backend"] == ("onednn" if backend == "onednn" else "xla")
    assert entry["reason"]
    if backend == "onednn":
        assert entry["isa"]  # e.g. avx512_core_bf16 or avx512_core_amx


def test_doctor_line(kernel, monkeypatch):
    from vitzoo import doctor

    monkeypatch.setenv(matmul.ENV, "onednn")
    [line] = doctor.cpu_matmul()
    assert line.level == "ok" and line.value.startswith("oneDNN (")
    monkeypatch.setenv(matmul.ENV, "xla")
    [line] = doctor.cpu_matmul()
    assert line.level == "info" and line.value == "XLA: VITZOO_CPU_MATMUL=xla"
    monkeypatch.setenv(matmul.ENV, "onednn")
    monkeypatch.setattr(matmul, "kernel_problem", lambda: "oneDNN is not installed")
    [line] = doctor.cpu_matmul()
    assert line.level == "problem" and "oneDNN is not installed" in line.value
    monkeypatch.setenv(matmul.ENV, "auto")
    monkeypatch.setattr(matmul, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    [line] = doctor.cpu_matmul()
    assert line.level == "warn" and "oneDNN is not installed" in line.value


# --- a trial's measured winner (use_measured / measured) ------------------------------


def _tiny_forward_calls(dtype) -> int:
    """oneDNN calls in the jaxpr of a freshly built tiny ViT's forward in ``dtype``."""
    import jax
    import numpy as np

    from vitzoo.models import ModelConfig, build_model

    config = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=1,
                         patch_size=16, num_heads=2)
    model = build_model(config, 3, dtype=dtype)
    x = np.zeros((1, 32, 32, 3), np.float32)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    return matmul.count_calls(jax.make_jaxpr(lambda p: model.apply(p, x))(params))


def test_measured_winner_routes_float32_under_auto(kernel, monkeypatch):
    monkeypatch.setenv(matmul.ENV, "auto")
    matmul.forget_problem()
    assert matmul.matmul_backend(jnp.float32)[0] == "xla"  # the rule: float32 stays with XLA
    assert _tiny_forward_calls(jnp.float32) == 0
    with matmul.measured(jnp.float32, "onednn"):
        assert matmul.matmul_backend(jnp.float32)[0] == "onednn"
        assert _tiny_forward_calls(jnp.float32) == 4  # qkv, out-proj, two MLP Dense
    assert matmul.matmul_backend(jnp.float32)[0] == "xla"  # restored after the block
    matmul.use_measured(jnp.float32, "onednn", "trial: 41 vs 37 img/s")
    try:
        assert matmul.matmul_backend(jnp.float32) == ("onednn", "trial: 41 vs 37 img/s")
        assert matmul.record(jnp.float32)["backend"] == "onednn"
    finally:
        matmul.use_measured(jnp.float32, None)
    assert matmul.matmul_backend(jnp.float32)[0] == "xla"


def test_measured_winner_never_overrides_the_users_mode(kernel, monkeypatch):
    matmul.forget_problem()
    with matmul.measured(jnp.float32, "onednn"):
        monkeypatch.setenv(matmul.ENV, "xla")
        assert matmul.matmul_backend(jnp.float32) == ("xla", f"{matmul.ENV}=xla")
        assert not matmul.available()
    with matmul.measured(jnp.bfloat16, "xla"):
        monkeypatch.setenv(matmul.ENV, "onednn")
        assert matmul.matmul_backend(jnp.bfloat16)[0] == "onednn"


def test_measured_onednn_falls_back_when_the_kernel_is_missing(monkeypatch):
    monkeypatch.setenv(matmul.ENV, "auto")
    monkeypatch.setattr(matmul, "kernel_problem", lambda: "no compiler")
    with matmul.measured(jnp.float32, "onednn"):
        name, reason = matmul.matmul_backend(jnp.float32)
    assert name == "xla" and "no compiler" in reason
    assert not matmul.available()
    with pytest.raises(ValueError):
        matmul.use_measured(jnp.float32, "mkl")
