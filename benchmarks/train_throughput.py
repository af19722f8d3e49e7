"""Training throughput: samples/s of a stage-I step at batch 1 (the official way) vs batch 8, in one run.

The official FUSAR-GPT code trains with one image per GPU per step; our trainer collates real
batches (right padding, per-record label masks, batched TLM). This measures what that buys on
the same records, with the library's own pieces, exactly as ``fusar-gpt train`` runs them:

- data: a small synthetic world (``fusar_gpt.data.synth.make_world``) built into a dataset
  (``fusar_gpt.data.build.build``), caption records only (stage I), real PNG images at
  ``--size`` px (224 by default, 504 = the paper's frame) with 8 x 8 AEF anchor grids;
- model: ``configs/tiny-cpu/stage1.yaml`` with ``model.preset`` set to ``--preset`` (``small``
  by default), built by ``fusar_gpt.train.build_model`` (TLM + LoRA trainable);
- one step = ``InputProcessor`` on in-memory items + ``token_loss`` + backward + gradient clipping +
  AdamW step. Reading PNG/anchor files is left out (a DataLoader would overlap it).

Both batch sizes process the same ``max(batches)`` records per round (8 steps of 1 vs 1 step of
8), rounds interleaved so that machine drift hits both alike; the first ``--warmup`` rounds are
not timed; the figures are medians over ``--repeats`` rounds.

``--gpu`` adds the same comparison on the Qwen2.5-VL-7B shape on CUDA: random weights built in
place in bf16 (``build_random_model``, no download), the same caption records at 504 px (token
ids of our small tokenizer, special tokens mapped onto Qwen's ids), TLM + LoRA in fp32 under
bf16 autocast, gradient checkpointing on: samples/s, peak memory (``max_memory_allocated``) and
model FLOPs utilisation. MFU counts a training step as 3x the analytic forward FLOPs of
``benchmarks/tlm_overhead.py`` (``analytic_forward_flops``, unpadded tokens) against the H200's
dense bf16 peak of 989 TFLOP/s; that convention counts neither the recomputation of gradient
checkpointing nor the weight gradients a frozen backbone skips.

``--dry-run`` runs every code path (the ``--gpu`` one on CPU with the tiny preset) at batch 1 vs 2
with one round: a smoke test, its times mean nothing (``tests/test_train_benchmark.py`` runs it).

Usage: python benchmarks/train_throughput.py [--preset small] [--size 224|504] [--repeats 11]
       [--warmup 2] [--gpu] [--dry-run] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from fusar_gpt.config import load_recipe
from fusar_gpt.data.build import BuildConfig, build
from fusar_gpt.data.dataset import ManifestDataset
from fusar_gpt.data.synth import make_world
from fusar_gpt.inputs import IGNORE_INDEX, InputProcessor
from fusar_gpt.losses import token_loss
from fusar_gpt.model.backbone import (
    DEFAULT_CORPUS,
    SPECIAL_TOKENS,
    build_random_model,
    load_processor,
    make_backbone,
    preset_config,
)
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.policy import add_lora, apply_policy
from fusar_gpt.model.tlm import TLM
from fusar_gpt.train import build_model, resolve_paths

ROOT = Path(__file__).resolve().parents[1]
STAGE1_RECIPE = ROOT / "configs" / "tiny-cpu" / "stage1.yaml"
H200_BF16_DENSE_TFLOPS = 989.0
ONE_PROCESS = SimpleNamespace(num_processes=1)  # what token_loss needs of an Accelerator on one process


def _sibling(name: str):
    """Another script of this folder as a module (benchmarks/ is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def _env(key: str, value: str):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def make_dataset(root: Path, n: int, size: int) -> Path:
    """A built dataset with at least ``n`` caption records at ``size`` px; returns its manifest."""
    world = root / "world"
    if not (world / "annotations.json").exists():
        make_world(world, scenes=n, seed=0, sites=min(n, 2), tile_px=256, block_size=256)
    out = root / f"ds-{size}"
    with _env("FUSAR_GPT_CACHE", str(root / "cache")):
        build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                          aef=str(world / "aef"), out=str(out), frame=size, tasks=("caption",)), progress=False)
    return out / "manifest.jsonl"


def load_items(manifest: Path, n: int) -> list[dict]:
    data = ManifestDataset(manifest, tasks=["caption"])
    if len(data) < n:
        raise RuntimeError(f"{manifest}: {len(data)} caption records, {n} needed")
    return [data[i] for i in range(n)]


class Stepper:
    """One optimizer step of stage I on a list of items, as fusar_gpt.train runs it."""

    def __init__(self, model, collate: InputProcessor, lr: float, device: str = "cpu", autocast_dtype=None,
                 remap: torch.Tensor | None = None, max_grad_norm: float | None = 1.0):
        self.model, self.collate, self.device, self.remap = model, collate, device, remap
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.autocast_dtype, self.max_grad_norm = autocast_dtype, max_grad_norm
        self.sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def batch(self, items):
        batch = self.collate(items)
        if self.remap is not None:  # our tokenizer's ids onto the shape-only config's vocabulary
            batch["input_ids"] = self.remap[batch["input_ids"]]
            labels = batch["labels"]
            batch["labels"] = torch.where(labels == IGNORE_INDEX, labels, self.remap[labels.clamp(min=0)])
        return batch.to(self.device)

    def __call__(self, items) -> None:
        batch = self.batch(items)
        ctx = (torch.autocast(torch.device(self.device).type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            loss, _, _ = token_loss(self.model, batch, ONE_PROCESS)
            loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def measure(step: Stepper, items: list[dict], batches, repeats: int, warmup: int, cuda: bool = False) -> dict:
    """Each round: every batch size processes all ``items`` (len(items) / b steps), interleaved."""
    n = len(items)
    for b in batches:
        if n % b:
            raise ValueError(f"batch {b} does not divide the {n} items of a round")
    times = {b: [] for b in batches}
    peak = {b: None for b in batches}
    for r in range(warmup + repeats):
        for b in batches:
            if cuda and r == 0:
                torch.cuda.reset_peak_memory_stats()
            step.sync()
            t0 = time.perf_counter()
            for k in range(0, n, b):
                step(items[k:k + b])
            step.sync()
            if r >= warmup:
                times[b].append(time.perf_counter() - t0)
            if cuda and r == 0:
                peak[b] = torch.cuda.max_memory_allocated()
    out = {}
    for b in batches:
        med = statistics.median(times[b])
        out[str(b)] = {"samples_per_s": n / med, "step_s": med / (n // b), "round_s": times[b],
                       "peak_memory_gib": None if peak[b] is None else peak[b] / 2**30}
    return out


def token_shape(collate: InputProcessor, items: list[dict]) -> dict:
    """Mean unpadded text tokens and image tokens per record, as the collator builds them."""
    batch = collate(items)
    image = (batch["input_ids"] == collate.image_token_id).sum(1).float()
    total = batch["attention_mask"].sum(1).float()
    supervised = (batch["labels"] != IGNORE_INDEX).sum(1).float()
    return {"image_tokens": float(image.mean()), "text_tokens": float((total - image).mean()),
            "supervised_tokens": float(supervised.mean()), "anchors": int(batch["priors"].features.shape[1])}


def _ratio(res: dict, batches) -> float:
    return res[str(batches[-1])]["samples_per_s"] / res[str(batches[0])]["samples_per_s"]


def library_run(root: Path, preset: str, size: int, batches, repeats: int, warmup: int) -> dict:
    """CPU (or whatever torch defaults to): the trainer's own model, collator and loss."""
    n = max(batches)
    manifest = make_dataset(root, n, size)
    items = load_items(manifest, n)
    recipe = resolve_paths(load_recipe(STAGE1_RECIPE, {"model.preset": preset}),
                           out=str(root / f"run-{preset}"), data=str(manifest))
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe)
    collate = InputProcessor(model.processor, max_length=recipe.data.max_length)
    step = Stepper(model, collate, recipe.train.lr, max_grad_norm=recipe.train.max_grad_norm)
    res = measure(step, items, batches, repeats, warmup)
    return {"preset": preset, "size": size, "trainable": recipe.trains, "tokens": token_shape(collate, items),
            "batches": res, "ratio": _ratio(res, batches), "repeats": repeats, "warmup": warmup,
            "round_samples": n}


def _remap_table(tokenizer, config) -> torch.Tensor:
    """Our tokenizer's ids -> the config's: special tokens to their ids there, the rest below them."""
    first = config.image_token_id - SPECIAL_TOKENS.index("<|image_pad|>")
    table = torch.arange(len(tokenizer)) % first
    for i, tok in enumerate(SPECIAL_TOKENS):
        table[tokenizer.convert_tokens_to_ids(tok)] = first + i
    return table


def large_run(root: Path, preset: str = "qwen2.5-vl-7b", device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
              size: int = 504, batches=(1, 8), repeats: int = 11, warmup: int = 2,
              gradient_checkpointing: bool = True, tokenizer_dir: Path | None = None) -> dict:
    """A shape-only preset with random weights built in place: stage-I step, TLM + LoRA in fp32.

    The tokenizer and image processor come from ``tokenizer_dir`` (a saved small backbone, e.g. the
    CPU run's base) or from a tiny backbone whose tokenizer is trained on these records.
    """
    n = max(batches)
    manifest = make_dataset(root, n, size)
    items = load_items(manifest, n)
    if tokenizer_dir is None:
        texts = list(DEFAULT_CORPUS) + [t for it in items for t in (it["question"], it["answer"])]
        tokenizer_dir = make_backbone("tiny", root / "tokenizer", texts=texts)
    processor = load_processor(tokenizer_dir)
    cfg = preset_config(preset)
    torch.manual_seed(0)
    backbone = build_random_model(preset, dtype=dtype, device=device)
    model = FusarGPT(backbone, TLM(cfg.text_config.hidden_size).float(), processor)
    add_lora(model)
    apply_policy(model, "tlm+lora")
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # as build_model: trainable tensors stay fp32 under a bf16 base
    if gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    collate = InputProcessor(processor, max_length=2048)
    cuda = str(device).startswith("cuda")
    step = Stepper(model, collate, 1e-4, device=device, autocast_dtype=torch.bfloat16 if dtype == torch.bfloat16
                   else None, remap=_remap_table(processor.tokenizer, cfg))
    res = measure(step, items, batches, repeats, warmup, cuda=cuda)
    shape = token_shape(collate, items)
    tlm = _sibling("tlm_overhead")
    for b in batches:
        f = tlm.analytic_forward_flops(cfg, tlm.Shape(size=size, text=round(shape["text_tokens"]),
                                                      anchors=shape["anchors"]), 1)
        per_sample = 3 * sum(v for k, v in f.items() if k != "first_qkv_input_grad")
        r = res[str(b)]
        r["model_tflops_per_sample"] = per_sample / 1e12
        r["mfu_vs_h200_bf16"] = r["samples_per_s"] * per_sample / (H200_BF16_DENSE_TFLOPS * 1e12)
    return {"preset": preset, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "size": size,
            "gradient_checkpointing": gradient_checkpointing, "tokens": shape, "batches": res,
            "ratio": _ratio(res, batches), "repeats": repeats, "warmup": warmup, "round_samples": n,
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "mfu_convention": f"3 x analytic forward FLOPs (unpadded tokens) / {H200_BF16_DENSE_TFLOPS:g} TFLOP/s "
                              f"(H200 dense bf16)"}


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def run(preset: str = "small", size: int = 224, batches=(1, 8), repeats: int = 11, warmup: int = 2,
        gpu: bool = False, dry_run: bool = False) -> dict:
    """The whole benchmark; ``dry_run`` = tiny preset, batch 1 vs 2, one round, the --gpu path on CPU."""
    if dry_run:
        preset, size, batches, repeats, warmup = "tiny", 224, (1, 2), 1, 1
    batches = tuple(sorted(batches))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "dry_run": dry_run}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fusar-train-bench-") as tmp:
        root = Path(tmp)
        report["cpu"] = library_run(root, preset, size, batches, repeats, warmup)
        base = root / f"run-{preset}" / "base"  # the CPU run's backbone: its tokenizer knows these records
        if dry_run:
            report["large_dry_run"] = large_run(root, "tiny", "cpu", torch.float32, size, batches, repeats, warmup,
                                                tokenizer_dir=base)
        if gpu:
            if not torch.cuda.is_available():
                raise RuntimeError("--gpu: no CUDA device")
            report["gpu"] = large_run(root, "qwen2.5-vl-7b", "cuda", torch.bfloat16, 504, (1, 8), repeats, warmup,
                                      tokenizer_dir=base)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _print(name: str, r: dict) -> None:
    t = r["tokens"]
    where = r.get("gpu") or r.get("device", "cpu")
    print(f"{name}: {r['preset']} preset on {where}, {r['size']}x{r['size']} px, stage-I step (TLM + LoRA), "
          f"{t['image_tokens']:.0f} image + {t['text_tokens']:.0f} text tokens/record "
          f"({t['supervised_tokens']:.0f} supervised), median of {r['repeats']} rounds of {r['round_samples']}:")
    for b, v in r["batches"].items():
        extra = ""
        if v["peak_memory_gib"] is not None:
            extra += f", peak memory allocated {v['peak_memory_gib']:.1f} GiB (weights included)"
        if "mfu_vs_h200_bf16" in v:
            extra += f", MFU {v['mfu_vs_h200_bf16']:.1%}"
        print(f"  batch {b}: {v['samples_per_s']:.3f} samples/s ({v['step_s']:.3f} s/step){extra}")
    bs = list(r["batches"])
    print(f"  batch {bs[-1]} / batch {bs[0]} samples/s: {r['ratio']:.2f}x")
    if "mfu_convention" in r:
        print(f"  MFU = {r['mfu_convention']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", choices=("tiny", "small"))
    ap.add_argument("--size", type=int, default=224, choices=(224, 504), help="image side in px (504 = paper)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds (every record length is a new shape)")
    ap.add_argument("--gpu", action="store_true", help="also the Qwen2.5-VL-7B shape in bf16 on CUDA")
    ap.add_argument("--dry-run", action="store_true", help="every code path, tiny preset, batch 1 vs 2, one round")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args()
    report = run(args.preset, args.size, (1, 8), args.repeats, args.warmup, args.gpu, args.dry_run)
    if not args.json:
        print(f"{report['machine']}")
        for name in ("cpu", "large_dry_run", "gpu"):
            if name in report:
                _print(name, report[name])
        if report["dry_run"]:
            print("dry run: the figures above only show that the code runs")
        print(f"total {report['seconds']} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
