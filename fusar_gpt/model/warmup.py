"""Vision warm-up for a RANDOM preset: teach its vision tower to see targets before any language training.

Real Qwen2.5-VL weights arrive with a vision tower pretrained on web-scale images; a random ``tiny`` or
``small`` preset has none of that, and learning to see through the language loss alone is slow: one
answer per image gives the vision tower a weak, indirect signal, and on a CPU budget the answers
collapse onto the most common one. The warm-up gives it a dense, direct signal instead: for every
merged visual token, whether a box of each class has its centre in that token's cell and whether a box
covers it (the training split's own boxes, ``meta.frame_objects``), learned through a linear head by
binary cross-entropy; and where each token sits (its row and column as fractions of the grid, and its 3x3
localisation cell): reading
absolute position from M-RoPE alone is slow to learn, because the LLM sees image positions relative to
the answer's own position, which moves with every question's length (measured: without this target the
demo's model answered "top-right" to nearly every localisation question). Only the vision tower
(patch embedding, blocks, merger) changes; the head is thrown away. Never use it on real weights: it
is a stand-in for pretraining, not a SAR method.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import get_scheduler

from ..data.manifest import load_manifest, read_image
from ..data.tasks import CELLS, cell_of
from ..io_atomic import write_text
from .backbone import load_backbone


def box_maps(objects: list[dict], classes: list[str], frame: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """``[gh * gw, 2 * len(classes)]`` targets in merged-token raster order: per class, box centre in the cell
    (first ``len(classes)`` columns) and box overlapping the cell (the rest). ``frame`` = (h, w) pixels."""
    (h, w), (gh, gw) = frame, grid
    out = np.zeros((2 * len(classes), gh, gw), np.float32)
    ch, cw = h / gh, w / gw
    for o in objects:
        if o.get("label") not in classes:
            continue
        c = classes.index(o["label"])
        x1, y1, x2, y2 = (float(v) for v in o["box"])
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if 0 <= cx < w and 0 <= cy < h:
            out[c, int(cy // ch), int(cx // cw)] = 1
        r0, r1 = int(max(y1, 0) // ch), int(min(y2, h - 1e-6) // ch)
        c0, c1 = int(max(x1, 0) // cw), int(min(x2, w - 1e-6) // cw)
        if r1 >= r0 and c1 >= c0:
            out[len(classes) + c, r0:r1 + 1, c0:c1 + 1] = 1
    return out.reshape(len(out), -1).T


def position_maps(grid: tuple[int, int]) -> np.ndarray:
    """``[gh * gw, 2 + 9]``: each merged token's (row, column) centre as a fraction of the grid, then a one-hot of
    the 3x3 localisation cell (``data.tasks.CELLS``, row-major) holding that centre, in raster order. The cell
    one-hot puts the answer's own vocabulary into each token's content: a localisation answer then only needs
    attention to the target tokens and a copy of their cell, not a position decoded from rotary phases."""
    gh, gw = grid
    r, c = np.mgrid[0:gh, 0:gw]
    r, c = r.ravel(), c.ravel()
    # the answers' own rule (data.tasks.cell_of), on a common integer frame of 2*gh*gw units per side
    side = 2 * gh * gw
    idx = [CELLS.index(cell_of(((2 * x + 1) * gh, (2 * y + 1) * gw) * 2, side)) for y, x in zip(r, c)]
    cells = np.eye(9, dtype=np.float32)[idx]
    return np.concatenate([np.stack([(r + 0.5) / gh, (c + 0.5) / gw], axis=1), cells], axis=1).astype(np.float32)


def cell_target_maps(centres: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``[tokens, classes * 9]``: per class and 3x3 cell, whether this token holds a box centre of that class AND
    lies in that cell (``centres`` = the first ``classes`` columns of :func:`box_maps`, ``positions`` = those of
    :func:`position_maps`). Why the conjunction: an LLM that averages over the image tokens (the first thing it
    learns, enough to count) keeps "a ship in the top-left cell" only if one token says both at once; separate
    "ship here" and "top-left here" features average into "a ship somewhere, every cell somewhere"."""
    cells = positions[:, 2:11]
    return (centres[:, :, None] * cells[:, None, :]).reshape(len(centres), -1).astype(np.float32)


def warm_up_vision(backbone, processor, records: list[dict], *, steps: int, batch_size: int = 16, lr: float = 2e-3,
                   seed: int = 0, progress: bool = False) -> dict:
    """Train ``backbone``'s vision tower in place on the box maps of ``records`` (one per image is enough);
    returns ``{"steps", "images", "classes", "loss_first", "loss_last"}``."""
    by_image = {}
    for r in records:
        if isinstance((r.get("meta") or {}).get("frame_objects"), list):
            by_image.setdefault(r["image"], r)
    images = list(by_image.values())
    if not images:
        raise ValueError("vision warm-up: no training record carries meta.frame_objects (boxes in the frame)")
    classes = sorted({o["label"] for r in images for o in r["meta"]["frame_objects"]}) or ["ship"]
    visual = backbone.model.visual
    merge = visual.spatial_merge_size
    n = len(classes)
    head = torch.nn.Linear(backbone.config.text_config.hidden_size, 2 * n + 11 + 9 * n)
    params = list(visual.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = get_scheduler("cosine", opt, num_warmup_steps=max(1, steps // 20), num_training_steps=steps)
    # positives are rare (a few cells of 64): weight them up so the map is not learned as all-zero
    pos_weight = torch.tensor([8.0] * n + [3.0] * n + [1.0, 1.0] + [2.0] * 9 + [8.0] * (9 * n))
    rng = np.random.default_rng(seed)
    visual.train()
    bar = tqdm(total=steps, desc="vision warm-up", unit="step") if progress else None
    losses = []
    for _ in range(steps):
        batch = [images[i] for i in rng.integers(0, len(images), batch_size)]
        pics = [read_image(r) for r in batch]
        enc = processor.image_processor(images=pics, return_tensors="pt")
        feats = visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output  # merged tokens, in order
        feats = torch.cat(list(feats)) if isinstance(feats, (tuple, list)) else feats
        grids = [(int(g[1]) // merge, int(g[2]) // merge) for g in enc["image_grid_thw"]]
        maps = [(box_maps(r["meta"]["frame_objects"], classes, (p.height, p.width), grid), position_maps(grid))
                for r, p, grid in zip(batch, pics, grids)]
        target = torch.cat([torch.from_numpy(np.concatenate([b, q, cell_target_maps(b[:, :n], q)], axis=1))
                            for b, q in maps])
        loss = F.binary_cross_entropy_with_logits(head(feats.float()), target, pos_weight=pos_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    visual.eval()
    return {"steps": steps, "images": len(images), "classes": classes,
            "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:]))}


def warm_up_base(base: Path, manifest: str, *, steps: int, split: str | None = "train", seed: int = 0,
                 progress: bool = False) -> dict:
    """Warm up the vision tower of the saved random base in ``base`` (a folder being built, not yet in use) on
    ``manifest``'s ``split``, save it in place and record what was done in ``base/warmup.json``."""
    backbone, processor = load_backbone(base, dtype=torch.float32)
    torch.manual_seed(seed)
    info = warm_up_vision(backbone, processor, load_manifest(manifest, split=split), steps=steps, seed=seed,
                          progress=progress)
    backbone.save_pretrained(str(base))
    write_text(Path(base) / "warmup.json", json.dumps(info, indent=2))
    return info
