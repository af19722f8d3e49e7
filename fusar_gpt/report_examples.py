"""What the records and predictions show item by item: classification confusion counts and detection examples
drawn with their boxes (true in green, predicted in red).

Apart from the tables because these read the records, their images and the raw answers rather than the metrics;
apart from the figures because they need PIL and numpy only (``draw_boxes`` returns an array any caller can save),
matplotlib merely lays them out in ``report_figures.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .data.tasks import parse_boxes, parse_label, truth_boxes
from .geo.plain import NOT_8BIT
from .report_tables import is_number

TRUE_RGB, PRED_RGB = (0, 255, 0), (255, 0, 0)
# A drawn example is a model-ready image (a frame of 224-504 px): anything above one 10000 x 10000 chip is not one,
# and decoding it (a 30 KB PNG can declare 225 million pixels) would cost gigabytes for a thumbnail.
EXAMPLE_MAX_PIXELS = 10000 * 10000


def confusion(records: Sequence[Mapping], predictions: Mapping[str, str], level: str) -> tuple[list[str], np.ndarray]:
    """Confusion counts of the classify records at ``meta["level"] == level`` that have a prediction.
    Returns (labels, matrix): labels sorted (true answers and offered choices), matrix int64 of shape
    (len(labels), len(labels) + 1): rows true label, columns predicted label (``parse_label`` over the record's
    choices) with a last column ``(none)`` for unparseable predictions. Records without a prediction are skipped."""
    rows = [r for r in records if r.get("task") == "classify" and (r.get("meta") or {}).get("level") == level
            and str(r.get("id")) in predictions]
    labels = sorted({str(r["answer"]) for r in rows} | {str(c) for r in rows for c in r["meta"].get("choices") or ()})
    col = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for r in rows:
        pred = parse_label(predictions[str(r["id"])], r["meta"].get("choices") or labels)
        matrix[col[str(r["answer"])], col.get(str(pred), len(labels)) if pred is not None else len(labels)] += 1
    return labels, matrix


def _to_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode not in NOT_8BIT:
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.nan_to_num(a.astype(np.float64))
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = ((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    elif a.shape[-1] < 3:
        a = np.repeat(a[..., :1], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(a[..., :3]), "RGB")


def scaled_box(box, frame, w: int, h: int) -> tuple[int, int, int, int] | None:
    """A frame box (``{"bbox_2d": ...}`` or 4 numbers) in image pixels, ordered and clipped; None if outside."""
    b = box["bbox_2d"] if isinstance(box, Mapping) else box
    fw, fh = (frame, frame) if is_number(frame) else tuple(frame) if frame else (w, h)
    x1, x2 = sorted(round(float(v) * w / fw) for v in (b[0], b[2]))
    y1, y2 = sorted(round(float(v) * h / fh) for v in (b[1], b[3]))
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        return None
    return max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)


def draw_boxes(image, true_boxes, pred_boxes, frame=None) -> np.ndarray:
    """RGB uint8 copy of ``image`` (PIL image or array, any depth) with true boxes outlined in green and predicted
    boxes in red, drawn inward from the box edge; the true outline is twice as thick, so a perfect prediction still
    shows both colours. Boxes are in the ``frame`` (coordinate_size: int or [w, h]); None = image pixels."""
    img = _to_rgb(image)
    w, h = img.size
    t = max(1, round(min(w, h) / 112))
    draw = ImageDraw.Draw(img)
    for boxes, color, width in ((true_boxes, TRUE_RGB, 2 * t), (pred_boxes, PRED_RGB, t)):
        for box in boxes or ():
            if (xy := scaled_box(box, frame, w, h)) is not None:
                draw.rectangle(xy, outline=color, width=width)
    return np.asarray(img).copy()


def example_panels(records: Sequence[Mapping], predictions: Mapping[str, str], n: int) -> list[tuple]:
    """Up to ``n`` detect records that have a prediction and a readable image, those with at least one true box
    first (record order otherwise), as (record, true boxes, predicted boxes or None if unparseable, RGB array)."""
    cands, truths = [r for r in records if r.get("task") == "detect" and str(r.get("id")) in predictions], {}
    for r in cands:
        with contextlib.suppress(ValueError):
            truths[id(r)] = truth_boxes(r.get("answer"))
    chosen = []
    for r in sorted((r for r in cands if id(r) in truths), key=lambda r: not truths[id(r)]):
        if len(chosen) >= n:
            break
        pred = parse_boxes(predictions[str(r["id"])])
        try:
            with Image.open(r["image"]) as im:  # lazy: the header only, so a bomb is refused before decoding
                if im.width * im.height > EXAMPLE_MAX_PIXELS:
                    continue
                arr = draw_boxes(im, truths[id(r)], pred, frame=r.get("coordinate_size"))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, Image.DecompressionBombError):
            continue  # a missing, unreadable or bomb image is skipped, not fatal
        chosen.append((r, truths[id(r)], pred, arr))
    return chosen

