"""``fusar-gpt export``: a run directory -> one standalone model directory that needs nothing else.

A run references its base weights by path and keeps LoRA apart (DESIGN.md §3), which is right for training
and wrong for deployment: the base may move, and an unmerged adapter costs two extra matmuls per projection
on every token. The export merges LoRA into the weights and writes a plain Qwen2.5-VL directory (weights,
config, tokenizer, image processor, so ``load_backbone`` and any recipe's ``model.base`` read it), with the
TLM beside it (``tlm.safetensors`` + ``tlm.json``) and ``export.json``: provenance and the inference settings
(frame, anchor grid, stretch) that ``ask``, ``detect-scene`` and ``serve`` need. It is written under a
temporary name and renamed, so an interrupted export leaves nothing that looks finished.
"""

from __future__ import annotations

import json
from pathlib import Path

EXPORT_FILE = "export.json"
EXPORT_FORMAT = "fusar-gpt.export/1"


def is_export(path) -> bool:
    return (Path(path) / EXPORT_FILE).exists()


def export_run(run, out, *, dtype: str | None = None) -> dict:
    """Merge the run's LoRA into its backbone and write the standalone directory ``out``; returns export.json.

    ``dtype`` (``float32`` / ``bfloat16``) casts the merged weights; default: as loaded. The TLM keeps its own
    dtype (it is small and trained in fp32).
    """
    import torch

    from .. import __version__
    from ..infer import load_model
    from .checkpoint import atomic_dir, save_model_dir, save_tlm

    run, out = Path(run), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory; choose a new output directory")
    if dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    model, settings = load_model(run)
    merged_lora = hasattr(model.backbone, "peft_config")
    if merged_lora:
        model.backbone = model.backbone.merge_and_unload()
    if dtype is not None:
        model.backbone.to(getattr(torch, dtype))
    with atomic_dir(out) as tmp:
        save_model_dir(model, tmp)
        save_tlm(model.tlm, tmp)
        info = {"format": EXPORT_FORMAT, "source": str(run.resolve()), "lora_merged": merged_lora,
                "settings": settings.to_dict(), "fusar_gpt": __version__}
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_export(path, device: str = "cpu"):
    """The FusarGPT of an exported directory, in eval mode."""
    from .backbone import load_backbone
    from .checkpoint import load_tlm
    from .fusar import FusarGPT

    path = Path(path)
    info = json.loads((path / EXPORT_FILE).read_text())
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path / EXPORT_FILE}: unknown export format {info.get('format')!r} "
                         f"(expected {EXPORT_FORMAT!r})")
    backbone, processor = load_backbone(path)
    return FusarGPT(backbone, load_tlm(path), processor).to(device).eval()
