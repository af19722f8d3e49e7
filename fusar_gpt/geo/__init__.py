"""Geospatial input: SAR rasters (``raster``) and AlphaEarth anchors (``aef``).

Both modules raise :class:`GeoError` (a ``ValueError``) for bad input so that the CLI turns it
into one clear line instead of a traceback.
"""

from __future__ import annotations

import math


class GeoError(ValueError):
    """Bad geospatial input: unreadable raster, missing georeference, out-of-range place, ..."""


def check_bbox(bbox, what: str = "bbox") -> tuple[float, float, float, float]:
    """Validate a lon/lat box ``(lon_min, lat_min, lon_max, lat_max)`` and return it as floats.

    Footprints that cross the antimeridian are refused rather than silently wrapped the wrong way.
    """
    try:
        lon_min, lat_min, lon_max, lat_max = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise GeoError(f"{what} must be 4 numbers lon_min,lat_min,lon_max,lat_max, got {bbox!r}") from None
    vals = (lon_min, lat_min, lon_max, lat_max)
    if not all(math.isfinite(v) for v in vals):
        raise GeoError(f"{what} has a non-finite value: {vals}")
    for name, v in (("lon_min", lon_min), ("lon_max", lon_max)):
        if not -180.0 <= v <= 180.0:
            raise GeoError(f"{what} {name}={v} is outside the longitude range [-180, 180]")
    for name, v in (("lat_min", lat_min), ("lat_max", lat_max)):
        if not -90.0 <= v <= 90.0:
            raise GeoError(f"{what} {name}={v} is outside the latitude range [-90, 90]")
    if lon_min > lon_max:
        raise GeoError(f"{what} lon_min {lon_min} > lon_max {lon_max} (antimeridian-crossing footprints "
                       f"are not supported; split them)")
    if lat_min > lat_max:
        raise GeoError(f"{what} lat_min {lat_min} > lat_max {lat_max}")
    return vals
