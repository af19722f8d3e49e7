"""SAR raster input: read any user GeoTIFF, place it in lon/lat, scale it to 8-bit, cut it for the model.

Users bring scenes from many processors (uint8 quick-looks, uint16/int16 DN, float32 dB or linear, complex SLC)
in any CRS, sometimes georeferenced only by GCPs or not at all. Everything here fails with a one-line
:class:`GeoError` naming the file, because a traceback from deep inside GDAL tells a user nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import GCPTransformer, from_gcps
from rasterio.windows import Window

from . import GeoError, check_bbox
from .bands import BandChoice, choose_bands
from .transforms import crs_key, pixel_to_map, to_lonlat, window_transform

# 2**29 pixels is a 2 GiB float32 array: big enough for a full GRD scene, small enough to fail before swapping.
DEFAULT_MAX_PIXELS = 2**29
# Points per image edge when projecting to lon/lat: UTM edges are curves in lon/lat, 21 keeps the error sub-metre.
EDGE_POINTS = 21
SCALES = ("db", "amplitude", "intensity")

# Acquisition tags in priority order; TIFFTAG_DATETIME is handled separately because it is usually write time.
_DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITION_START_TIME", "ACQUISITION_START", "ACQUISITION_TIME",
              "FIRST_LINE_TIME", "DATE_ACQUIRED", "SENSING_START", "SENSING_TIME", "START_TIME")
_DATE_RE = re.compile(r"(?<!\d)(\d{4})([-_:/.]?)(\d{2})\2(\d{2})(?!\d)")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DMY_RE = re.compile(r"(?<!\d)(\d{1,2})[- ]([A-Za-z]{3})[- ](\d{4})(?!\d)")
_SCALE_TAGS = ("UNITS", "UNIT", "SCALE", "SCALING", "RADIOMETRY", "VALUE_TYPE", "OUTPUT_TYPE", "BACKSCATTER")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


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
    # Set by read_sar: GCP rasters have a footprint more exact than their fitted affine.
    _footprint: tuple[float, float, float, float] | None = field(default=None, repr=False)

    @property
    def footprint(self) -> tuple[float, float, float, float]:
        if self._footprint is None:
            if self.crs is None or self.transform is None:
                raise GeoError(f"{self.path}: image has no georeference, so no footprint")
            self._footprint = footprint(self.crs, self.transform, self.width, self.height, what=self.path)
        return self._footprint


# ----------------------------------------------------------------------------------------------- georeference
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
        raise GeoError(f"{what}: cannot transform to lon/lat: {_one_line(e)}") from None
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


def _gcp_footprint(gcps, gcp_crs, col_off: int, row_off: int, width: int, height: int, what: str):
    """GDAL's GCP polynomial (not the least-squares affine) maps the edges: closer to the real swath geometry."""
    cols, rows = _edge_pixels(width, height)
    try:
        xs, ys = GCPTransformer(gcps).xy(rows + row_off, cols + col_off, offset="ul")
    except Exception as e:
        raise GeoError(f"{what}: its GCPs cannot be used: {_one_line(e)}") from None
    return _lonlat_bbox(gcp_crs, xs, ys, what)


# ----------------------------------------------------------------------------------------------------- dates
def _parse_date(text: str) -> dt.date | None:
    for m in _DATE_RE.finditer(text):
        year, month, day = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if 1990 <= year <= 2100:
            try:
                return dt.date(year, month, day)
            except ValueError:
                continue
    for m in _DMY_RE.finditer(text):
        mon = m.group(2).upper()
        if mon in _MONTHS and 1990 <= int(m.group(3)) <= 2100:
            try:
                return dt.date(int(m.group(3)), _MONTHS.index(mon) + 1, int(m.group(1)))
            except ValueError:
                continue
    return None


def acquisition_date(tags: dict, path) -> dt.date | None:
    """Acquisition date from explicit tags, then the file name, then TIFFTAG_DATETIME.

    TIFFTAG_DATETIME comes last because processors stamp it with the time they WROTE the file, which can be
    years after the pass; the file name of most SAR products carries the sensing start.
    """
    upper = {str(k).upper().rsplit(":", 1)[-1]: str(v) for k, v in (tags or {}).items()}
    for key in _DATE_TAGS:
        if key in upper and (d := _parse_date(upper[key])) is not None:
            return d
    if path is not None and (d := _parse_date(Path(str(path)).stem)) is not None:
        return d
    if "TIFFTAG_DATETIME" in upper:
        return _parse_date(upper["TIFFTAG_DATETIME"])
    return None


def _coerce_date(value, path) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise GeoError(f"{path}: date={value!r} is not a date; use YYYY-MM-DD") from None


# ------------------------------------------------------------------------------------------------- radiometry
def guess_scale(data: np.ndarray, mask: np.ndarray | None, dtype, tags: dict | None = None) -> str:
    """``"db"``, ``"amplitude"`` or ``"intensity"``: tags win, then the dtype, then the value distribution.

    Non-negative data cannot tell amplitude from intensity, so it is called amplitude (DN products are);
    calibrated linear sigma0/gamma0 should be tagged or passed as ``scale="intensity"``.
    """
    for key, value in (tags or {}).items():
        if str(key).upper().rsplit(":", 1)[-1] not in _SCALE_TAGS:
            continue
        v = str(value).lower()
        if re.search(r"\bdb\b|decibel", v):
            return "db"
        if re.search(r"intensity|power|linear", v):
            return "intensity"
        if re.search(r"amplitude|magnitude|\bdn\b", v):
            return "amplitude"
    name = str(np.dtype(dtype) if not isinstance(dtype, str) else dtype)
    if not name.startswith("float"):  # complex -> |z| is an amplitude; integers are DN amplitudes
        return "amplitude"
    vals = data[mask] if mask is not None else data[np.isfinite(data)]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "amplitude"
    if vals.size > 1_000_000:  # a strided sample decides as well as the whole scene
        vals = vals[:: vals.size // 1_000_000]
    p1, p5, p99 = np.percentile(vals, [1, 5, 99])
    # dB: a real share of values below -1 (linear noise-subtracted data dips only slightly below zero),
    # all within what backscatter in dB can be.
    if p5 < -1.0 and p1 >= -100.0 and p99 <= 60.0:
        return "db"
    return "amplitude"


# ------------------------------------------------------------------------------------------------------ read
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
    date = _coerce_date(date, path) if date is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = open_raster(path)
        except RasterioError as e:
            raise GeoError(f"{path}: not a readable raster ({_one_line(e)})") from None
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
        fp = _gcp_footprint(gcps, gcp_crs, col_off, row_off, w, h, str(path))
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
                       f"{_one_line(cause)}") from None

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
        path=str(path), nodata=None if nodata is None else float(nodata), _footprint=fp,
    )
