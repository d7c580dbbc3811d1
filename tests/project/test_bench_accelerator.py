"""benchmarks/accelerator.py in its CPU-sized form: compiles, times, reads FLOPs, renders."""

from __future__ import annotations

import pytest

from benchmarks import accelerator
from tests.support.adapt_helpers import run_python


def test_peak_table_lookup_and_override():
    assert accelerator.peak_tflops("NVIDIA H200") == 989.0
    assert accelerator.peak_tflops("TPU v5 lite") == 197.0
    assert accelerator.peak_tflops("cpu") is None
    assert accelerator.peak_tflops("cpu", 2.0) == 2.0


def test_parse_case():
    assert accelerator.parse_case("L/16@384") == ("L/16", 384)
    assert accelerator.parse_case("B/16") == ("B/16", 224)


@pytest.mark.slow
def test_cpu_sized_run_on_two_host_devices():
    proc = run_python("""
        from benchmarks import accelerator
        print(accelerator.main(["--case", "Ti/16@32", "--batch", "5", "--steps", "1",
                                "--pipeline-images", "8", "--peak-tflops", "0.5",
                                "--no-write"]))
    """, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| Ti/16@32"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    case, dtype, batch, ips, step, tflops, peak, mfu, compile_s, pipeline = cells
    assert (case, dtype, batch, peak) == ("Ti/16@32", "bfloat16", "4", "0.5")  # 5 -> 2 x 2
    assert compile_s.endswith(" s")
    assert float(ips) > 0 and step.endswith(" ms") and float(tflops) > 0
    assert mfu.endswith("%") and 0 < float(mfu[:-1]) < 100
    assert pipeline.endswith(" img/s") and float(pipeline.split()[0]) > 0
    assert "2 x cpu" in proc.stdout
