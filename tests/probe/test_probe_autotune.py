"""The probe's img/s says which matrix-product backend it was timed with and why: the
forward autotune's trial, then its remembered answer, or off (injected timings decide)."""

from __future__ import annotations

import json

import pytest

from tests.backbone.test_forward_tune import Timings, auto  # noqa: F401 (a fixture)
from tests.support.adapt_helpers import stripes, tiny_checkpoint, write_folder
from tests.support.cli_helpers import run_cli


@pytest.fixture
def task(tmp_path):
    data = write_folder(tmp_path / "data", lambda c, s, r: stripes(60.0 * c, s, r),
                        ["a", "b", "c"], train=6, test=3, size=32)
    return data, str(tiny_checkpoint(tmp_path / "tiny.npz"))


@pytest.mark.usefixtures("auto")
def test_probe_records_the_backend_of_its_speed(task, capsys, monkeypatch):
    from vitzoo.backbone import forward_tune

    timings = Timings(xla=2.0, onednn=1.0)
    monkeypatch.setattr(forward_tune, "_timed", timings)
    data, ckpt = task
    args = ["probe", "--dataset", str(data), "--candidates", ckpt, "--shots", "1",
            "--seeds", "1", "--batch", "4"]

    def matmul(*extra: str) -> dict:
        code, out, err = run_cli(capsys, *args, *extra, "--format", "json")
        assert code == 0, err
        return json.loads(out)["candidates"][0]["throughput"]["matmul"]

    first = matmul()
    assert (first["backend"], first["autotune"]["source"]) == ("onednn", "trial")
    assert "onednn 4.0 img/s" in first["reason"] and "xla 2.0 img/s" in first["reason"]
    assert timings.calls == ["xla", "onednn"]
    again = matmul()
    assert (again["backend"], again["autotune"]["source"]) == ("onednn", "cache")
    off = matmul("--no-autotune")
    assert (off["backend"], off["autotune"]["source"]) == ("xla", "off")  # float32: the rule
    assert off["autotune"]["reason"] == "--no-autotune" and len(timings.calls) == 2
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "matrix products: onednn (autotune cache)" in " ".join(out.split())
