"""TLM overhead: measured step-time ratio on the ``small`` preset, analytic FLOPs share on 7B.

1. Step time (forward + backward) of a stage-1 training step, FusarGPT (TLM + LoRA trainable)
   vs the same backbone without TLM (LoRA trainable), interleaved repeats, medians, one run.
2. The TLM's share of a Qwen2.5-VL-7B training step's FLOPs at 504x504, computed analytically.
   The formula is first checked against torch's FlopCounterMode on the small preset.
3. With --gpu on a CUDA machine: the measured ratio on the 7B shape (random weights, bf16).

Usage: python benchmarks/tlm_overhead.py [--repeats 11] [--batch 4] [--size 504] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusar_gpt.inputs import build_inputs
from fusar_gpt.model.backbone import build_random_model, load_backbone, make_backbone, preset_config
from fusar_gpt.model.fusar import FusarGPT, Priors
from fusar_gpt.model.policy import add_lora, apply_policy
from fusar_gpt.model.tlm import TLM


@dataclass
class Shape:
    size: int = 504  # square image side, px
    text: int = 64  # text tokens per sample (prompt + answer)
    anchors: int = 64  # 8 x 8 grid


def analytic_forward_flops(config, shape: Shape, batch: int) -> dict[str, float]:
    """Matmul FLOPs (2 per multiply-add) of one forward pass, by component.

    Attention score/value products are kept apart (``*_attn``) because FlopCounterMode does not
    count CPU scaled-dot-product attention; the other parts are checked against it exactly.
    """
    cfg = preset_config(config) if isinstance(config, str) else config  # a preset name or a model config
    v, t = cfg.vision_config, cfg.text_config
    hp = shape.size // v.patch_size
    patches, merged = hp * hp, (hp // v.spatial_merge_size) ** 2
    d, inner = v.hidden_size, v.intermediate_size
    win = (v.window_size // v.patch_size) ** 2  # patches per attention window
    full = len(v.fullatt_block_indexes)
    vision = patches * (v.temporal_patch_size * v.patch_size**2 * 3) * d * 2  # patch embedding
    vision += v.depth * patches * 2 * (4 * d * d + 3 * d * inner)  # qkv, proj, gated MLP
    vision_attn = full * 4 * patches * patches * d + (v.depth - full) * 4 * patches * win * d
    m = d * v.spatial_merge_size**2
    vision += merged * 2 * (m * m + m * t.hidden_size)  # patch merger MLP
    c, seq = t.hidden_size, merged + shape.text
    kv = c // t.num_attention_heads * t.num_key_value_heads
    llm = t.num_hidden_layers * seq * 2 * (2 * c * c + 2 * c * kv + 3 * c * t.intermediate_size)
    llm_attn = t.num_hidden_layers * 4 * seq * seq * c  # causal attention as computed by sdpa (full square)
    lm_head = seq * 2 * c * t.vocab_size  # on every position
    h = max(128, 4 * c)
    tlm = (shape.anchors + 1) * 2 * (64 * h + h * 2 * c)  # MLP on every anchor and on the null prior
    tlm += 2 * shape.anchors * merged * 2 * c  # weights^T (gamma, beta)
    parts = {"vision": vision, "vision_attn": vision_attn, "llm": llm, "llm_attn": llm_attn, "lm_head": lm_head,
             "tlm": tlm, "first_qkv_input_grad": seq * 2 * (c * c + 2 * c * kv)}
    return {k: batch * val for k, val in parts.items()}


def training_step_share(f: dict[str, float]) -> float:
    """TLM share of a stage-1 step (TLM + LoRA trainable).

    The frozen vision tower runs forward only; the TLM runs forward plus input and weight
    gradients (~3x); the LLM runs forward plus input gradients (~2x; LoRA weight gradients are
    negligible). With LoRA inside every layer almost all of the LLM's input gradients are needed
    anyway; the one extra a trainable TLM causes is the input gradient of the first layer's
    q/k/v projections (down to the visual tokens), counted here as TLM cost.
    """
    tlm = 3 * f["tlm"] + f["first_qkv_input_grad"]
    llm = f["llm"] + f["llm_attn"] + f["lm_head"]
    return tlm / (f["vision"] + f["vision_attn"] + 3 * f["tlm"] + 2 * llm)


def make_batch(processor, batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [(rng.random((size, size)) * 255).astype(np.uint8) for _ in range(batch)]
    data = build_inputs(processor, images, ["How many ships are in this image?"] * batch, answers=["3"] * batch)
    data["labels"] = data["input_ids"].masked_fill(data["attention_mask"] == 0, -100)
    feats = rng.normal(size=(batch, 64, 64)).astype(np.float32)
    pos = rng.random((batch, 64, 2)).astype(np.float32)
    return data, Priors.stack([(f, p) for f, p in zip(feats, pos)])


def time_steps(models: dict, data: dict, priors: Priors, repeats: int, sync=lambda: None) -> dict[str, float]:
    times = {name: [] for name in models}
    for r in range(repeats + 1):  # first round warms up, interleaved so drift hits both alike
        for name, (model, use_priors) in models.items():
            model.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            kw = {"priors": priors} if use_priors else {}
            model(**data, **kw).loss.backward()
            sync()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def tlm_alone_seconds(tlm: TLM, grid: torch.Tensor, priors: Priors, repeats: int) -> float:
    """Forward + backward of the TLM by itself on the batch's token shape (less noisy than a difference)."""
    n = int((grid.prod(-1) // 4).sum())
    tokens = torch.randn(n, tlm.hidden_size, requires_grad=True)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        tlm(tokens, grid, priors.features, priors.positions, priors.mask).sum().backward()
        if r:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def small_preset_ratio(repeats: int, batch: int, size: int) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        backbone, processor = load_backbone(make_backbone("small", tmp))
    fused = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), processor)
    data, priors = make_batch(processor, batch, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # check the analytic formula
        fused(**data, priors=priors)
    text = int(data["attention_mask"].sum(1).float().mean()) - (size // 28) ** 2
    analytic = analytic_forward_flops(backbone.config, Shape(size=size, text=text), batch)

    add_lora(fused)
    apply_policy(fused, "tlm+lora")
    fused.train()
    plain = fused.backbone  # same weights, no TLM: the vision tokens go in unmodulated
    step_flops = {}
    for name, model, kw in (("with_tlm", fused, {"priors": priors}), ("without_tlm", plain, {})):
        with FlopCounterMode(display=False) as step_counter:
            model(**data, **kw).loss.backward()
        step_flops[name] = step_counter.get_total_flops()
    med = time_steps({"with_tlm": (fused, True), "without_tlm": (plain, False)}, data, priors, repeats)
    med["tlm_alone"] = tlm_alone_seconds(fused.tlm, data["image_grid_thw"], priors, repeats)
    counted = analytic["vision"] + analytic["llm"] + analytic["lm_head"] + analytic["tlm"]  # seen on CPU
    return {"median_s": med, "ratio": med["with_tlm"] / med["without_tlm"],
            "analytic_step_share": training_step_share(analytic),
            "counted_step_flops_ratio": step_flops["with_tlm"] / step_flops["without_tlm"],
            "flop_counter_total": counter.get_total_flops(), "analytic_counted": counted}


def large_shape_ratio(repeats: int, preset: str = "qwen2.5-vl-7b", device: str = "cuda",
                      dtype: torch.dtype = torch.bfloat16, batches=(1, 8), size: int = 504) -> dict:
    """Random weights of a preset's shape (7B on one H200 in bf16): TLM + LoRA vs LoRA only, stage-1 step."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, processor = load_backbone(make_backbone("tiny", tmp))  # only for its image processor
    torch.manual_seed(0)
    backbone = build_random_model(preset, dtype=dtype, device=device)
    hidden = backbone.config.text_config.hidden_size
    fused = FusarGPT(backbone, TLM(hidden).to(device, dtype), processor)
    add_lora(fused)
    apply_policy(fused, "tlm+lora")
    fused.train()
    cfg = backbone.config
    for b in batches:
        rng = np.random.default_rng(b)
        images = [(rng.random((size, size, 3)) * 255).astype(np.uint8) for _ in range(b)]
        pix = processor.image_processor(images=images, return_tensors="pt")
        n = (size // 28) ** 2
        ids = [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id] + list(range(1, 64))
        input_ids = torch.tensor([ids] * b, device=device)
        data = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "mm_token_type_ids": (input_ids == cfg.image_token_id).long(), "labels": input_ids.clone(),
                "pixel_values": pix["pixel_values"].to(device, dtype),
                "image_grid_thw": pix["image_grid_thw"].to(device)}
        priors = Priors.stack([(rng.normal(size=(64, 64)), rng.random((64, 2))) for _ in range(b)]).to(device)
        sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
        med = time_steps({"with_tlm": (fused, True), "without_tlm": (fused.backbone, False)}, data, priors,
                         repeats, sync=sync)
        out[f"batch{b}"] = {"median_s": med, "ratio": med["with_tlm"] / med["without_tlm"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=504)
    ap.add_argument("--gpu", action="store_true", help="also measure the 7B shape in bf16 on CUDA")
    ap.add_argument("--dry-run-large", action="store_true",
                    help="run the --gpu code path on CPU with the tiny preset (checks it works, times mean nothing)")
    args = ap.parse_args()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
              "torch": torch.__version__}
    small = small_preset_ratio(args.repeats, args.batch, args.size)
    report["small_cpu"] = small
    print(f"small preset, batch {args.batch}, {args.size}px, stage-1 step (fwd+bwd), median of {args.repeats}: "
          f"with TLM {small['median_s']['with_tlm']:.3f} s, without {small['median_s']['without_tlm']:.3f} s, "
          f"ratio {small['ratio']:.3f}")
    print(f"stage-1 step FLOPs with/without TLM on small, FlopCounterMode (no attention): "
          f"{small['counted_step_flops_ratio']:.4f}; analytic TLM share of the step (with attention): "
          f"{small['analytic_step_share']:.2%}")
    print(f"TLM forward+backward alone {small['median_s']['tlm_alone'] * 1e3:.1f} ms = "
          f"{small['median_s']['tlm_alone'] / small['median_s']['without_tlm']:.2%} of the step without TLM")
    print(f"analytic / FlopCounterMode forward FLOPs on small (attention excluded, not counted on CPU): "
          f"{small['analytic_counted'] / small['flop_counter_total']:.4f}")
    for b in (1, 8):
        f = analytic_forward_flops("qwen2.5-vl-7b", Shape(size=args.size), b)
        total = sum(v for k, v in f.items() if k != "first_qkv_input_grad")
        share_fwd = f["tlm"] / total
        report[f"qwen2.5-vl-7b_batch{b}"] = {**f, "tlm_share_forward": share_fwd,
                                             "tlm_share_step": training_step_share(f)}
        print(f"7B, batch {b}, 504px, 64 anchors: TLM share of forward FLOPs {share_fwd:.4%}, "
              f"of a stage-1 step {training_step_share(f):.4%} (TLM {f['tlm'] / 1e9:.2f} GFLOP, "
              f"total forward {total / 1e12:.2f} TFLOP); stage 2 (TLM frozen) adds the forward share only")
    runs = {}
    if args.gpu:
        runs["qwen2.5-vl-7b_gpu_bf16"] = large_shape_ratio(args.repeats, size=args.size)
    if args.dry_run_large:
        runs["dry_run_tiny_cpu"] = large_shape_ratio(2, "tiny", "cpu", torch.float32, (1, 2), 224)
    for name, res in runs.items():
        report[name] = res
        for k, v in res.items():
            print(f"{name} {k}: step ratio with/without TLM {v['ratio']:.3f} ({v['median_s']})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
