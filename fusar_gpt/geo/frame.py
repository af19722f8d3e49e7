"""The model frame and scene chips: square inputs for the model, and the way back to scene pixels.

Boxes travel with every resize and every chip, because detections are only useful once they are
back in scene pixels (and from there in lon/lat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from . import GeoError
from .raster import SarImage, read_sar
from .transforms import window_transform

MODEL_PATCH = 28


@dataclass(frozen=True)
class FrameMap:
    """How source pixels map into the square model frame: ``frame = source * (sx, sy)``, padding right/bottom."""

    sx: float
    sy: float
    frame: int
    src_width: int
    src_height: int
    pad_x: int = 0
    pad_y: int = 0

    def to_source(self, boxes) -> np.ndarray:
        """Frame xyxy boxes back to float source-pixel xyxy (clipped to the source image)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = b / np.array([self.sx, self.sy, self.sx, self.sy])
        out[:, 0::2] = np.clip(out[:, 0::2], 0.0, self.src_width)
        out[:, 1::2] = np.clip(out[:, 1::2], 0.0, self.src_height)
        return out


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    chans = img[..., None] if img.ndim == 2 else img
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(chans[..., c]))
                               .resize((w, h), Image.Resampling.BILINEAR)) for c in range(chans.shape[-1])], axis=-1)
    return out[..., 0] if img.ndim == 2 else out


def to_model_frame(img: np.ndarray, frame: int, boxes=None, *, keep_aspect: bool = False):
    """Resize an 8-bit image to the square ``frame`` and move its boxes with it.

    Default stretches to frame x frame (x by frame/W, y by frame/H), as the official FUSAR-GPT pipeline does, so
    its checkpoints see what they were trained on. ``keep_aspect`` scales the long side to ``frame`` and pads
    zeros at the bottom/right, so box coordinates get no offset. Boxes come back as rounded integer xyxy clipped
    to the image content; a box that clipping makes empty is kept (callers decide whether to drop it).
    Returns ``(resized, boxes_in_frame or None, FrameMap)``.
    """
    if not isinstance(frame, (int, np.integer)) or frame <= 0 or frame % MODEL_PATCH:
        raise GeoError(f"model frame must be a positive multiple of {MODEL_PATCH}, got {frame!r}")
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or min(img.shape[:2]) == 0:
        raise GeoError(f"to_model_frame needs a non-empty uint8 [H,W] or [H,W,C] image, got {img.dtype} {img.shape}")
    H, W = img.shape[:2]
    if keep_aspect:
        s = frame / max(W, H)
        cw, ch = max(1, min(frame, round(W * s))), max(1, min(frame, round(H * s)))
    else:
        cw, ch = frame, frame
    content = _resize(img, cw, ch)
    out = np.zeros((frame, frame) + img.shape[2:], dtype=np.uint8)
    out[:ch, :cw] = content
    fmap = FrameMap(sx=cw / W, sy=ch / H, frame=int(frame), src_width=W, src_height=H,
                    pad_x=frame - cw, pad_y=frame - ch)
    if boxes is None:
        return out, None, fmap
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([fmap.sx, fmap.sy, fmap.sx, fmap.sy])
    b = np.rint(b)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, cw)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, ch)
    return out, b.astype(np.int64), fmap


# ---------------------------------------------------------------------------------------------------- chips
@dataclass(frozen=True)
class Chip:
    """A square window of a scene with its own geotransform, so chip detections can be placed in lon/lat."""

    col_off: int
    row_off: int
    width: int
    height: int
    transform: Affine | None = None

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    def to_scene(self, boxes) -> np.ndarray:
        """Chip-pixel xyxy boxes to scene-pixel xyxy (float)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return b + np.array([self.col_off, self.row_off, self.col_off, self.row_off], dtype=np.float64)


def _offsets(n: int, size: int, stride: int) -> list[int]:
    if n <= size:
        return [0]
    offs = list(range(0, n - size + 1, stride))
    if offs[-1] + size < n:
        offs.append(n - size)  # shifted back to end flush with the edge: no partial chips, no padding
    return offs


def chip_windows(width: int, height: int, size: int, overlap: int, transform: Affine | None = None) -> list[Chip]:
    """Overlapping size x size windows covering a width x height scene, row-major.

    Stride is ``size - overlap``; the last window in each direction is moved back to end at the scene edge, so
    every chip is full size (a scene smaller than ``size`` gives one chip of the scene's size).
    """
    for name, v in (("width", width), ("height", height), ("size", size)):
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise GeoError(f"chip_windows {name} must be a positive integer, got {v!r}")
    if not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < size:
        raise GeoError(f"chip overlap must be an integer in [0, size={size}), got {overlap!r}")
    stride = size - overlap
    cw, ch = min(size, width), min(size, height)
    chips = []
    for row in _offsets(height, size, stride):
        for col in _offsets(width, size, stride):
            t = window_transform(transform, col, row) if transform is not None else None
            chips.append(Chip(int(col), int(row), int(cw), int(ch), t))
    return chips


def read_chip(path, chip: Chip, band: int | None = None, **kwargs) -> SarImage:
    """Read one chip of a scene (see :func:`read_sar` for the keyword arguments)."""
    return read_sar(path, band, window=(chip.col_off, chip.row_off, chip.width, chip.height), **kwargs)
