"""Token-wise Linear Modulation (TLM): fuse AlphaEarth anchors into merged visual tokens.

Pure torch on purpose: the fusion must be testable against the PAPER.md equations without
transformers, and must stay usable with any backbone that hands over packed visual tokens.

Vectorisation: all images of a batch share one padded pre-merge grid (max hp x max wp). The
Gaussian weights are resized to the merged grid *before* being multiplied with gamma/beta.
Because bilinear resizing is linear, ``resize(W^T Gamma) == resize(W)^T Gamma``; this avoids
materialising [B, 2C, hp, wp] fields (hundreds of MB at C = 3584). With an integer scale
factor and ``align_corners=False`` every merged cell only reads pre-merge cells inside its own
merge block, so padding a grid never leaks into an image's own cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..recipe_rules import FUSIONS, MISSING

EPS = 1e-6


class NoValidAnchorsError(ValueError):
    """Raised with ``missing="error"`` when an image has no valid anchor."""


class TLM(nn.Module):
    """FiLM-style modulation ``x' = x * (1 + G) + B`` with Gaussian-interpolated anchor fields.

    ``fusion`` selects the ablation variant (``tlm`` | ``sum`` | ``concat`` | ``none``) and
    ``missing`` what happens to an image without a single valid anchor (``null``: a learned
    null prior stands in; ``identity``: tokens pass unchanged; ``error``: raise).
    """

    def __init__(
        self,
        hidden_size: int,
        prior_dim: int = 64,
        hidden_mult: int = 4,
        sigma: float = 2.0,
        fusion: str = "tlm",
        missing: str = "null",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if missing not in MISSING:
            raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.hidden_size = int(hidden_size)
        self.prior_dim = int(prior_dim)
        self.hidden_mult = int(hidden_mult)
        self.sigma = float(sigma)
        self.fusion = fusion
        self.missing = missing
        c, p = self.hidden_size, self.prior_dim
        if fusion == "tlm":
            h = max(128, self.hidden_mult * c)
            self.mlp = nn.Sequential(nn.Linear(p, h), nn.SiLU(), nn.Linear(h, 2 * c))
        elif fusion == "sum":
            self.proj = nn.Linear(p, c)
        elif fusion == "concat":
            self.fuse = nn.Linear(c + p, c)
            with torch.no_grad():  # start as the identity on the token part
                self.fuse.weight.zero_()
                self.fuse.weight[:, :c].copy_(torch.eye(c))
                self.fuse.bias.zero_()
        if fusion != "none" and missing == "null":
            self.null_prior = nn.Parameter(torch.zeros(p))

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, prior_dim={self.prior_dim}, sigma={self.sigma}, "
                f"fusion={self.fusion!r}, missing={self.missing!r}")

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this module (see checkpoint.py)."""
        return dict(hidden_size=self.hidden_size, prior_dim=self.prior_dim, hidden_mult=self.hidden_mult,
                    sigma=self.sigma, fusion=self.fusion, missing=self.missing)

    # ------------------------------------------------------------------ geometry
    def merged_weights(self, grid_thw: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                       merge_size: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Normalised Gaussian anchor weights resized to each image's merged grid.

        Returns ``[B, S, Hm, Wm]`` float32 (padded to the largest merged grid) and the per-image
        ``(t, hp // merge, wp // merge)``. Invalid anchors get weight 0 and take no part in the
        normalisation, so results do not depend on how a batch is padded.
        """
        grids = [tuple(int(v) for v in g) for g in grid_thw.tolist()]
        for t, hp, wp in grids:
            if hp % merge_size or wp % merge_size or t < 1:
                raise ValueError(f"grid (t={t}, hp={hp}, wp={wp}) is not divisible by merge size {merge_size}")
        dev = positions.device
        hmax = max(g[1] for g in grids)
        wmax = max(g[2] for g in grids)
        hp = torch.tensor([g[1] for g in grids], device=dev, dtype=torch.float32)
        wp = torch.tensor([g[2] for g in grids], device=dev, dtype=torch.float32)
        pos = positions.to(torch.float32)
        ay = pos[..., 0] * (hp - 1)[:, None]  # [B, S] anchor row on the pre-merge grid
        ax = pos[..., 1] * (wp - 1)[:, None]
        yy = torch.arange(hmax, device=dev, dtype=torch.float32)
        xx = torch.arange(wmax, device=dev, dtype=torch.float32)
        dy2 = (yy[None, None, :] - ay[..., None]).square()  # [B, S, H]
        dx2 = (xx[None, None, :] - ax[..., None]).square()  # [B, S, W]
        w = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * self.sigma**2))
        w = w * mask.to(torch.float32)[..., None, None]
        w = w / (w.sum(dim=1, keepdim=True) + EPS)
        b, s = w.shape[:2]
        w = F.interpolate(w.reshape(b * s, 1, hmax, wmax), size=(hmax // merge_size, wmax // merge_size),
                          mode="bilinear", align_corners=False)
        merged = [(t, h // merge_size, ww // merge_size) for t, h, ww in grids]
        return w.reshape(b, s, hmax // merge_size, wmax // merge_size), merged

    @staticmethod
    def _gather(fields: torch.Tensor, merged: list[tuple[int, int, int]]) -> torch.Tensor:
        """Packed per-token rows ``[N, D]`` from padded fields ``[B, Hm, Wm, D]`` (row-major, t repeats)."""
        wm = fields.shape[2]
        index = []
        for b, (t, h, w) in enumerate(merged):
            rows = torch.arange(h).repeat_interleave(w)
            cols = torch.arange(w).repeat(h)
            flat = (b * fields.shape[1] + rows) * wm + cols
            index.append(flat.repeat(t))
        index = torch.cat(index).to(fields.device)
        return fields.reshape(-1, fields.shape[-1]).index_select(0, index)

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor, grid_thw: torch.Tensor, features: torch.Tensor,
                positions: torch.Tensor, mask: torch.Tensor | None = None, merge_size: int = 2) -> torch.Tensor:
        """Modulate packed merged visual tokens ``[N, C]`` of ``B`` images with their anchors.

        ``features [B, S, P]`` (NaN allowed where ``mask`` is False), ``positions [B, S, 2]``
        normalised (y, x), ``mask [B, S]`` bool (None = all valid). Returns a new tensor.
        """
        if self.fusion == "none":
            return tokens
        if features.ndim != 3 or positions.shape[:2] != features.shape[:2] or positions.shape[-1] != 2:
            raise ValueError(f"features [B,S,{self.prior_dim}] and positions [B,S,2] expected, got "
                             f"{tuple(features.shape)} and {tuple(positions.shape)}")
        if features.shape[0] != grid_thw.shape[0]:
            raise ValueError(f"{grid_thw.shape[0]} images but priors for {features.shape[0]}")
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        mask = mask.to(torch.bool) & torch.isfinite(features).all(-1)
        has_prior = mask.any(dim=1)  # [B]
        if self.missing == "error" and not bool(has_prior.all()):
            bad = (~has_prior).nonzero().flatten().tolist()
            raise NoValidAnchorsError(f"images {bad} have no valid AEF anchor (missing='error')")
        feats = torch.where(mask[..., None], features, torch.zeros((), dtype=features.dtype, device=features.device))

        weights, merged = self.merged_weights(grid_thw, positions, mask, merge_size)
        counts = [t * h * w for t, h, w in merged]
        if sum(counts) != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} visual tokens but grid_thw implies {sum(counts)}")
        use_null = ~has_prior  # only consulted when a null prior exists

        if self.fusion == "sum":
            mean = feats.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(feats.dtype)
            if hasattr(self, "null_prior"):
                mean = torch.where(use_null[:, None], self.null_prior.to(mean.dtype).expand_as(mean), mean)
            shift = self.proj(mean.to(self.proj.weight.dtype))  # [B, C]
            per_image = torch.tensor(counts, device=shift.device)
            out = tokens + torch.repeat_interleave(shift, per_image, dim=0).to(tokens.dtype)
        elif self.fusion == "tlm":
            params = self.mlp(feats.to(self.mlp[0].weight.dtype))  # [B, S, 2C]
            fields = torch.einsum("bshw,bsd->bhwd", weights.to(params.dtype), params)
            if hasattr(self, "null_prior"):
                null = self.mlp(self.null_prior.to(self.mlp[0].weight.dtype))  # [2C]
                fields = torch.where(use_null[:, None, None, None], null.expand_as(fields), fields)
            per_token = self._gather(fields, merged).to(tokens.dtype)
            gamma, beta = per_token[:, : self.hidden_size], per_token[:, self.hidden_size:]
            out = tokens * (1 + gamma) + beta
        else:  # concat: each token next to its Gaussian-aligned prior, projected back to C
            aligned = torch.einsum("bshw,bsp->bhwp", weights.to(feats.dtype), feats)
            if hasattr(self, "null_prior"):
                null = self.null_prior.to(aligned.dtype)
                aligned = torch.where(use_null[:, None, None, None], null.expand_as(aligned), aligned)
            joined = torch.cat([tokens, self._gather(aligned, merged).to(tokens.dtype)], dim=-1)
            out = self.fuse(joined.to(self.fuse.weight.dtype)).to(tokens.dtype)

        if self.missing == "identity" and not bool(has_prior.all()):
            keep = torch.repeat_interleave(~has_prior, torch.tensor(counts, device=has_prior.device))
            out = torch.where(keep[:, None], tokens, out)
        return out
