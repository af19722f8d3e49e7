"""Absolute patch positions of the random presets: the code follows the processor's patch order, a marked tower
tells identical patches apart by where they are, an unmarked one (real weights) is left as it is."""

from __future__ import annotations

import json
import threading

import numpy as np
import torch
from PIL import Image

from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.positions import FREQUENCIES, MARK, patch_code, uses_positions


def flat_image(px: int, value: int = 100) -> Image.Image:
    return Image.fromarray(np.full((px, px), value, np.uint8))


def merged_tokens(backbone, processor, image) -> torch.Tensor:
    enc = processor.image_processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        out = backbone.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"], return_dict=True)
    return out.pooler_output[0]


def test_code_follows_the_processors_patch_order(tiny):
    """One bright 14 px patch at a known (row, col) of a 112 px image: the processor's patch that holds it gets the
    code of that row and column (the code's own raster-order formula, checked against the processor)."""
    _, processor = tiny
    for row, col in ((0, 0), (1, 6), (5, 2), (7, 7)):
        arr = np.zeros((112, 112), np.uint8)
        arr[row * 14:(row + 1) * 14, col * 14:(col + 1) * 14] = 255
        enc = processor.image_processor(images=[Image.fromarray(arr)], return_tensors="pt")
        bright = int(enc["pixel_values"].mean(dim=1).argmax())
        code = patch_code(enc["image_grid_thw"], 2, 14, 4 * FREQUENCIES)
        waves = torch.exp(torch.linspace(np.log(56.0), np.log(56.0 * 64), FREQUENCIES, dtype=torch.float64))
        ang_y, ang_x = (row + 0.5) * 14 * 2 * np.pi / waves, (col + 0.5) * 14 * 2 * np.pi / waves
        want = torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()]) / np.sqrt(0.5)
        assert torch.allclose(code[bright], want), (row, col)
    assert code.shape == (64, 32) and torch.allclose(code.pow(2).mean(), torch.tensor(1.0, dtype=torch.float64))
    assert len(torch.unique(code, dim=0)) == 64  # every patch of the 8 x 8 grid has its own code


def test_marked_tower_tells_identical_patches_apart_unmarked_does_not(tiny_dir, tmp_path):
    marked, processor = load_backbone(tiny_dir)
    assert uses_positions(marked.model.visual)
    tokens = merged_tokens(marked, processor, flat_image(112))
    assert len(torch.unique(tokens.round(decimals=4), dim=0)) == 16  # 4 x 4 merged tokens, each its own

    # the same weights without the mark, as real Qwen2.5-VL weights come: no code, a flat image's tokens are equal
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in tiny_dir.iterdir():
        if f.is_file():
            (plain / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((plain / "config.json").read_text())
    assert cfg["vision_config"][MARK] == "sincos"
    del cfg["vision_config"][MARK]
    (plain / "config.json").write_text(json.dumps(cfg))
    unmarked, _ = load_backbone(plain)
    assert not uses_positions(unmarked.model.visual)
    same = merged_tokens(unmarked, processor, flat_image(112))
    assert torch.allclose(same, same[:1].expand_as(same), atol=1e-5)


def test_each_thread_uses_its_own_grid(tiny):
    """Two threads encoding images of different sizes at once: each gets the tokens it gets alone."""
    backbone, processor = tiny
    images = [flat_image(112), flat_image(168, 60)]
    alone = [merged_tokens(backbone, processor, im) for im in images]
    results: dict[int, list] = {0: [], 1: []}

    def work(k):
        for _ in range(5):
            results[k].append(merged_tokens(backbone, processor, images[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        assert all(torch.allclose(r, alone[k], atol=1e-6) for r in results[k])


def test_patch_embed_alone_is_a_clear_error(tiny):
    """Called without the tower (so without a grid; a new thread has none), the code refuses rather than guess."""
    backbone, processor = tiny
    enc = processor.image_processor(images=[flat_image(56)], return_tensors="pt")
    caught = []

    def call():
        try:
            backbone.model.visual.patch_embed(enc["pixel_values"])
        except RuntimeError as err:
            caught.append(str(err))

    t = threading.Thread(target=call)
    t.start()
    t.join()
    assert caught and "without its grid_thw" in caught[0]
