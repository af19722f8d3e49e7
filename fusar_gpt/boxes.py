"""Box overlap, one formula: IoU (scoring's matches, scene merging) and how much of a box another covers.

Boxes are xyxy in any one pixel frame. A degenerate box (empty or inverted) overlaps nothing, so every IoU with it
is 0: a model answer ``[50, 50, 40, 40]`` must not score.
"""

from __future__ import annotations

import numpy as np


def overlaps(box, others) -> tuple[np.ndarray, np.ndarray]:
    """IoU of ``box`` with each of ``others`` ([N, 4]), and the share of ``box`` each of them covers."""
    b, o = np.asarray(box, np.float64), np.asarray(others, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(b[2], o[:, 2]) - np.maximum(b[0], o[:, 0]), 0, None)
    iy = np.clip(np.minimum(b[3], o[:, 3]) - np.maximum(b[1], o[:, 1]), 0, None)
    inter = ix * iy
    area = max((b[2] - b[0]) * (b[3] - b[1]), 0.0)
    areas = np.clip((o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1]), 0, None)
    union = area + areas - inter
    iou = np.where(inter > 0, inter / np.maximum(union, 1e-12), 0.0)
    return iou, np.where(inter > 0, inter / max(area, 1e-12), 0.0)


def iou(a, b) -> float:
    """IoU of two xyxy boxes (0 when either is degenerate)."""
    return float(overlaps(a, [b])[0][0])
