"""benchmarks/gpu_suite.py: its CPU dry run goes through every section (structure only, no timings asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_suite.py"


def _load():
    if "gpu_suite" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_suite"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_suite"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_dry_run_writes_every_section_and_prints_the_table(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "suite.json"
    assert bench.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    meta = report["meta"]
    assert meta["dry_run"] is True and meta["preset"] == "tiny" and meta["device"].startswith("CPU")
    assert meta["peak_tflops"] == 989.4 and meta["peak_source"] and meta["command"].endswith("--out " + str(out))
    assert _positive(meta["build_s"]) and _positive(report["seconds"])

    t = report["tlm_overhead"]
    assert "error" not in t
    for b in ("1", "2"):
        assert _positive(t[b]["ratio"]) and t[b]["analytic_ratio"] > 1
        for name in ("with_tlm", "without_tlm"):
            assert _positive(t[b][name]["median_s"]) and t[b][name]["repeats"] == 1
            assert t[b][name]["peak_memory_gib"] is None  # CPU: no CUDA memory statistics

    tr = report["train"]
    assert "error" not in tr and _positive(tr["ratio"])
    assert tr["vision_tower_backward"] in (True, False)
    for b in ("1", "2"):
        r = tr[b]
        assert all(_positive(r[k]) for k in ("median_s", "samples_per_s", "achieved_tflops", "mfu", "mfu_3x_forward"))
        assert r["mfu"] < 1 and r["peak_memory_gib"] is None
    assert 0 < tr["model_tflops_per_sample"]["step_model"] < tr["model_tflops_per_sample"]["3x_forward"]

    g = report["generate"]
    assert "error" not in g and g["new_tokens"] == 4 and _positive(g["ratio"])
    for b in ("1", "2"):
        assert _positive(g[b]["new_tokens_per_s"]) and _positive(g[b]["samples_per_s"])
        assert math.isclose(g[b]["new_tokens_per_s"], g[b]["samples_per_s"] * 4)

    text = capsys.readouterr().out
    assert "| figure | value |" in text and "dry run" in text
    for row in ("TLM overhead, step with TLM / without, batch 1", "TLM overhead, step with TLM / without, batch 2",
                "stage-I samples/s, activation checkpointing, batch 1", "stage-I samples/s, batch 2 / batch 1",
                "generate, new tokens/s, batch 2 (4 greedy)", "generate new tokens/s, batch 2 / batch 1"):
        assert f"| {row}" in text, row


def test_step_model_is_the_one_tlm_overhead_uses_and_peaks_follow_the_device_name(monkeypatch):
    bench = _load()
    f = bench.tlm_overhead.analytic_forward_flops("qwen2.5-vl-7b", bench.tlm_overhead.Shape(), 1)
    tlm_cost = 3 * f["tlm"] + f["first_qkv_input_grad"]
    assert math.isclose(tlm_cost / bench.stage1_step_flops(f), bench.tlm_overhead.training_step_share(f))

    class Args:
        dry_run, peak_tflops = False, None

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    for name, peak in (("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5)):
        monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda name=name: name)
        assert bench.peak_tflops(Args)[:2] == (name, peak)
    monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda: "Some Future GPU")
    try:
        bench.peak_tflops(Args)
        raise AssertionError("an unknown GPU needs --peak-tflops")
    except SystemExit as e:
        assert "--peak-tflops" in str(e)
    Args.peak_tflops = 500.0
    assert bench.peak_tflops(Args) == ("Some Future GPU", 500.0, "--peak-tflops")


def test_a_spent_budget_skips_sections_but_still_writes_the_json(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "partial.json"
    assert bench.main(["--dry-run", "--out", str(out), "--total-s", "1"]) == 1
    report = json.loads(out.read_text())
    for name in ("tlm_overhead", "train", "generate"):
        assert "skipped" in report[name]["error"]
    assert "**not measured**" in capsys.readouterr().out
