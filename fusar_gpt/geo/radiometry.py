"""SAR radiometry: linear to dB, a robust stretch to 8-bit, and the Lee speckle filter.

The model sees 8-bit images, so how dB is mapped to grey levels decides what "bright" means; a fixed
range gives a whole dataset one scaling, a percentile stretch adapts to each scene.
"""

from __future__ import annotations

import math

import numpy as np

from . import GeoError
from .raster import SCALES, SarImage


def to_db(x: np.ndarray, kind: str) -> np.ndarray:
    """Linear to dB (amplitude 20*log10, intensity 10*log10); values <= 0 become NaN so they read as masked."""
    if kind not in SCALES:
        raise GeoError(f"scale must be one of {SCALES}, got {kind!r}")
    x = np.asarray(x, dtype=np.float32)
    if kind == "db":
        return x.copy()
    out = np.full(x.shape, np.nan, dtype=np.float32)
    pos = x > 0
    out[pos] = (20.0 if kind == "amplitude" else 10.0) * np.log10(x[pos])
    return out


def stretch_to_uint8(x_db: np.ndarray, mask: np.ndarray | None = None, *, percentiles=(2, 98), fixed=None
                     ) -> np.ndarray:
    """Map dB to 0..255 by a robust percentile stretch over valid pixels, or a fixed ``(vmin, vmax)``.

    A fixed range (e.g. ``(-25, 5)`` dB) gives a batch one shared scaling, so brightness means the same in every
    image. Masked pixels are 0. A constant image has no contrast to stretch: its valid pixels become 128.
    """
    x = np.asarray(x_db, dtype=np.float32)
    valid = np.isfinite(x) if mask is None else (np.asarray(mask, bool) & np.isfinite(x))
    out = np.zeros(x.shape, dtype=np.uint8)
    if not valid.any():
        return out
    if fixed is not None:
        vmin, vmax = (float(v) for v in fixed)
        if not vmax > vmin:
            raise GeoError(f"fixed stretch range must have vmin < vmax, got {fixed!r}")
    else:
        lo, hi = (float(p) for p in percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise GeoError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
        vals = x[valid]
        if vals.size > 4_000_000:  # a strided sample of a big scene gives the same percentiles to display precision
            vals = vals[:: vals.size // 4_000_000]
        vmin, vmax = (float(v) for v in np.percentile(vals, [lo, hi]))
        if not vmax > vmin:
            out[valid] = 128
            return out
    scaled = (x[valid].astype(np.float64) - vmin) * (255.0 / (vmax - vmin))
    out[valid] = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    return out


def _box_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sum over a size x size window centred on each pixel (zero outside), by 2-D cumulative sums: O(1) per pixel."""
    r = size // 2
    p = np.pad(a, ((r + 1, r), (r + 1, r)))
    c = p.cumsum(axis=0).cumsum(axis=1)
    h, w = a.shape
    return c[size:size + h, size:size + w] - c[:h, size:size + w] - c[size:size + h, :w] + c[:h, :w]


def lee_filter(x: np.ndarray, size: int = 5, looks: float | None = None, *, kind: str = "intensity") -> np.ndarray:
    """Classic Lee (1980) speckle filter on LINEAR data: ``m + k (z - m)``, ``k = var_x / var_z``.

    Works in linear units because speckle is multiplicative there; in dB it is additive and biased. NaN pixels
    neither contribute to window statistics nor get a value. The noise coefficient of variation is
    ``1/sqrt(looks)`` for intensity (``sqrt((4/pi - 1)/looks)`` for amplitude) if ``looks`` is given, otherwise
    the median local CV of the image, which assumes most windows are homogeneous.
    """
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise GeoError(f"lee_filter size must be an odd integer >= 3, got {size!r}")
    if kind not in ("intensity", "amplitude"):
        raise GeoError(f"lee_filter works on linear 'intensity' or 'amplitude', got {kind!r}")
    z = np.asarray(x, dtype=np.float64)
    if z.ndim != 2:
        raise GeoError(f"lee_filter needs a 2-D image, got shape {z.shape}")
    valid = np.isfinite(z)
    z0 = np.where(valid, z, 0.0)
    n = _box_sum(valid.astype(np.float64), size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _box_sum(z0, size) / n
        var = np.maximum(_box_sum(z0 * z0, size) / n - mean * mean, 0.0)
        ci2 = var / (mean * mean)
    if looks is not None:
        if not looks > 0:
            raise GeoError(f"looks must be > 0, got {looks!r}")
        cu2 = (1.0 if kind == "intensity" else 4.0 / math.pi - 1.0) / float(looks)
    else:
        full = (n == size * size) & valid & np.isfinite(ci2)
        if not full.any():
            full = valid & np.isfinite(ci2)
        cu2 = float(np.median(ci2[full])) if full.any() else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.clip((1.0 - cu2 / ci2) / (1.0 + cu2), 0.0, 1.0)
    k = np.where(np.isfinite(k), k, 0.0)  # zero-variance (or zero-mean) window: nothing to keep but the mean
    out = mean + k * (z0 - mean)
    out[~valid] = np.nan
    return out.astype(np.float32)


def to_uint8(img: SarImage, *, fixed=None, percentiles=(2, 98), lee: int | None = None,
             looks: float | None = None) -> np.ndarray:
    """SarImage -> (optional Lee in linear units) -> dB -> 8-bit. ``lee`` is the filter window size."""
    data, kind = img.data, img.scale
    if lee:
        if kind == "db":
            lin = lee_filter(np.power(10.0, data.astype(np.float64) / 10.0), lee, looks, kind="intensity")
            data, kind = lin, "intensity"
        else:
            data = lee_filter(data, lee, looks, kind=kind)
    return stretch_to_uint8(to_db(data, kind), img.mask, percentiles=percentiles, fixed=fixed)
