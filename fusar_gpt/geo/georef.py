"""Where a raster lies: the lon/lat footprint of its pixel edges, from a CRS and transform or from its GCPs.

Why apart from reading: the footprint decides which AEF tiles a scene needs, and a wrong CRS or a scene over
the antimeridian must be refused here, with a reason, before any anchor of the wrong place is fetched.
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.transform import GCPTransformer

from ..text import one_line
from . import GeoError, check_bbox
from .transforms import crs_key, pixel_to_map, to_lonlat

# Points per image edge when projecting to lon/lat: UTM edges are curves in lon/lat, 21 keeps the error sub-metre.
EDGE_POINTS = 21


def _edge_pixels(width: int, height: int, n: int = EDGE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(col, row) of points along the four outer pixel EDGES: the footprint covers whole pixels, not centres."""
    c = np.linspace(0.0, width, n)
    r = np.linspace(0.0, height, n)
    cols = np.concatenate([c, np.full(n, float(width)), c[::-1], np.zeros(n)])
    rows = np.concatenate([np.zeros(n), r, np.full(n, float(height)), r[::-1]])
    return cols, rows


def _lonlat_bbox(crs, xs, ys, what: str) -> tuple[float, float, float, float]:
    try:
        key = crs_key(crs)
        geographic = bool(ProjCRS.from_user_input(key).is_geographic)
        lon, lat = to_lonlat(key, np.asarray(xs, float), np.asarray(ys, float))
    except Exception as e:  # pyproj raises several types for unusable CRSs
        raise GeoError(f"{what}: cannot transform to lon/lat: {one_line(e)}") from None
    lon, lat = np.asarray(lon), np.asarray(lat)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise GeoError(f"{what}: georeference maps outside the valid lon/lat range (wrong CRS or coordinates?)")
    box = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    # A projected scene over the antimeridian comes back with lons near both -180 and +180: refuse, not wrap.
    # (A geographic raster past +-180 is refused by check_bbox. Scenes containing a pole are not handled.)
    if not geographic and box[2] - box[0] > 180.0:
        raise GeoError(f"{what}: footprint spans {box[2] - box[0]:.1f} degrees of longitude; it crosses "
                       f"the antimeridian, which is not supported (split the scene)")
    _check_area_of_use(key, box, what)
    return check_bbox(box, what=f"footprint of {what}")


AREA_SLACK_DEG = 5.0  # scenes a little past their UTM zone are common and fine; a wrong northing lands far off


def _check_area_of_use(key, box, what: str) -> None:
    """A footprint far outside its CRS's area of use (a UTM northing of 1e8 m, a zone number off by ten) maps to
    finite lon/lat somewhere else on Earth: refuse it instead of fetching the wrong place's anchors."""
    area = ProjCRS.from_user_input(key).area_of_use
    if area is None or (area.east - area.west) >= 359 or area.east < area.west:  # global, or over the antimeridian
        return
    s = AREA_SLACK_DEG
    if box[2] < area.west - s or box[0] > area.east + s or box[3] < area.south - s or box[1] > area.north + s:
        raise GeoError(f"{what}: footprint {tuple(round(v, 3) for v in box)} lies outside the area of use of "
                       f"{key} (lon {area.west:g}..{area.east:g}, lat {area.south:g}..{area.north:g}): wrong CRS "
                       f"or coordinates?")


def footprint(crs, transform: Affine, width: int, height: int, *, what: str = "raster"
              ) -> tuple[float, float, float, float]:
    """Outer lon/lat box ``(lon_min, lat_min, lon_max, lat_max)`` of the image's pixel edges.

    Edges are densified because projected edges are curves in lon/lat and a rotated transform puts the extreme
    corner anywhere; four corners alone would under-cover the scene.
    """
    if crs is None or transform is None:
        raise GeoError(f"{what}: no CRS or transform, so no footprint")
    if width <= 0 or height <= 0:
        raise GeoError(f"{what}: image size {width}x{height} is empty")
    cols, rows = _edge_pixels(width, height)
    xs, ys = pixel_to_map(transform, cols, rows)
    return _lonlat_bbox(crs, xs, ys, what)


def gcp_footprint(gcps, gcp_crs, col_off: int, row_off: int, width: int, height: int, what: str):
    """GDAL's GCP polynomial (not the least-squares affine) maps the edges: closer to the real swath geometry."""
    cols, rows = _edge_pixels(width, height)
    try:
        xs, ys = GCPTransformer(gcps).xy(rows + row_off, cols + col_off, offset="ul")
    except Exception as e:
        raise GeoError(f"{what}: its GCPs cannot be used: {one_line(e)}") from None
    return _lonlat_bbox(gcp_crs, xs, ys, what)
