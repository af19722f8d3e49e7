"""TLM against an independent reference written straight from the PAPER.md equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fusar_gpt.model.tlm import TLM, NoValidAnchorsError

C = 32


def reference(tlm: TLM, tokens, hp, wp, feats, pos, sigma=2.0, merge=2):
    """PAPER.md steps 1-5 for ONE image with only valid anchors, loops instead of broadcasting."""
    params = tlm.mlp(feats)  # step 1
    gamma, beta = params[:, :C], params[:, C:]
    w = torch.zeros(len(feats), hp, wp)
    for i in range(len(feats)):  # step 2 (in Python floats: a torch op per pixel took seconds on 36 x 36)
        yi, xi = float(pos[i, 0]) * (hp - 1), float(pos[i, 1]) * (wp - 1)
        w[i] = torch.tensor([[math.exp(-((h - yi) ** 2 + (x - xi) ** 2) / (2 * sigma**2)) for x in range(wp)]
                             for h in range(hp)])
    w = w / (w.sum(0, keepdim=True) + 1e-6)  # step 3
    g = torch.einsum("shw,sc->chw", w, gamma)[None]  # step 4
    b = torch.einsum("shw,sc->chw", w, beta)[None]
    size = (hp // merge, wp // merge)
    g = F.interpolate(g, size=size, mode="bilinear", align_corners=False)[0].flatten(1).T
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)[0].flatten(1).T
    return tokens * (1 + g) + b  # step 5


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return TLM(C, **kw)


def inputs(hp, wp, s, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(hp * wp // 4, C, generator=g)
    feats = torch.randn(s, 64, generator=g)
    pos = torch.rand(s, 2, generator=g)
    return tokens, feats, pos


def test_mlp_shape_matches_paper():
    with torch.device("meta"):  # shapes only: the 104M parameters are neither allocated nor initialised
        tlm = TLM(3584)
    assert [type(m).__name__ for m in tlm.mlp] == ["Linear", "SiLU", "Linear"]
    assert tlm.mlp[0].in_features == 64 and tlm.mlp[0].out_features == 4 * 3584
    assert tlm.mlp[2].out_features == 2 * 3584
    assert TLM(16).mlp[0].out_features == 128  # H = max(128, 4C)
    assert 103e6 < sum(p.numel() for p in tlm.mlp.parameters()) < 105e6  # "about 104M"


@torch.no_grad()
def test_parity_square_grid():
    tlm = make()
    tokens, feats, pos = inputs(36, 36, 64, seed=1)
    out = tlm(tokens, torch.tensor([[1, 36, 36]]), feats[None], pos[None], torch.ones(1, 64, dtype=torch.bool))
    assert (out - reference(tlm, tokens, 36, 36, feats, pos)).abs().max() <= 1e-5
    assert (out - tokens).abs().max() > 1e-2  # the modulation is not a no-op


@torch.no_grad()
def test_masked_anchors_equal_reference_on_valid_subset():
    tlm = make()
    tokens, feats, pos = inputs(16, 16, 20, seed=2)
    mask = torch.rand(20, generator=torch.Generator().manual_seed(3)) > 0.4
    feats_nan = feats.clone()
    feats_nan[~mask] = float("nan")  # nodata rows carry NaN, as real AEF does
    out = tlm(tokens, torch.tensor([[1, 16, 16]]), feats_nan[None], pos[None], mask[None])
    ref = reference(tlm, tokens, 16, 16, feats[mask], pos[mask])
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_non_square_grid_resizes_exactly():
    tlm = make()
    tokens, feats, pos = inputs(20, 16, 9, seed=4)
    out = tlm(tokens, torch.tensor([[1, 20, 16]]), feats[None], pos[None])
    assert out.shape == (10 * 8, C)
    assert (out - reference(tlm, tokens, 20, 16, feats, pos)).abs().max() <= 1e-5


@torch.no_grad()
def test_batch_equals_images_alone_and_padding_is_invisible():
    tlm = make()
    grids = [(16, 16, 64), (20, 16, 5), (36, 36, 16)]
    parts = [inputs(h, w, s, seed=10 + i) for i, (h, w, s) in enumerate(grids)]
    smax = 70  # extra padded anchors with junk values
    feats = torch.randn(3, smax, 64)
    pos = torch.rand(3, smax, 2)
    mask = torch.zeros(3, smax, dtype=torch.bool)
    for i, (_, f, p) in enumerate(parts):
        feats[i, : len(f)], pos[i, : len(f)], mask[i, : len(f)] = f, p, True
    tokens = torch.cat([t for t, _, _ in parts])
    grid = torch.tensor([[1, h, w] for h, w, _ in grids])
    out = tlm(tokens, grid, feats, pos, mask)
    start = 0
    for (t, f, p), (h, w, _) in zip(parts, grids):
        alone = tlm(t, torch.tensor([[1, h, w]]), f[None], p[None])
        assert (out[start: start + len(t)] - alone).abs().max() <= 1e-5
        start += len(t)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 12)), min_size=1, max_size=4),
       st.integers(0, 1000))
@torch.no_grad()
def test_batch_invariance_property(shapes, seed):
    """Any mix of grids and anchor counts (zero included): batched == one image at a time."""
    tlm = make()
    g = torch.Generator().manual_seed(seed)
    smax = max(1, max(s for _, _, s in shapes))
    feats, pos = torch.randn(len(shapes), smax, 64, generator=g), torch.rand(len(shapes), smax, 2, generator=g)
    mask = torch.zeros(len(shapes), smax, dtype=torch.bool)
    for i, (_, _, s) in enumerate(shapes):
        mask[i, :s] = True
    grid = torch.tensor([[1, 2 * h, 2 * w] for h, w, _ in shapes])
    tokens = torch.randn(int(sum(h * w for h, w, _ in shapes)), C, generator=g)
    out = tlm(tokens, grid, feats, pos, mask)
    start = 0
    for i, (h, w, s) in enumerate(shapes):
        alone = tlm(tokens[start: start + h * w], grid[i: i + 1], feats[i: i + 1, : max(s, 1)],
                    pos[i: i + 1, : max(s, 1)], mask[i: i + 1, : max(s, 1)])
        assert torch.allclose(out[start: start + h * w], alone, atol=1e-5)
        start += h * w


@torch.no_grad()
def test_zero_last_layer_is_identity():
    tlm = make()
    tlm.mlp[2].weight.zero_()
    tlm.mlp[2].bias.zero_()
    tokens, feats, pos = inputs(16, 16, 8, seed=5)
    mask = torch.tensor([[True] * 4 + [False] * 4])
    two = torch.cat([tokens, tokens])
    out = tlm(two, torch.tensor([[1, 16, 16], [1, 16, 16]]), torch.stack([feats, feats]),
              torch.stack([pos, pos]), torch.cat([mask, torch.zeros_like(mask)]))  # 2nd: null prior path
    assert torch.equal(out, two)


@torch.no_grad()
def test_missing_policies():
    tokens, feats, pos = inputs(8, 8, 4, seed=6)
    grid, none = torch.tensor([[1, 8, 8]]), torch.zeros(1, 4, dtype=torch.bool)
    null = make(missing="null")
    null.null_prior.copy_(torch.randn(64))
    params = null.mlp(null.null_prior)
    expected = tokens * (1 + params[:C]) + params[C:]
    assert torch.allclose(null(tokens, grid, feats[None], pos[None], none), expected, atol=1e-6)
    assert torch.equal(make(missing="identity")(tokens, grid, feats[None], pos[None], none), tokens)
    with pytest.raises(NoValidAnchorsError, match="no valid AEF anchor"):
        make(missing="error")(tokens, grid, feats[None], pos[None], none)
    nan = torch.full_like(feats, float("nan"))[None]  # all-NaN rows count as nodata even if mask says True
    assert torch.equal(make(missing="identity")(tokens, grid, nan, pos[None], ~none), tokens)


@torch.no_grad()
def test_fusion_variants():
    tokens, feats, pos = inputs(8, 8, 6, seed=7)
    grid, mask = torch.tensor([[1, 8, 8]]), torch.tensor([[True] * 3 + [False] * 3])
    assert make(fusion="none")(tokens, grid, feats[None], pos[None], mask) is tokens
    s = make(fusion="sum")
    expected = tokens + s.proj(feats[:3].mean(0))
    assert torch.allclose(s(tokens, grid, feats[None], pos[None], mask), expected, atol=1e-6)
    c = make(fusion="concat")
    assert torch.allclose(c(tokens, grid, feats[None], pos[None], mask), tokens, atol=1e-6)  # identity at init
    c.fuse.weight.normal_()
    out = c(tokens, grid, feats[None], pos[None], mask)
    # independent: Gaussian-aligned prior on the pre-merge grid, resized, concatenated, projected
    hh, ww = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    p = pos[:3] * 7
    w = torch.exp(-((hh - p[:, 0, None, None]) ** 2 + (ww - p[:, 1, None, None]) ** 2) / 8)
    w = w / (w.sum(0) + 1e-6)
    field = F.interpolate(torch.einsum("shw,sp->phw", w, feats[:3])[None], size=(4, 4), mode="bilinear")
    aligned = field[0].flatten(1).T
    assert torch.allclose(out, c.fuse(torch.cat([tokens, aligned], -1)), atol=1e-5)


def test_gradients_reach_mlp_and_null_prior():
    tlm = make()
    tokens, feats, pos = inputs(8, 8, 4, seed=8)
    mask = torch.tensor([[True] * 4, [False] * 4])
    out = tlm(torch.cat([tokens, tokens]), torch.tensor([[1, 8, 8]] * 2), torch.stack([feats] * 2),
              torch.stack([pos] * 2), mask)
    out.square().mean().backward()
    assert tlm.mlp[0].weight.grad.abs().sum() > 0 and tlm.null_prior.grad.abs().sum() > 0


@torch.no_grad()
def test_temporal_frames_share_the_field():
    tlm = make()
    tokens, feats, pos = inputs(8, 8, 4, seed=9)
    out = tlm(torch.cat([tokens, tokens]), torch.tensor([[2, 8, 8]]), feats[None], pos[None])
    assert torch.allclose(out[:16], out[16:]) and not torch.allclose(out[:16], tokens)


def test_bad_inputs_raise_clear_errors():
    tlm = make()
    tokens, feats, pos = inputs(8, 8, 4, seed=0)
    with pytest.raises(ValueError, match="visual tokens"):
        tlm(tokens[:5], torch.tensor([[1, 8, 8]]), feats[None], pos[None])
    with pytest.raises(ValueError, match="divisible"):
        tlm(tokens, torch.tensor([[1, 7, 8]]), feats[None], pos[None])
    with pytest.raises(ValueError, match="priors for"):
        tlm(tokens, torch.tensor([[1, 8, 8]]), torch.stack([feats] * 2), torch.stack([pos] * 2))
    with pytest.raises(ValueError, match="fusion"):
        TLM(C, fusion="film")
