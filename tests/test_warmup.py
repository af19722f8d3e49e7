"""Vision warm-up of a random preset: exact box maps, only the vision tower changes, the map loss falls."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from fusar_gpt.model.warmup import box_maps, cell_target_maps, position_maps, warm_up_vision


def test_box_maps_by_hand():
    objs = [{"box": [0, 0, 20, 10], "label": "ship"},        # centre (10, 5): cell (0, 0); covers (0, 0)
            {"box": [30, 30, 60, 40], "label": "plane"},     # centre (45, 35): cell (1, 1); covers rows 1, cols 1-2
            {"box": [50, 0, 70, 5], "label": "tank"}]        # not a class: ignored
    m = box_maps(objs, ["plane", "ship"], (56, 84), (2, 3))  # cells are 28 x 28 px
    assert m.shape == (6, 4)
    grid = m.T.reshape(4, 2, 3)
    assert grid[1].tolist() == [[1, 0, 0], [0, 0, 0]]        # ship centre
    assert grid[0].tolist() == [[0, 0, 0], [0, 1, 0]]        # plane centre
    assert grid[3].tolist() == [[1, 0, 0], [0, 0, 0]]        # ship cover
    assert grid[2].tolist() == [[0, 0, 0], [0, 1, 1]]        # plane cover: x 30-60 spans columns 1 and 2
    # a box hanging out of the frame covers only the cells inside it; its centre outside marks nothing
    out = box_maps([{"box": [-40, 10, 10, 20], "label": "ship"}], ["ship"], (56, 84), (2, 3)).T.reshape(2, 2, 3)
    assert out[0].sum() == 0 and out[1].tolist() == [[1, 0, 0], [0, 0, 0]]


def test_position_maps_by_hand():
    m = position_maps((2, 4))
    assert m.shape == (8, 11)
    assert m[0, :2].tolist() == [0.25, 0.125] and m[3, :2].tolist() == [0.25, 0.875]
    assert m[4, :2].tolist() == [0.75, 0.125]
    # the 3x3 cell of each token centre: row 0.25 -> top third, 0.75 -> bottom third; columns 1/8, 3/8, 5/8, 7/8
    assert [int(np.argmax(v)) for v in m[:, 2:]] == [0, 1, 1, 2, 6, 7, 7, 8] and (m[:, 2:].sum(axis=1) == 1).all()
    six = position_maps((6, 6))[:, 2:].argmax(axis=1).reshape(6, 6)  # a 6x6 grid: 2x2 tokens per cell exactly
    assert (six == np.kron(np.arange(9).reshape(3, 3), np.ones((2, 2), int))).all()


def test_cell_target_maps_mark_class_and_cell_together():
    # a 6x6 token grid over a 168 px frame (28 px per token): a ship centred at (100, 20) -> token row 0, column 3,
    # which lies in the top (row 0) middle (column 1) cell; a plane centred at (160, 160) -> bottom-right
    objs = [{"box": [90, 10, 110, 30], "label": "ship"}, {"box": [150, 150, 170, 170], "label": "plane"}]
    centres = box_maps(objs, ["plane", "ship"], (168, 168), (6, 6))[:, :2]
    m = cell_target_maps(centres, position_maps((6, 6)))
    assert m.shape == (36, 18) and m.sum() == 2
    assert m[0 * 6 + 3, 9 + 1] == 1  # ship (class 1) x cell "top" (1), at token (0, 3)
    assert m[5 * 6 + 5, 0 + 8] == 1  # plane (class 0) x cell "bottom-right" (8), at token (5, 5)


def test_warm_up_trains_only_the_vision_tower_and_learns_the_maps(tiny_dir, tmp_path):
    from fusar_gpt.model.backbone import load_backbone

    backbone, proc = load_backbone(tiny_dir)  # a private copy: the session's shared model stays untouched
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):  # a bright square (the "ship") somewhere on dark noise
        arr = rng.integers(0, 40, (56, 56)).astype(np.uint8)
        y, x = rng.integers(0, 40, 2)
        arr[y:y + 12, x:x + 12] = 250
        Image.fromarray(arr).save(tmp_path / f"im{i}.png")
        records.append({"id": f"r{i}", "image": str(tmp_path / f"im{i}.png"), "coordinate_size": 56,
                        "meta": {"frame_objects": [{"box": [int(x), int(y), int(x) + 12, int(y) + 12],
                                                    "label": "ship"}]}})
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    torch.manual_seed(0)
    info = warm_up_vision(backbone, proc, records, steps=40, batch_size=8, lr=3e-3)
    changed = {n for n, p in backbone.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(".visual." in n for n in changed)
    assert any("merger" in n for n in changed) and any("patch_embed" in n for n in changed)
    assert info["images"] == 8 and info["classes"] == ["ship"]
    assert info["loss_last"] < 0.6 * info["loss_first"], info
    json.dumps(info)


def test_warm_up_without_boxes_is_a_clear_error(tiny):
    import pytest

    backbone, proc = tiny
    with pytest.raises(ValueError, match="frame_objects"):
        warm_up_vision(backbone, proc, [{"id": "a", "image": "x.png", "meta": {}}], steps=1)
