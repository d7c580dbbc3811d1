"""The benchmark scripts' own logic: tables, ratios, op categories, lever definitions.

The timings themselves are never asserted (the numbers below are test data).
"""

from __future__ import annotations

import argparse

from benchmarks import finetune, levers, probe, profile_step


def _args(**kw):
    return argparse.Namespace(**{"steps": 4, "rounds": 2, **kw})


def _round(vitzoo, plain, timm):
    run = {"first_step_s": 20.0, "steady_img_per_sec": vitzoo, "all_img_per_sec": [vitzoo],
           "rss": 3000.0, "devices": 2,
           "runtime": {"xla_flags": "--xla_force_host_platform_device_count=2",
                       "compile_cache": "/home/compile-cache"}}
    return {
        "vitzoo-cold": run, "vitzoo-warm": {**run, "first_step_s": 8.0},
        "plain": {"steady_img_per_sec": plain, "first_step_s": 25.0, "rss": 4000.0},
        "timm-fp32": {"steady_img_per_sec": timm, "first_step_s": 4.0, "rss": 900.0,
                      "torch": "2.x", "timm": "1.x", "threads": 2},
        "timm-bf16": {"steady_img_per_sec": 2 * timm, "first_step_s": 3.0, "rss": 800.0},
        "vitzoo-bf16": {**run, "steady_img_per_sec": 2 * vitzoo},
        "fwd-vitzoo-Ti/16": {"img_per_sec": 30.0, "rss": 1.0},
        "fwd-backbone-bfloat16-B/16": {"img_per_sec": 4.0, "rss": 1.0},
        "fwd-timm-fp32-B/16": {"img_per_sec": 5.0, "rss": 1.0},
        "fwd-timm-bf16-B/16": {"img_per_sec": 8.0, "rss": 1.0},
    }


def test_finetune_table_gives_medians_over_rounds_and_ratios():
    rounds = [_round(12.0, 10.0, 20.0), _round(14.0, 10.0, 20.0), _round(13.0, 10.0, 20.0)]
    body = finetune.render(rounds, {"img_per_sec": 260.0}, 800.0, _args(rounds=3))
    row = next(line for line in body.splitlines() if line.startswith("| vitzoo finetune, cold"))
    assert "| 13.00 | 1.30x | 0.65x | 0.33x | 20.0 s | 3000 MiB |" in row
    warm = next(line for line in body.splitlines() if "warm compile cache (same" in line)
    assert "| 8.0 s |" in warm
    bf16 = next(line for line in body.splitlines() if "--dtype bfloat16" in line)
    assert "| 26.00 | 2.60x | 1.30x | 0.65x |" in bf16
    assert "| timm + PyTorch float32, inference_mode | n/a | 5.00 | n/a | 1.00x |" in body
    assert ("| vitzoo backbone.Forward bfloat16 (probe path, pmap) | n/a | 4.00 | n/a | 0.80x |"
            in body)
    assert "| timm + PyTorch bfloat16 autocast, inference_mode | n/a | 8.00 | n/a | 1.60x |" in body
    assert "backbone.Forward float32" not in body  # no measurement, no row
    assert "20.0x the training step's consumption" in body
    assert "2 host devices, compile cache on" in body


def test_finetune_says_which_backend_the_default_runs_used():
    last = _round(12.0, 10.0, 20.0)
    last["vitzoo-cold"]["runtime"] |= {
        "autotune": {"choice": {"host_devices": 2, "cpu_matmul": "onednn"}},
        "matmul": {"backend": "onednn", "reason": "autotune: 15.0 vs 13.0 img/s"}}
    last["fwd-backbone-float32-Ti/16"] = {"img_per_sec": 40.0,
                                         "matmul": ["xla", "measured fastest"]}
    body = finetune.render([last], {"img_per_sec": 100.0}, 800.0, _args(rounds=1))
    said = next(line for line in body.splitlines() if line.startswith("What the default"))
    assert '"cpu_matmul": "onednn"' in said
    assert "training products: onednn (autotune: 15.0 vs 13.0 img/s)" in said
    assert "fwd-backbone-float32 Ti/16: xla (measured fastest)" in said
    assert "backend as chosen here) | 40.00 |" in body
    plain = finetune.render([_round(12.0, 10.0, 20.0)], {"img_per_sec": 100.0}, 800.0,
                            _args(rounds=1))
    assert "What the default float32 runs used: not reported." in plain


def test_finetune_table_without_timm_says_so():
    rounds = [{k: v for k, v in _round(12.0, 10.0, 20.0).items() if "timm" not in k}]
    body = finetune.render(rounds, {"img_per_sec": 100.0}, 800.0, _args(rounds=1))
    assert "unset: no timm rows" in body
    row = next(line for line in body.splitlines() if line.startswith("| vitzoo finetune, cold"))
    assert "| 1.20x | n/a | n/a |" in row


def test_lscpu_summary_names_the_cpu():
    text = finetune.lscpu_summary()
    assert "physical cores usable" in text and "SIMD:" in text


def test_profile_categories():
    assert profile_step.category("ynn_fusion.31").startswith("matrix products")
    assert profile_step.category("dot.4").startswith("matrix products")
    assert profile_step.category("wrapped_broadcast.8").startswith("zero-filled")
    assert profile_step.category("copy.169").startswith("copies")
    assert profile_step.category("bitcast_dynamic-update-slice_fusion").startswith("scan")
    assert profile_step.category("multiply_tanh_fusion").startswith("exp/tanh")
    assert profile_step.category("while.3").startswith("control")
    assert profile_step.category("SlinkyThreadPool::Await") == "other"


def test_profile_render_shares_add_up():
    totals = {"ynn_fusion": 6e8, "copy.1": 2e8, "wrapped_broadcast": 2e8}
    body = profile_step.render(totals, 1.5, batch=16, steps=2)
    assert "| matrix products (YNNPACK fusions, dot, convolution) | 60.0% | 600 |" in body
    assert "| `copy.1` | 20.0% | 200 |" in body
    assert "1.00 s of XLA op time" in body


def test_every_lever_group_names_defined_variants():
    for names in levers.GROUPS.values():
        assert names and all(name in levers.VARIANTS for name in names)
    for spec, _ in levers.VARIANTS.values():
        assert spec.get("attention", "einsum") in ("einsum", "flax", "dpa")


def test_probe_forward_table_rows_and_ratios():
    results = {"Ti/16": {"float32": {"forward": 40.0, "end_to_end": 3.0},
                         "float32-onednn": {"forward": 45.0},
                         "timm": {"forward": 50.0}, "timm-bf16": {"forward": 80.0}},
               "B/16": {"float32": {"forward": 4.0, "end_to_end": 2.0},
                        "plain": {"forward": 3.5}}}
    lines = probe.forward_table(results)
    assert lines[0].startswith("| img/s | Ti/16 | B/16 | Ti/16 vs timm fp32 | B/16 vs timm fp32")
    row = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert row["vitzoo forward float32 (backend as chosen here)"].endswith(
        "| 40.0 | 4.0 | 0.80x | n/a | 0.50x | n/a |")
    assert row["vitzoo forward float32, oneDNN products (forced)"].endswith(
        "| 45.0 | n/a | 0.90x | n/a | 0.56x | n/a |")
    assert row["vitzoo extraction, end to end (float32)"].endswith(
        "| 3.0 | 2.0 | n/a | n/a | n/a | n/a |")  # end to end is not a forward: no ratio
    assert "vitzoo forward bfloat16, XLA products" not in row  # not measured, no row


def test_probe_keeps_the_recorded_memory_paragraph(tmp_path):
    import pytest

    results = tmp_path / "RESULTS.md"
    results.write_text("## Probe\n\ntable\n\nPeak host RSS of extraction: 1 GiB.\n\n| a |\n\n"
                       "Probing 10 cached candidates: 4 s.\n")
    assert probe.recorded_memory(results) == ["Peak host RSS of extraction: 1 GiB.", "", "| a |"]
    results.write_text("## Probe\n\nProbing 10 cached candidates: 4 s.\n")
    with pytest.raises(SystemExit, match="--skip-memory"):
        probe.recorded_memory(results)
