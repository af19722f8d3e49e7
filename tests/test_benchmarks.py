"""The benchmark's analytic FLOPs formula against torch's FlopCounterMode (a correctness check, not a timing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.tlm import TLM

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "tlm_overhead.py"
spec = importlib.util.spec_from_file_location("tlm_overhead", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["tlm_overhead"] = bench  # dataclasses look their module up while the script executes
spec.loader.exec_module(bench)


@torch.no_grad()
def test_analytic_flops_match_flop_counter_on_tiny(tiny):
    backbone, proc = tiny
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc).eval()
    data, priors = bench.make_batch(proc, 2, 224)
    data.pop("labels")
    with FlopCounterMode(display=False) as counter:
        model(**data, priors=priors)
    text = int(data["attention_mask"].sum(1).float().mean()) - (224 // 28) ** 2
    f = bench.analytic_forward_flops(backbone.config, bench.Shape(size=224, text=text), 2)
    counted = f["vision"] + f["llm"] + f["lm_head"] + f["tlm"]  # CPU attention kernels are not counted by torch
    assert abs(counted / counter.get_total_flops() - 1) < 1e-3
    assert 0 < bench.training_step_share(f) < 1


def test_large_shape_code_path_runs_on_cpu():
    res = bench.large_shape_ratio(1, "tiny", "cpu", torch.float32, (1,), 224)
    assert res["batch1"]["ratio"] > 0


def _load(name):
    spec_ = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec_)
    sys.modules[name] = module
    spec_.loader.exec_module(module)
    return module


def test_aef_sampling_benchmark_agrees_with_the_naive_way_on_a_small_world():
    """A dry run of the script's whole path; its timing figures are not asserted (they are not tests)."""
    import functools

    aef_bench = _load("aef_sampling")
    # the script writes its tiles in 1024 px blocks (the bucket's); a 256 px tile in one 256 px block reads the same
    # and writes about five times faster
    aef_bench.write_tile = functools.partial(aef_bench.write_tile, block_size=256)
    r = aef_bench.run(footprints=6, naive=1, repeats=1, tile=256, grids=(4,))
    g = r["grids"]["4x4"]
    assert g["identical_to_naive"] is True and g["naive_timed_on"] == 4
    assert 0.0 < g["valid_node_share"] <= 1.0


def test_turns_benchmark_dry_run_trains_the_same_answers_both_ways():
    path = Path(__file__).parents[1] / "benchmarks" / "turns_throughput.py"
    spec = importlib.util.spec_from_file_location("turns_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["turns_throughput"] = bench
    spec.loader.exec_module(bench)
    # its world on one site with 128 px AEF tiles (2 tiles, not 8 of 256 px: writing them was half the dry run);
    # the same scenes and seed, and what is timed and compared is the training on them
    make_world = bench.make_world
    bench.make_world = lambda out, **kw: make_world(out, **{**kw, "sites": 1, "tile_px": 128, "block_size": 128})
    r = bench.run(dry_run=True)
    assert r["dry_run"] and r["preset"] == "tiny" and r["turns"] == 3
    assert r["one_per_sequence"]["answers_per_s"] > 0 and r["conversations"]["answers_per_s"] > 0
    assert r["ratio"] > 0


def test_aef_pull_benchmark_dry_run_gets_identical_anchors_three_ways_over_http():
    """The script's whole path (loopback bucket, pull of windows and of whole tiles, per-chip reads over HTTP) on a
    tiny world; its byte and time figures are not asserted beyond being measured (they are not tests)."""
    r = _load("aef_pull").run(dry_run=True)
    assert r["dry_run"] and r["identical"] is True and r["valid_node_share"] > 0.5
    for way in ("window", "whole", "per_chip"):
        assert r[way]["bytes"] > 0 and r[way]["requests"] > 0 and r[way]["seconds"] > 0
    assert r["window"]["files"] > 0 and r["whole"]["files"] == 4 and r["window"]["retries"] == 0
    assert r["bytes_ratio_per_chip_vs_window"] > 0 and r["time_ratio_whole_vs_window"] > 0
    # the whole-tile bytes the default layout computes from measured block sizes (it does not write whole tiles)
    # agree with the tiles written and downloaded here, where every block is real
    assert abs(r["whole"]["computed_bytes"] / r["whole"]["local_bytes"] - 1) < 0.1
    assert r["window"]["planned_bytes"] < r["window"]["bytes"] < r["whole"]["bytes"]
