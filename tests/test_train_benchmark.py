"""benchmarks/train_throughput.py: its dry run goes through every code path (structure only, no timings asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "train_throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_throughput"] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_covers_the_library_path_and_the_large_shape_path():
    bench = _load()
    # its world on one site with 128 px AEF tiles (2 tiles, not 4 of 256 px: writing them was half the dry run);
    # the same scenes and seed: the records it times are built from them as before
    make_world = bench.make_world
    bench.make_world = lambda out, **kw: make_world(out, **{**kw, "sites": 1, "tile_px": 128, "block_size": 128})
    report = bench.run(dry_run=True)
    assert report["dry_run"] is True and report["machine"] and report["seconds"] > 0
    assert set(report) >= {"cpu", "large_dry_run"} and "gpu" not in report
    for name in ("cpu", "large_dry_run"):
        r = report[name]
        assert r["preset"] == "tiny" and r["size"] == 224 and r["round_samples"] == 2
        assert set(r["batches"]) == {"1", "2"}
        for v in r["batches"].values():
            assert v["samples_per_s"] > 0 and v["step_s"] > 0
            assert len(v["round_s"]) == r["repeats"] == 1
            assert v["peak_memory_gib"] is None  # CPU: no CUDA memory statistics
        assert r["ratio"] > 0
        t = r["tokens"]
        assert t["image_tokens"] == (224 // 28) ** 2  # 8 x 8 merged tokens per 224 px image
        assert t["text_tokens"] > t["supervised_tokens"] > 0 and t["anchors"] == 64
    assert report["cpu"]["trainable"] == "tlm+lora"
    large = report["large_dry_run"]
    assert large["gradient_checkpointing"] is True and large["device"] == "cpu"
    for v in large["batches"].values():
        assert v["model_tflops_per_sample"] > 0 and 0 < v["mfu_vs_h200_bf16"] < 1
    assert "989" in large["mfu_convention"]


def test_token_remap_sends_special_tokens_to_the_shape_only_ids():
    bench = _load()
    from fusar_gpt.model.backbone import SPECIAL_TOKENS, preset_config, train_tokenizer

    tok = train_tokenizer(vocab_size=600)
    cfg = preset_config("qwen2.5-vl-7b")
    table = bench._remap_table(tok, cfg)
    assert int(table[tok.convert_tokens_to_ids("<|image_pad|>")]) == cfg.image_token_id
    assert int(table[tok.convert_tokens_to_ids("<|vision_start|>")]) == cfg.vision_start_token_id
    special = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    regular = [i for i in range(len(tok)) if i not in special]
    assert all(int(table[i]) < 151643 for i in regular)  # no ordinary token lands on a special id
