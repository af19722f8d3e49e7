"""``fusar-gpt export``: a run directory -> one standalone model directory that needs nothing else.

A run references its base weights by path and keeps LoRA apart (DESIGN.md §3), which is right for training
and wrong for deployment: the base may move, and an unmerged adapter costs two extra matmuls per projection
on every token. The export merges LoRA into the weights and writes a plain Qwen2.5-VL directory (weights,
config, tokenizer, image processor, so ``load_backbone`` and any recipe's ``model.base`` read it), with the
TLM beside it (``tlm.safetensors`` + ``tlm.json``), the run's ``chip.json`` (how inputs are made) and
``export.json`` (provenance). It is written under a temporary name and renamed, so an interrupted export leaves
nothing that looks finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import __version__
from ..io_atomic import atomic_dir
from ..recipe_rules import DTYPES
from .checkpoint import ADAPTERS, save_model_dir, save_tlm
from .loader import EXPORT_FILE, EXPORT_FORMAT, load_model


def export_run(run, out, *, dtype: str | None = None) -> dict:
    """Merge the run's LoRA into its backbone and write the standalone directory ``out``; returns export.json.

    ``dtype`` (``float32`` / ``bfloat16``) casts the merged weights; default: as loaded. The TLM keeps its own
    dtype (it is small and trained in fp32).
    """
    run, out = Path(run), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory; choose a new output directory")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be {' or '.join(DTYPES)}, got {dtype!r}")
    if (run / ADAPTERS).is_dir():  # merging would bake in whichever adapter happened to be active
        raise ValueError(f"{run} holds one adapter per task ({run / ADAPTERS}) and an export merges one: import the "
                         "task's folder alone (import-official RELEASE/stage2/detection --base ...) and export that")
    model, spec = load_model(run)
    merged_lora = hasattr(model.backbone, "peft_config")
    if merged_lora:
        model.backbone = model.backbone.merge_and_unload()
    if dtype is not None:
        model.backbone.to(getattr(torch, dtype))
    with atomic_dir(out) as tmp:
        save_model_dir(model, tmp)
        save_tlm(model.tlm, tmp)
        spec.save(tmp)
        info = {"format": EXPORT_FORMAT, "source": str(run.resolve()), "lora_merged": merged_lora,
                "fusar_gpt": __version__}
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info
