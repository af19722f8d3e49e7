"""Absolute patch positions for the RANDOM presets: where each patch sits, added to its embedding.

Why: Qwen2.5-VL has no absolute position anywhere. Its vision tower uses 2-D rotary (relative) positions and its
LLM 3-D M-RoPE, and rotary positions move attention weights, never the values an answer is read from.
Pretrained weights have learned to turn that into absolute box coordinates over billions of grounding examples;
a random ``tiny`` or ``small`` preset on a CPU budget has not. Measured on a probe (tiny preset, 112 px speckle
with one bright disc, whole model trained, AdamW 3e-4, batch 8, 128 training images), asked "which quadrant
holds the bright target?": with this code the held-out accuracy is 64/64 after 2,000 steps; without it the same
model stays at chance (one quadrant for every answer). The same model learns "is there a bright target?" in
1,000 steps either way, so what it lacked was *where*, not *what*.

So a preset built by ``make_backbone`` is marked (``vision_config.fusar_token_positions = "sincos"``) and, when
loaded, its patch embedding gets a fixed sinusoidal code of each patch's centre (in pixels of the model frame)
before the first vision block, where the tower can tie *what* to *where*. The code has no weights, so nothing
else is saved. It fills the first ``4 * FREQUENCIES`` channels and is scaled to a fixed share of each patch
embedding's own norm, so it neither drowns a fresh tower nor vanishes beside a trained one. Real Qwen2.5-VL
weights carry no mark and are never touched.

How it reaches the patch embedding: a forward pre-hook on the vision tower records the call's ``grid_thw`` in a
``ContextVar`` (each thread and task has its own, so concurrent calls with other grids do not mix) and a forward
hook on ``patch_embed`` adds the code. Hooks, because ``Qwen2_5_VisionTransformer.forward`` embeds the patches
and runs its blocks in one method with no place to add anything in between.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from functools import partial

import torch

MARK = "fusar_token_positions"
FREQUENCIES = 8          # per axis; sin and cos of each: 4 * 8 = 32 channels
SHORTEST_PX = 56.0       # four patches (two merged tokens)
LONGEST_PX = 56.0 * 64   # 3,584 px: nearly a linear ramp over any frame we use
SHARE = 0.5              # the code's norm, as a fraction of the patch embedding's norm
_GRID: ContextVar[torch.Tensor | None] = ContextVar("fusar_patch_grid", default=None)


def uses_positions(visual) -> bool:
    """Whether this vision tower was built with the absolute position code (random presets only)."""
    return getattr(visual.config, MARK, None) == "sincos"


def patch_code(image_grid_thw: torch.Tensor, merge: int, patch: int, channels: int) -> torch.Tensor:
    """``[patches of all images, channels]`` float64: each patch's sinusoidal (y, x) code, in the order the
    Qwen2-VL image processor emits patches (merge blocks in raster order, each block's ``merge x merge`` patches
    in raster order), zero past the first ``4 * FREQUENCIES`` channels; unit RMS over the channels it uses."""
    waves = torch.exp(torch.linspace(math.log(SHORTEST_PX), math.log(LONGEST_PX), FREQUENCIES, dtype=torch.float64))
    parts = []
    for t, h, w in image_grid_thw.tolist():
        idx = torch.arange(h * w)
        block, inner = idx // (merge * merge), idx % (merge * merge)
        row = (block // (w // merge)) * merge + inner // merge
        col = (block % (w // merge)) * merge + inner % merge
        ang_y = ((row.double() + 0.5) * patch).unsqueeze(1) * (2 * math.pi / waves)
        ang_x = ((col.double() + 0.5) * patch).unsqueeze(1) * (2 * math.pi / waves)
        parts.append(torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=1).repeat(int(t), 1))
    code = torch.cat(parts) / math.sqrt(0.5)  # sin^2 and cos^2 average 1/2 each
    out = torch.zeros(len(code), channels, dtype=torch.float64)
    used = min(channels, code.shape[1])
    out[:, :used] = code[:, :used]
    return out


def _remember_grid(visual, args, kwargs):
    grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
    _GRID.set(grid)


def _add_code(merge: int, patch_embed, inputs, out):
    grid = _GRID.get()
    if grid is None or int(grid.prod(-1).sum()) != out.shape[0]:
        raise RuntimeError("a position-marked vision tower was called without its grid_thw (call the tower "
                           "itself, visual(pixels, grid_thw=...), not its patch_embed alone)")
    code = patch_code(grid, merge, patch_embed.patch_size, out.shape[-1]).to(out.device, out.dtype)
    used = min(out.shape[-1], 4 * FREQUENCIES)
    scale = SHARE * out.detach().norm(dim=-1, keepdim=True) / math.sqrt(used)
    return out + scale * code


def install_positions(model) -> bool:
    """Hook the position code into ``model``'s vision tower if its config is marked (once); returns whether it is
    in place. Called by :func:`fusar_gpt.model.backbone.load_backbone` for every model it loads."""
    visual = model.model.visual
    if not uses_positions(visual):
        return False
    if not getattr(visual, "_fusar_positions", False):
        visual.register_forward_pre_hook(_remember_grid, with_kwargs=True)
        visual.patch_embed.register_forward_hook(partial(_add_code, visual.spatial_merge_size))
        visual._fusar_positions = True
    return True
