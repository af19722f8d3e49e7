"""SAR raster input: read any user GeoTIFF, place it in lon/lat, scale it to 8-bit, cut it for the model.

Users bring scenes from many processors (uint8 quick-looks, uint16/int16 DN, float32 dB or linear, complex SLC)
in any CRS, sometimes georeferenced only by GCPs or not at all. Everything here fails with a one-line
:class:`GeoError` naming the file, because a traceback from deep inside GDAL tells a user nothing.

This module reads; where the scene lies (``georef``) and what its tags and values say (``raster_tags``: date,
scale) are their own modules; ``footprint``, ``acquisition_date``, ``guess_scale`` and ``SCALES`` are still
imported from here too (``__all__``).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import from_gcps
from rasterio.windows import Window

from ..text import one_line
from . import GeoError, check_bbox
from .bands import BandChoice, choose_bands
from .georef import footprint, gcp_footprint
from .raster_tags import SCALES, acquisition_date, coerce_date, guess_scale
from .transforms import window_transform

__all__ = ["DEFAULT_MAX_PIXELS", "SAR_DRIVER", "SCALES", "SarImage", "acquisition_date", "footprint",
           "guess_scale", "open_raster", "read_sar"]

# 2**29 pixels is a 2 GiB float32 array: big enough for a full GRD scene, small enough to fail before swapping.
DEFAULT_MAX_PIXELS = 2**29


@dataclass
class SarImage:
    """One SAR band, float32 with NaN where invalid, plus the georeference a footprint needs."""

    data: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    crs: CRS | None
    transform: Affine | None
    width: int
    height: int
    date: dt.date | None
    scale: str
    path: str
    nodata: float | None
    band: str = ""           # what was read, for the record ("band 2, VH", "bands 1 (I) + 2 (Q)")
    # Set by read_sar: GCP rasters have a footprint more exact than their fitted affine.
    _footprint: tuple[float, float, float, float] | None = field(default=None, repr=False)

    @property
    def footprint(self) -> tuple[float, float, float, float]:
        if self._footprint is None:
            if self.crs is None or self.transform is None:
                raise GeoError(f"{self.path}: image has no georeference, so no footprint")
            self._footprint = footprint(self.crs, self.transform, self.width, self.height, what=self.path)
        return self._footprint


def _as_window(window, width: int, height: int, path) -> Window:
    try:
        if isinstance(window, Window):
            col, row, w, h = window.col_off, window.row_off, window.width, window.height
        else:
            col, row, w, h = window
        vals = [int(v) for v in (col, row, w, h)]
        if any(int(v) != v for v in (col, row, w, h)):
            raise ValueError
    except (TypeError, ValueError):
        raise GeoError(f"{path}: window must be 4 integers (col_off, row_off, width, height), got {window!r}") from None
    col, row, w, h = vals
    if col < 0 or row < 0 or w <= 0 or h <= 0 or col + w > width or row + h > height:
        raise GeoError(f"{path}: window {tuple(vals)} is not inside the {width}x{height} raster")
    return Window(col, row, w, h)


def _valid_mask(arr: np.ndarray, nodata) -> np.ndarray:
    mask = np.ones(arr.shape, dtype=bool)
    if nodata is None or math.isnan(nodata):
        return mask  # NaN nodata is caught by the isfinite test
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        if not math.isfinite(nodata) or nodata != int(nodata) or not info.min <= nodata <= info.max:
            return mask  # a nodata value the dtype cannot hold matches no pixel
        return arr != arr.dtype.type(int(nodata))
    return arr != arr.dtype.type(nodata)


SAR_DRIVER = "GTiff"  # GeoTIFF and COG; see open_raster


def open_raster(path):
    """``rasterio.open`` for an input raster, limited to the GeoTIFF driver. Why: GDAL opens whatever a file's
    bytes say, so a ``.tif`` holding VRT XML reads files anywhere on the disk, or fetches ``/vsicurl/`` URLs,
    on behalf of whoever supplied it (measured: a served image root was escaped this way). A GeoTIFF references
    no other file. A refused file raises ``RasterioError`` as any unreadable file does."""
    return rasterio.open(path, driver=SAR_DRIVER)


def read_sar(path, band: int | None = None, *, window=None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             footprint=None, date=None, scale: str | None = None, bands: str | None = None,
             pol: str | None = None) -> SarImage:
    """Read the SAR measurement of a raster as float32 (complex -> amplitude ``|z|``), nodata/NaN/inf masked.

    Which band: ``band`` N, or (None) what :func:`geo.bands.choose_bands` reads from the band descriptions with
    ``bands`` / ``pol``: a single band, the co-pol of a dual-pol file, or SLC I and Q real bands, whose amplitude
    ``|I + iQ|`` is computed exactly as for a complex band.

    ``window=(col_off, row_off, width, height)`` reads part of a scene; ``max_pixels`` caps what would be read
    (the window if given, else the whole raster) and is checked on the header before any pixel is read.
    ``footprint=(lon_min, lat_min, lon_max, lat_max)`` of the WHOLE raster is a fallback for files with no
    georeference of their own (no CRS+transform, no GCPs); it is then EPSG:4326 north-up. A file's own
    georeference always wins. ``date`` and ``scale`` override what is read from tags / guessed from data.
    """
    path = Path(path)
    if not path.exists():
        raise GeoError(f"{path}: no such file")
    if not path.is_file():
        raise GeoError(f"{path}: is not a file")
    if scale is not None and scale not in SCALES:
        raise GeoError(f"{path}: scale must be one of {SCALES}, got {scale!r}")
    date = coerce_date(date, path) if date is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = open_raster(path)
        except RasterioError as e:
            raise GeoError(f"{path}: not a readable raster ({one_line(e)})") from None
        with ds:
            if band is None:
                choice = choose_bands(ds.descriptions, ds.count, bands=bands, pol=pol, what=str(path))
            else:
                choice = BandChoice("single", band)
            return _read_open(ds, path, choice, window, max_pixels, footprint, date, scale)


def _read_open(ds, path, choice, window, max_pixels, fp_fallback, date, scale) -> SarImage:
    band = choice.index
    if not isinstance(band, (int, np.integer)) or not 1 <= band <= ds.count:
        raise GeoError(f"{path}: band {band!r} is out of range; the file has {ds.count} band(s), numbered from 1")
    W, H = ds.width, ds.height
    win = _as_window(window, W, H, path) if window is not None else Window(0, 0, W, H)
    n_read = int(win.width) * int(win.height)
    if max_pixels is not None and n_read > max_pixels:
        what = f"window {int(win.width)}x{int(win.height)}" if window is not None else f"raster {W}x{H}"
        raise GeoError(f"{path}: {what} = {n_read} pixels is above the cap of {max_pixels}; pass a larger "
                       f"max_pixels to read it whole, or read it in windows")
    w, h = int(win.width), int(win.height)
    col_off, row_off = int(win.col_off), int(win.row_off)

    # Georeference before pixels: a file that cannot be placed is refused without reading it.
    gcps, gcp_crs = ds.gcps
    if ds.crs is not None and not ds.transform.is_identity:
        crs, transform = ds.crs, window_transform(ds.transform, col_off, row_off)
        fp = footprint(crs, transform, w, h, what=str(path))
    elif gcps and gcp_crs is not None:
        crs = gcp_crs
        transform = window_transform(from_gcps(gcps), col_off, row_off)  # approximate, but callers get one
        fp = gcp_footprint(gcps, gcp_crs, col_off, row_off, w, h, str(path))
    elif fp_fallback is not None:
        whole = check_bbox(fp_fallback, what=f"footprint= for {path}")
        lon0, lat0, lon1, lat1 = whole
        scene = Affine((lon1 - lon0) / W, 0.0, lon0, 0.0, -(lat1 - lat0) / H, lat1)  # north-up over the whole file
        crs, transform = CRS.from_epsg(4326), window_transform(scene, col_off, row_off)
        fp = footprint(crs, transform, w, h, what=str(path))
    else:
        raise GeoError(f"{path}: has no georeference (no CRS and transform, no GCPs); pass a footprint "
                       f"(lon_min,lat_min,lon_max,lat_max)")

    try:
        arr = ds.read(band, window=win)
        flags = ds.mask_flag_enums[band - 1]
        extra = None
        if any(f.name in ("per_dataset", "alpha") for f in flags):
            extra = ds.read_masks(band, window=win) > 0
        q = ds.read(choice.q_index, window=win) if choice.kind == "iq" else None
    except MemoryError:
        raise
    except Exception as e:  # GDAL surfaces a bad strip as RasterioIOError or as a bare CPLE_* error
        cause = e.__cause__ or e
        raise GeoError(f"{path}: pixel data could not be read (truncated or corrupt file?): "
                       f"{one_line(cause)}") from None

    nodata = ds.nodatavals[band - 1]
    mask = _valid_mask(arr, nodata)
    if q is not None:  # SLC as I and Q: the same |z| (in complex64) as a complex band of the same data
        if arr.dtype.kind == "c" or q.dtype.kind == "c":
            raise GeoError(f"{path}: {choice.describe()} are complex already; I and Q must be real bands")
        mask &= _valid_mask(q, ds.nodatavals[choice.q_index - 1])
        arr = arr.astype(np.float32).astype(np.complex64) + 1j * q.astype(np.float32).astype(np.complex64)
        arr = arr.astype(np.complex64)
    data = np.abs(arr).astype(np.float32) if arr.dtype.kind == "c" else arr.astype(np.float32)
    if extra is not None:
        mask &= extra
    mask &= np.isfinite(data)
    if not mask.any():
        raise GeoError(f"{path}: no valid pixels (all nodata={nodata} or NaN) in band {band}")
    data[~mask] = np.nan

    tags = {**ds.tags(), **ds.tags(band)}
    units = ds.units[band - 1] if ds.units else None
    if units:
        tags.setdefault("UNITS", units)
    dtype = "complex64" if choice.kind == "iq" else ds.dtypes[band - 1]
    return SarImage(
        data=data, mask=mask, crs=crs, transform=transform, width=w, height=h,
        date=date if date is not None else acquisition_date(tags, path),
        scale=scale if scale is not None else guess_scale(data, mask, dtype, tags),
        path=str(path), nodata=None if nodata is None else float(nodata), band=choice.describe(), _footprint=fp,
    )
