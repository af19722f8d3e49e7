"""The AEF int8 code lattice: what a stored byte means, and back.

A stored code q means ``sign(q) * (q / 127.5) ** 2`` (PAPER.md); -128 is nodata in all 64 bands at
once. Its own module because everything that touches tile bytes needs it (the store, the tile reader,
the writer, the synthetic world) and none of them should have to import the others for it.
"""

from __future__ import annotations

import numpy as np

from . import GeoError

DIM = 64
NODATA = -128
BANDS = tuple(f"A{i:02d}" for i in range(DIM))


def _build_lut() -> np.ndarray:
    q = np.arange(-128, 128, dtype=np.float64)
    v = np.sign(q) * (q / 127.5) ** 2
    v[0] = np.nan  # q == -128 is nodata
    lut = v.astype(np.float32)
    lut.flags.writeable = False
    return lut


LUT = _build_lut()  # LUT[q + 128]


def dequantize(q) -> np.ndarray:
    """int8 codes -> float32 values; -128 (nodata) -> NaN."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        if not np.issubdtype(q.dtype, np.integer) or q.size and (q.min() < -128 or q.max() > 127):
            raise GeoError(f"dequantize expects int8 codes, got {q.dtype}")
        q = q.astype(np.int8)
    return LUT[q.view(np.uint8) ^ 0x80]


def quantize(v) -> np.ndarray:
    """float values -> the nearest int8 code; NaN -> -128. Exact inverse of ``dequantize`` on the lattice."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        q = np.rint(np.sign(v) * np.sqrt(np.abs(v)) * 127.5)
    q = np.clip(np.nan_to_num(q, nan=NODATA), -127, 127)
    q[~np.isfinite(v)] = NODATA
    return q.astype(np.int8)


def lattice_step(v) -> np.ndarray:
    """The gap between neighbouring codes around each value: how far a float (an Earth Engine export) may sit
    from the int8 tile holding the same vector."""
    q = np.abs(quantize(v).astype(np.float64))
    return ((q + 1) / 127.5) ** 2 - (q / 127.5) ** 2


FLOAT_TYPES = ("float32", "float64")


def band_order(descriptions, count: int, dtype: str, path: str) -> list[int] | None:
    """The 1-based band numbers holding A00..A63, or None when the file already stores them in order.

    Earth Engine exports write whatever bands were selected, in the selected order: bands named A00..A63
    in another order are re-ordered by name; anything else (3 bands, 64 bands named B1..B64, a missing A17,
    uint16) is refused naming the file. Undescribed 64-band files are taken in the A00..A63 order, which is
    what an export of the whole image writes."""
    if count != DIM:
        raise GeoError(f"{path} is not an AEF tile: {count} band(s), AEF has {DIM} (A00..A63)")
    if dtype != "int8" and dtype not in FLOAT_TYPES:
        raise GeoError(f"{path} is not an AEF tile: its bands are {dtype}, AEF is int8 codes or float32 values")
    names = [str(d).strip().upper() if d else "" for d in descriptions or ()]
    if not any(names) or names == list(BANDS):
        return None
    if sorted(names) != sorted(BANDS):
        wrong = [n or "(unnamed)" for n in names if n not in BANDS]
        lacking = [b for b in BANDS if b not in names]
        raise GeoError(f"{path} is not an AEF tile: bands must be A00..A63, found "
                       f"{', '.join(wrong[:4]) or 'duplicates'}{' ...' if len(wrong) > 4 else ''}"
                       + (f" and no {', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}" if lacking else ""))
    return [names.index(b) + 1 for b in BANDS]
