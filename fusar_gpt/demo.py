"""Smoke pipeline behind ``fusar-gpt demo`` until the full demo (synthetic world -> train -> score) lands.

It runs the real model path end to end on generated inputs: build the ``small`` backbone and
save it, load it back with ``from_pretrained``, attach a TLM, and answer a question about a
SAR-like image with AEF-like anchors. The weights are random, so the answer is noise: the
point is that every piece loads, fuses and generates.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .model.backbone import count_parameters, load_backbone, make_backbone
from .model.fusar import FusarGPT, Priors
from .model.tlm import TLM


def sar_like_image(size: int = 224, looks: int = 4, seed: int = 0) -> np.ndarray:
    """8-bit SAR-like amplitude: dark water (west), brighter land (east), gamma speckle, 3 bright ships."""
    rng = np.random.default_rng(seed)
    sigma0 = np.full((size, size), 0.02)  # linear backscatter of calm water
    sigma0[:, size // 2:] = 0.15  # land
    for y, x in rng.integers(size // 8, size // 2 - size // 8, size=(3, 2)):
        sigma0[y - 2: y + 3, x - 6: x + 7] = 5.0  # ships: strong point scatterers
    intensity = sigma0 * rng.gamma(looks, 1.0 / looks, size=sigma0.shape)
    db = 10 * np.log10(intensity + 1e-6)
    lo, hi = np.percentile(db, [2, 98])
    return (np.clip((db - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def aef_like_anchors(grid: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit 64-d vectors on a grid x grid lattice; the western (sea) half is nodata, as in AEF."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(grid * grid, 64)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    i, j = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    pos = np.stack([i.ravel() / (grid - 1), j.ravel() / (grid - 1)], axis=1).astype(np.float32)
    mask = pos[:, 1] >= 0.5
    feats[~mask] = np.nan
    return feats, pos, mask


def run_smoke(workdir: str | Path | None = None, preset: str = "small", seed: int = 0) -> dict:
    """Build, save, reload, fuse and answer; returns a small report dict."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fusar-smoke-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        model_dir = make_backbone(preset, root / f"backbone-{preset}", seed=seed)
        backbone, processor = load_backbone(model_dir)
        torch.manual_seed(seed)
        model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), processor).eval()
        image = sar_like_image(seed=seed)
        feats, pos, mask = aef_like_anchors(seed=seed)
        priors = Priors.stack([(feats, pos, mask)])
        question = "How many ships are in this SAR image?"
        answer = model.answer([image], [question], priors, max_new_tokens=12, do_sample=False)[0]
        return {
            "preset": preset, "model_dir": str(model_dir) if workdir else None,
            "parameters": count_parameters(backbone),
            "tlm_parameters": count_parameters(model.tlm),
            "valid_anchors": int(mask.sum()), "anchors": int(mask.size),
            "question": question, "answer": answer, "seconds": round(time.perf_counter() - t0, 2),
        }


def format_report(report: dict) -> str:
    return "\n".join([
        f"fusar-gpt smoke demo ({report['preset']} backbone, {report['parameters']:,} params, "
        f"TLM {report['tlm_parameters']:,} params)",
        f"  anchors: {report['valid_anchors']}/{report['anchors']} valid (western half is open sea = nodata)",
        f"  Q: {report['question']}",
        f"  A: {report['answer']!r}   <- random weights: the answer is noise until the model is trained",
        f"  done in {report['seconds']} s",
        json.dumps({k: report[k] for k in ("preset", "parameters", "valid_anchors", "seconds")}),
    ])
