"""GPU suite: every paper-scale figure of the Qwen2.5-VL-7B shape in one run on one GPU (< 8 minutes).

Why: a GPU is lent rarely and briefly, so the figures the CPU benchmarks could not measure are
prepared as one script that builds the 7B model once and measures them all. Random weights of
the 7B shape are built in place on the GPU in bf16 (``build_random_model``, no download); images
are 504 x 504 (324 visual tokens), 64 anchors, 64 text tokens; TLM + LoRA trainable in fp32 under
bf16 autocast, as ``fusar_gpt.train.build_model`` keeps them.

1. ``tlm_overhead``: stage-I step (forward + backward) with TLM + LoRA vs the same backbone with
   LoRA and no TLM, batch 1 and 8, interleaved, medians after warm-up.
2. ``train``: stage-I optimizer steps (token loss + backward + clip + AdamW, the trainer's
   pieces via ``train_throughput.Stepper``) with activation checkpointing as ``train.py`` enables
   it, batch 1 vs 8: samples/s, MFU, peak memory. Model FLOPs per sample = the stage-I step model
   of ``tlm_overhead.py`` (vision forward, TLM 3x forward, LLM 2x forward, first-layer q/k/v input
   gradient; recomputation not counted); ``mfu_3x_forward`` is train_throughput's convention.
3. ``generate``: greedy ``FusarGPT.generate`` at batch 1 vs 16, ``min_new_tokens = max_new_tokens``
   so every row decodes the same length: new tokens/s and samples/s.

Timing uses CUDA events after a synchronize. Each section has a time budget: past it, no new
repeat starts (at least one is kept); an alarm at budget + 30 s abandons the section (it cannot
interrupt a single long CUDA call). The JSON is rewritten after every section, so a run cut short
keeps what it measured. The MFU peak is the device's nominal dense bf16 figure (H100/H200 SXM:
989.4 TFLOP/s) or ``--peak-tflops``; the JSON records which.

Usage: python benchmarks/gpu_suite.py --out gpu_suite.json [--peak-tflops 989.4] [--repeats 10]
       python benchmarks/gpu_suite.py --dry-run --out /tmp/gpu_suite.json   # CPU, tiny preset, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import tlm_overhead  # noqa: E402
import train_throughput  # noqa: E402

from fusar_gpt.losses import token_loss  # noqa: E402
from fusar_gpt.model.backbone import build_random_model  # noqa: E402
from fusar_gpt.model.fusar import FusarGPT, Priors  # noqa: E402
from fusar_gpt.model.policy import add_lora, apply_policy  # noqa: E402
from fusar_gpt.model.tlm import TLM  # noqa: E402

# Nominal dense bf16 tensor-core peaks, TFLOP/s; the first name contained in the device name wins.
PEAKS = (("H100 PCIe", 756.5), ("H100 NVL", 835.5), ("H200 NVL", 835.5), ("H100", 989.4), ("H200", 989.4),
         ("A100", 312.0))
GRACE_S = 30.0
FULL = dict(preset="qwen2.5-vl-7b", device="cuda", dtype=torch.bfloat16, size=504, train_batches=(1, 8),
            gen_batches=(1, 16), new_tokens=32, warmup=2, budgets={"tlm_overhead": 75, "train": 120, "generate": 90})
DRY = dict(preset="tiny", device="cpu", dtype=torch.float32, size=56, text=16, anchors=16, train_batches=(1, 2),
           gen_batches=(1, 2), new_tokens=4, warmup=0, budgets={"tlm_overhead": 60, "train": 60, "generate": 60})


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def hard_limit(seconds: float):
    """SIGALRM after ``seconds`` (main thread on Unix, no other alarm pending; else only the soft budget)."""
    if (not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield
        return

    def _raise(signum, frame):
        raise SectionTimeout(f"abandoned after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def timed(fn, cuda: bool) -> float:
    """Seconds one call of ``fn`` takes; on CUDA between two events on the stream, after a synchronize."""
    if not cuda:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def interleaved(configs: dict, warmup: int, repeats: int, deadline: float, cuda: bool) -> dict:
    """One call of every config per round; medians of the timed rounds; peak memory per config."""
    times = {name: [] for name in configs}
    peak = dict.fromkeys(configs, 0)
    for r in range(warmup + repeats):
        if r > warmup and time.perf_counter() > deadline:
            break  # over budget: keep the rounds done (at least one timed)
        for name, fn in configs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t = timed(fn, cuda)
            if cuda:
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
            if r >= warmup:
                times[name].append(t)
    return {name: {"median_s": statistics.median(ts), "times_s": ts, "repeats": len(ts),
                   "peak_memory_gib": peak[name] / 2**30 if cuda else None} for name, ts in times.items()}


class _Batch(dict):
    """A prepared batch; ``.to`` returns a fresh copy (token_loss pops the labels of what it gets)."""

    def to(self, device):
        return _Batch({k: v.to(device) for k, v in self.items()})


class Suite:
    def __init__(self, preset, device, dtype, size, text=64, anchors=64, **_):
        self.device, self.dtype, self.size, self.text, self.anchors = device, dtype, size, text, anchors
        self.cuda = str(device).startswith("cuda")
        self.images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=1008 * 1008)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        backbone = build_random_model(preset, dtype=dtype, device=device)  # in place, in the target dtype
        self.cfg = backbone.config
        with torch.device(device):
            tlm = TLM(self.cfg.text_config.hidden_size)
        self.model = add_lora(FusarGPT(backbone, tlm))
        apply_policy(self.model, "tlm+lora")
        for p in self.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # as build_model: trainable tensors stay fp32 under a bf16 base
        self.model.train()
        if self.cuda:
            torch.cuda.synchronize()
        self.build_s = time.perf_counter() - t0
        self.autocast = torch.bfloat16 if dtype == torch.bfloat16 else None

    def batch(self, b: int, labels: bool = True, seed: int = 0) -> _Batch:
        """``b`` random 3-channel images of ``size`` px, ``text`` non-image tokens each, ``anchors`` anchors."""
        rng = np.random.default_rng(seed + b)
        pix = self.images(images=[(rng.random((self.size, self.size, 3)) * 255).astype(np.uint8) for _ in range(b)],
                          return_tensors="pt")
        c, n = self.cfg, (self.size // 28) ** 2
        ids = [c.vision_start_token_id, *[c.image_token_id] * n, c.vision_end_token_id, *range(1, self.text - 1)]
        input_ids = torch.tensor([ids] * b)
        feats = rng.normal(size=(b, self.anchors, 64))
        feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
        out = _Batch(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                     mm_token_type_ids=(input_ids == c.image_token_id).long(),
                     pixel_values=pix["pixel_values"].to(self.dtype), image_grid_thw=pix["image_grid_thw"],
                     priors=Priors.stack([(f, rng.random((self.anchors, 2))) for f in feats]))
        if labels:
            out["labels"] = input_ids.masked_fill(input_ids == c.image_token_id, -100)
        return out.to(self.device)

    def autocast_ctx(self):
        return (contextlib.nullcontext() if self.autocast is None
                else torch.autocast(torch.device(self.device).type, dtype=self.autocast))

    def step_flops(self) -> dict:
        """Per sample: the stage-I step model of tlm_overhead.py, and 3x the forward (train_throughput's)."""
        f = tlm_overhead.analytic_forward_flops(self.cfg, tlm_overhead.Shape(self.size, self.text, self.anchors), 1)
        forward = sum(v for k, v in f.items() if k != "first_qkv_input_grad")
        return {"step_model": stage1_step_flops(f), "3x_forward": 3 * forward,
                "tlm_share_analytic": tlm_overhead.training_step_share(f)}


def stage1_step_flops(f: dict) -> float:
    """Model FLOPs of a stage-I step: the denominator of ``tlm_overhead.training_step_share`` (vision forward,
    TLM 3x forward, LLM with attention and LM head 2x forward; recomputation and frozen weight grads not counted)."""
    llm = f["llm"] + f["llm_attn"] + f["lm_head"]
    return f["vision"] + f["vision_attn"] + 3 * f["tlm"] + 2 * llm


def section_tlm_overhead(s: Suite, res: dict, args, deadline: float) -> None:
    share = s.step_flops()["tlm_share_analytic"]

    def fwd_bwd(model, batch):
        def run():
            s.model.zero_grad(set_to_none=True)
            with s.autocast_ctx():
                loss, _, _ = token_loss(model, batch.to(s.device), train_throughput.ONE_PROCESS)
            loss.backward()
        return run

    for b in args.train_batches:
        with_tlm = s.batch(b)
        without = _Batch({k: v for k, v in with_tlm.items() if k != "priors"})
        m = interleaved({"with_tlm": fwd_bwd(s.model, with_tlm), "without_tlm": fwd_bwd(s.model.backbone, without)},
                        args.warmup, args.repeats, deadline, s.cuda)
        ratio = m["with_tlm"]["median_s"] / m["without_tlm"]["median_s"]
        res[str(b)] = {**m, "ratio": ratio, "analytic_ratio": 1 / (1 - share)}
    s.model.zero_grad(set_to_none=True)


def _ratio(res: dict, batches, key: str) -> float:
    return res[str(batches[-1])][key] / res[str(batches[0])][key]


def checkpointing(s: Suite, on: bool) -> None:
    """Activation checkpointing as fusar_gpt.train.build_model enables it; off again for generate."""
    bb, base = s.model.backbone, s.model.base
    for cfg in (base.config, base.config.text_config):
        cfg.use_cache = not on
    if on:
        bb.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        bb.activation_checkpointing_disable()
        base.disable_input_require_grads()  # transformers leaves these hooks on a model peft wraps from outside


def section_train(s: Suite, res: dict, args, deadline: float) -> None:
    checkpointing(s, True)
    try:
        # with checkpointing on, transformers makes the patch embedding's output require grad as well
        res["vision_tower_backward"] = bool(s.model.base.model.visual.patch_embed._forward_hooks)
        step = train_throughput.Stepper(s.model, collate=lambda batch: batch, lr=1e-4, device=s.device,
                                        autocast_dtype=s.autocast)
        batches = {b: s.batch(b) for b in args.train_batches}
        m = interleaved({str(b): (lambda x=x: step(x)) for b, x in batches.items()}, args.warmup, args.repeats,
                        deadline, s.cuda)
        flops = s.step_flops()
        for b in args.train_batches:
            r = m[str(b)]
            r["samples_per_s"] = b / r["median_s"]
            r["achieved_tflops"] = r["samples_per_s"] * flops["step_model"] / 1e12
            r["mfu"] = r["achieved_tflops"] / args.peak_tflops
            r["mfu_3x_forward"] = r["samples_per_s"] * flops["3x_forward"] / 1e12 / args.peak_tflops
            res[str(b)] = r
        res["model_tflops_per_sample"] = {k: v / 1e12 for k, v in flops.items() if k != "tlm_share_analytic"}
        res["mfu_convention"] = (f"samples/s x stage-I step model FLOPs (tlm_overhead.py; no recomputation) / "
                                 f"{args.peak_tflops:g} TFLOP/s; mfu_3x_forward: 3 x analytic forward FLOPs")
        res["ratio"] = _ratio(res, args.train_batches, "samples_per_s")
    finally:
        checkpointing(s, False)
        s.model.zero_grad(set_to_none=True)


def section_generate(s: Suite, res: dict, args, deadline: float) -> None:
    s.model.eval()
    eos = s.cfg.text_config.eos_token_id
    lengths = {}

    def gen(b, batch):
        def run():
            out = s.model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                   do_sample=False, num_beams=1, use_cache=True, pad_token_id=eos)
            lengths[b] = int(out.shape[1] - batch["input_ids"].shape[1])
        return run

    m = interleaved({str(b): gen(b, s.batch(b, labels=False)) for b in args.gen_batches}, min(1, args.warmup),
                    max(1, args.repeats // 3), deadline, s.cuda)
    for b in args.gen_batches:
        if lengths[b] != args.new_tokens:
            raise RuntimeError(f"batch {b}: {lengths[b]} new tokens, {args.new_tokens} expected")
        r = m[str(b)]
        r["new_tokens_per_s"] = b * args.new_tokens / r["median_s"]
        r["samples_per_s"] = b / r["median_s"]
        res[str(b)] = r
    res["new_tokens"] = args.new_tokens
    res["ratio"] = _ratio(res, args.gen_batches, "new_tokens_per_s")
    s.model.train()


SECTIONS = {"tlm_overhead": section_tlm_overhead, "train": section_train, "generate": section_generate}


def peak_tflops(args) -> tuple[str, float, str]:
    """(device name, dense bf16 peak in TFLOP/s, where the peak comes from)."""
    if args.dry_run:
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
        return name, args.peak_tflops or 989.4, "--peak-tflops" if args.peak_tflops else "dry run: a nominal figure"
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --dry-run on CPU)")
    name = torch.cuda.get_device_name()
    if args.peak_tflops:
        return name, args.peak_tflops, "--peak-tflops"
    for key, tflops in PEAKS:
        if key.lower() in name.lower():
            return name, tflops, f"nominal dense bf16 of {key} (from the device name)"
    raise SystemExit(f"unknown dense bf16 peak for {name!r}: pass --peak-tflops")


def _speedup_line(what: str, section: dict) -> list[str]:
    """The table row of a section's largest batch over batch 1, if it has that ratio."""
    if "ratio" not in section:
        return []
    top = max(int(k) for k in section if k.isdigit())
    return [f"| {what}, batch {top} / batch 1 | **{section['ratio']:.2f}x** |"]


def table(report: dict) -> str:
    """The run as a BENCHMARKS.md section body."""
    m, lines = report["meta"], []
    lines.append(f"**{m['date']}**, {m['device']}, torch {m['torch']}, transformers {m['transformers']}.")
    lines.append(f"Command: `{m['command']}`" + (" (dry run: CPU, tiny preset, figures meaningless)"
                                                 if m["dry_run"] else ""))
    lines.append(f"{m['preset']} shape, {m['dtype']}, {m['size']} px ({m['visual_tokens']} visual tokens), "
                 f"{m['text_tokens']} text tokens, {m['anchors']} anchors; model built in {m['build_s']:.1f} s.")
    lines += ["", "| figure | value |", "|---|---|"]
    t, tr, g = report.get("tlm_overhead", {}), report.get("train", {}), report.get("generate", {})
    for name, sec in (("tlm_overhead", t), ("train", tr), ("generate", g)):
        if "error" in sec:
            lines.append(f"| {name} | **not measured**: {sec['error'].splitlines()[-1]} |")
    for b, r in ((k, v) for k, v in t.items() if k.isdigit()):
        lines.append(f"| TLM overhead, step with TLM / without, batch {b} | **{r['ratio']:.3f}** "
                     f"({r['with_tlm']['median_s'] * 1e3:.1f} ms vs {r['without_tlm']['median_s'] * 1e3:.1f} ms, "
                     f"analytic {r['analytic_ratio']:.4f}) |")
    peak = f"{m['peak_tflops']:g} TFLOP/s"
    for b, r in ((k, v) for k, v in tr.items() if k.isdigit()):
        mem = "" if r["peak_memory_gib"] is None else f", peak memory {r['peak_memory_gib']:.1f} GiB"
        lines.append(f"| stage-I samples/s, activation checkpointing, batch {b} | **{r['samples_per_s']:.2f}** "
                     f"({r['median_s']:.3f} s/step, MFU {r['mfu']:.1%} of {peak}{mem}) |")
    lines += _speedup_line("stage-I samples/s", tr)
    for b, r in ((k, v) for k, v in g.items() if k.isdigit()):
        mem = "" if r["peak_memory_gib"] is None else f", peak memory {r['peak_memory_gib']:.1f} GiB"
        lines.append(f"| generate, new tokens/s, batch {b} ({g['new_tokens']} greedy) | "
                     f"**{r['new_tokens_per_s']:.1f}** ({r['samples_per_s']:.2f} samples/s{mem}) |")
    lines += _speedup_line("generate new tokens/s", g)
    lines.append(f"\nTotal {report.get('seconds', 0):.0f} s. MFU: {m['peak_source']}.")
    if tr.get("vision_tower_backward"):
        lines.append("With activation checkpointing on (as train.py enables it) transformers makes the patch "
                     "embedding's output require grad, so the frozen vision tower also runs backward; MFU counts "
                     "only the step model's FLOPs.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_suite.json", help="JSON report, rewritten after every section")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak for MFU (default: from the device name)")
    ap.add_argument("--repeats", type=int, help="timed rounds per section (default 10; dry run 1)")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every section's time budget")
    ap.add_argument("--total-s", type=float, default=450.0, help="no section runs past this many seconds of the run")
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on CPU, tiny preset, in seconds")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    setup = DRY if args.dry_run else FULL
    args.repeats = args.repeats or (1 if args.dry_run else 10)
    for k in ("train_batches", "gen_batches", "new_tokens", "warmup"):
        setattr(args, k, setup[k])
    device, args.peak_tflops, source = peak_tflops(args)
    command = " ".join(["python", "benchmarks/gpu_suite.py", *(sys.argv[1:] if argv is None else argv)])
    report = {"meta": {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
                       "transformers": transformers.__version__, "machine": train_throughput.machine(),
                       "command": command, "dry_run": args.dry_run, "preset": setup["preset"],
                       "dtype": str(setup["dtype"]).replace("torch.", ""), "size": setup["size"],
                       "visual_tokens": (setup["size"] // 28) ** 2, "peak_tflops": args.peak_tflops,
                       "peak_source": source, "repeats": args.repeats, "warmup": args.warmup}}
    out = Path(args.out)

    def save():
        report["seconds"] = time.perf_counter() - t_start
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, out)

    save()
    suite = Suite(**setup)
    report["meta"].update(build_s=suite.build_s, text_tokens=suite.text, anchors=suite.anchors)
    save()
    for name, fn in SECTIONS.items():
        t0 = time.perf_counter()
        budget = min(setup["budgets"][name] * args.budget_scale, args.total_s - GRACE_S - (t0 - t_start))
        res = report[name] = {"budget_s": max(budget, 0.0)}
        try:
            if budget <= 0:
                raise SectionTimeout(f"skipped: the run's {args.total_s:g} s are spent")
            with hard_limit(budget + GRACE_S):
                fn(suite, res, args, t0 + budget)
            bad = [k for k, v in _figures(res) if not (math.isfinite(v) and v > 0)]
            if bad:
                raise ValueError(f"non-positive or non-finite figures: {bad}")
        except Exception as e:  # one failed section must not cost the others
            res["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"{name} failed:\n{traceback.format_exc()}", file=sys.stderr)
        res["seconds"] = time.perf_counter() - t0
        gc.collect()
        if suite.cuda:
            torch.cuda.empty_cache()
        save()
        print(f"[{name}: {res['seconds']:.1f} s{', FAILED' if 'error' in res else ''}]", file=sys.stderr)
    print(table(report))
    print(f"\nJSON: {out}")
    return int(any("error" in report[name] for name in SECTIONS))


def _figures(res: dict, prefix: str = ""):
    """(key path, value) of every number in a section's results."""
    for k, v in res.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from _figures(v, path)
        elif isinstance(v, list):
            yield from ((f"{path}[{i}]", float(x)) for i, x in enumerate(v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield path, float(v)


if __name__ == "__main__":
    sys.exit(main())
