"""``vitzoo doctor``: versions, accelerators, source reachability, cache size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT
from tests.support.gcs_emulator import GatewayServer, closed_port_url, deny_paths


def _doctor(args: list[str], **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra)
    env["COLUMNS"] = "1000"  # no wrapping inside table cells
    return subprocess.run([sys.executable, "-c", "from vitzoo.cli import main; main()",
                           "doctor", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO_ROOT)


def test_doctor_reports_a_refusing_bucket_and_each_mirror(gcs, tmp_path):
    gcs.create_bucket("vit_models")
    gcs.upload("vit_models", "augreg/index.csv", b"name\n")
    refusing = GatewayServer(gcs.url, deny=deny_paths(("/storage/v1/b/vit_models",)))
    (tmp_path / "mirror").mkdir()
    try:
        result = _doctor(["--skip-ml", "--timeout", "2"], VITZOO_GCS_ENDPOINT=refusing.url,
                         VITZOO_MIRRORS=f"{tmp_path / 'mirror'} {tmp_path / 'gone'} "
                                        f"{closed_port_url()}/m")
    finally:
        refusing.stop()
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "numpy" in out and "gcsfs" in out
    assert f"gcs {refusing.url}" in out and "reachable; access denied by" in out
    assert "(HTTP 403)" in out
    assert "folder exists" in out and "folder does not exist" in out
    assert "unreachable: Connection refused" in out
    assert "offline mode (HF_HUB_OFFLINE)" in out
    assert "0 checkpoints, 0.00 GB" in out
    assert f"can be served by mirror {tmp_path / 'mirror'}" in out


def test_doctor_says_when_anonymous_reads_work(gcs):
    gcs.create_bucket("vit_models")
    gcs.upload("vit_models", "augreg/index.csv", b"name\n")
    result = _doctor(["--skip-ml"], VITZOO_GCS_ENDPOINT=gcs.url)
    assert result.returncode == 0
    assert "anonymous read of gs://vit_models/augreg/index.csv works" in result.stdout


def test_doctor_skip_ml_imports_no_ml_and_reports_a_dead_endpoint():
    """--skip-ml is the quick check: it must not load jax, flax or TensorFlow at all."""
    probe = ("import sys\nfrom vitzoo.cli import main\n"
             "try:\n    main(['doctor', '--skip-ml', '--timeout', '1'])\n"
             "except SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
             "loaded = sorted(m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules)\n"
             "print('EXIT', code, 'LOADED', ','.join(loaded) or '-')\n")
    env = {**os.environ, "COLUMNS": "1000", "VITZOO_GCS_ENDPOINT": closed_port_url(),
           "HF_HUB_OFFLINE": "1", "VITZOO_MIRRORS": ""}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, timeout=120, cwd=REPO_ROOT)
    assert result.stdout.rstrip().endswith("EXIT 1 LOADED -"), result.stdout + result.stderr
    assert "unreachable: Connection refused" in result.stdout
    assert "PROBLEM: checkpoints: no source can serve checkpoints" in result.stdout
    assert "backend" not in result.stdout and "TensorFlow" not in result.stdout


@pytest.mark.slow
def test_doctor_warns_loudly_when_a_gpu_is_present_but_jax_sees_only_cpu(tmp_path):
    """A fake ``nvidia-smi`` on PATH stands in for a GPU machine; JAX here is CPU-only."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-test)'\n")
    fake.chmod(0o755)
    result = _doctor(["--timeout", "1"], PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
                     VITZOO_GCS_ENDPOINT=closed_port_url(), JAX_PLATFORMS="cpu")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "backend" in out and "cpu" in out
    assert "GPU NOT USED" in out and "GPU 0: NVIDIA H100" in out
    assert "PROBLEM: GPU NOT USED" in out
    assert "hidden from TensorFlow" in out


def test_doctor_says_offline_when_every_lookup_fails():
    from vitzoo.doctor import Line, serving

    lines = [Line("sources", "gcs https://storage.googleapis.com", "unreachable: host name lookup failed",
                  "warn"),
             Line("sources", "hf https://huggingface.co", "unreachable: host name lookup failed", "warn"),
             Line("cache", "size", "0 checkpoints, 0.00 GB in /x")]
    (line,) = serving(lines)
    assert line.level == "problem" and "this machine looks offline" in line.value
    cached = [*lines[:2], Line("cache", "size", "2 checkpoints, 0.10 GB in /x")]
    assert serving(cached)[0].value == "can be served by the cache"


def _fake_install(monkeypatch, versions: dict[str, str], requires: list[str]) -> None:
    """An installation with these versions, and vitzoo's metadata declaring ``requires``."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    known = {canonicalize_name(name): v for name, v in versions.items()}

    def version(name: str) -> str:  # like importlib's: any spelling of the name
        if canonicalize_name(name) not in known:
            raise metadata.PackageNotFoundError(name)
        return known[canonicalize_name(name)]

    def requires_of(name: str) -> list[str]:
        assert name == "vitzoo"
        return requires

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(metadata, "requires", requires_of)


REQUIRES = ["jax>=0.4.30,<0.11", "flax>=0.8.5,<0.13", "numpy>=1.26,<3",
            "tensorflow-cpu>=2.16,<3; sys_platform == 'linux'",
            "tensorflow>=2.16,<3; sys_platform != 'linux'",
            "tensorboardx>=2.6", "pytest>=8; extra == 'test'"]


def test_doctor_warns_about_a_version_outside_the_tested_range(monkeypatch):
    from vitzoo.doctor import versions

    tf = "tensorflow-cpu" if sys.platform == "linux" else "tensorflow"
    _fake_install(monkeypatch, {"jax": "0.11.0", "jaxlib": "0.11.0", "flax": "0.12.8", "numpy": "2.4.6",
                                tf: "2.15.1", "tensorboardX": "2.5", "pytest": "7.0"}, REQUIRES)
    lines = {line.item: line for line in versions()}
    warned = {item for item, line in lines.items() if line.level == "warn"}
    # above the cap, below the floor, and a dependency doctor does not list otherwise
    assert warned == {"jax", tf, "tensorboardx"}
    assert lines["jax"].value == ("0.11.0: outside the tested range <0.11,>=0.4.30; install a tested one: "
                                  "pip install 'jax<0.11,>=0.4.30'")
    assert lines["tensorboardx"].value.startswith("2.5: outside the tested range >=2.6")
    assert lines["flax"].value == "0.12.8 (tested <0.13,>=0.8.5)" and lines["flax"].level == "ok"
    assert lines["jaxlib"].value == "0.11.0"  # no range of its own: jax pins it
    assert "pytest" not in lines  # a test extra is not a runtime dependency
    assert lines["optax"].value == "not installed"


def test_doctor_accepts_prereleases_inside_the_range_and_says_when_ranges_are_unknown(monkeypatch):
    from importlib import metadata

    from vitzoo.doctor import versions

    _fake_install(monkeypatch, {"jax": "0.10.3.dev20260101", "flax": "0.13.0rc1"}, REQUIRES)
    lines = {line.item: line for line in versions()}
    assert lines["jax"].level == "ok"  # a nightly of a tested minor
    assert lines["flax"].level == "warn"  # a candidate of the next, untested one

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", not_installed)
    lines = {line.item: line for line in versions()}
    assert lines["jax"].value == "0.10.3.dev20260101" and lines["jax"].level == "ok"
    assert lines["tested ranges"].level == "info" and "metadata is missing" in lines["tested ranges"].value
