"""CRS and geotransform maths in one place: pixel -> map coordinates, window transforms, lon/lat <-> any CRS.

``affine`` (>= 3) does the matrix work (``t @ (cols, rows)`` on arrays; ``t @ Affine.translation`` for a
window), pyproj the datum work; nothing here is hand-written maths. One cached ``Transformer`` per CRS pair,
because building one costs milliseconds and a scene's tiles ask the same pair thousands of times.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import Transformer


def as_affine(transform) -> Affine:
    """An ``Affine`` from an ``Affine`` or its six (or nine) coefficients, as GDAL and JSON hand them over."""
    return transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])


def pixel_to_map(transform, cols, rows) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel positions (``cols``, ``rows`` as float pixel coordinates, corner = 0)."""
    x, y = as_affine(transform) @ (np.asarray(cols, np.float64), np.asarray(rows, np.float64))
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def map_to_pixel(transform, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Float pixel coordinates of map positions (the inverse of :func:`pixel_to_map`)."""
    cols, rows = ~as_affine(transform) @ (np.asarray(x, np.float64), np.asarray(y, np.float64))
    return np.asarray(cols, np.float64), np.asarray(rows, np.float64)


def window_transform(transform, col: float, row: float) -> Affine:
    """The geotransform of a window whose top-left pixel is (``col``, ``row``) of the raster."""
    return as_affine(transform) @ Affine.translation(col, row)


@lru_cache(maxsize=256)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def crs_key(crs) -> str:
    """A hashable, pyproj-readable name for a CRS given as EPSG int, string or rasterio/pyproj CRS."""
    if isinstance(crs, int):
        return f"EPSG:{crs}"
    if hasattr(crs, "to_epsg"):
        epsg = crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else crs.to_wkt()
    return str(crs)


def lonlat_to(crs: str, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    x, y = _transformer("EPSG:4326", crs_key(crs)).transform(lon, lat)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def to_lonlat(crs: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = _transformer(crs_key(crs), "EPSG:4326").transform(x, y)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)
