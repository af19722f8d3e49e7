"""One open AEF tile, whatever it is and wherever it lives, decoded to float32 vectors.

Kinds: a bucket COG (int8, bottom-up, nodata -128) or an Earth Engine export (a GeoTIFF with bands
A00..A63, float32 de-quantised values or int8 codes, north-up, any CRS and tiling). Places: a local
file, a GDAL virtual path (``/vsis3/...``, ``s3://``, ``gs://``; s3 read anonymously unless the user has
credentials, see ``aef_paths.gdal_options``), or an ``http(s)://`` URL read through :mod:`.aef_http`
(checked, retried range reads; GDAL's ``/vsicurl/`` is not used for those, see there).

Exports are checked band by band (``aef_codes.band_order``) and re-ordered by band name when needed.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from . import GeoError
from .aef_codes import NODATA, band_order, dequantize
from .aef_http import HttpClient, RemoteError, is_http
from .aef_paths import gdal_options, gdal_path
from .aef_remote_tile import block_ranges, open_http
from .transforms import crs_key, map_to_pixel


class TileReader:
    """An open tile plus what sampling needs from its header; ``values(c0, c1, r0, r1)`` decodes a window."""

    def __init__(self, path: str, http: HttpClient | None = None):
        import rasterio

        self.path, self.remote = str(path), None
        self.options = gdal_options(self.path)
        try:
            with warnings.catch_warnings(), self._env():
                warnings.simplefilter("ignore")  # GDAL notes the bucket's positive y pixel size: that is the layout
                if is_http(self.path):
                    self.ds, self.remote = open_http(self.path, http or HttpClient())
                else:
                    self.ds = rasterio.open(gdal_path(self.path), driver="GTiff")  # a VRT could read anything
        except rasterio.errors.RasterioIOError as err:
            raise GeoError(f"cannot open AEF tile {self.path}: {str(err).splitlines()[0]}") from None
        try:
            ds = self.ds
            self.dtype = ds.dtypes[0]
            self.order = band_order(ds.descriptions, ds.count, self.dtype, self.path)
            if len(set(ds.dtypes)) != 1:
                raise GeoError(f"{self.path} is not an AEF tile: mixed band types {sorted(set(ds.dtypes))}")
            if ds.crs is None:
                raise GeoError(f"{self.path} is not an AEF tile: it has no CRS")
            t = ds.transform
            if t.b != 0 or t.d != 0:
                raise GeoError(f"{self.path}: rotated or sheared pixels are not supported (north-up or bottom-up only)")
        except GeoError:
            self.ds.close()
            raise
        self.crs = crs_key(ds.crs)
        self.width, self.height = ds.width, ds.height
        self.nodata = ds.nodata

    def pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer (col, row) of the pixel holding each point; bottom-up tiles come out right by the affine."""
        col, row = map_to_pixel(self.ds.transform, x, y)
        return np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)

    def read(self, window, keep: bool = False):
        """The raw window ``[64, h, w]`` (int8 codes or floats) in the A00..A63 order. Over HTTP the fetched
        blocks are dropped after the read unless ``keep`` (a pull keeps a block that a later window of the same
        tile shares, and drops it with :meth:`release`)."""
        if self.remote is not None:  # every block the window needs, fetched at once, before GDAL decodes
            self.remote.prefetch(block_ranges(self.ds, window, self.order))
        try:
            with self._env():
                data = self.ds.read(self.order, window=window)
        except Exception as err:  # GDAL reports a failed remote read as a generic read error
            if self.remote is not None:
                self.remote.check()
            raise GeoError(f"cannot read AEF tile {self.path}: {str(err).splitlines()[0]}") from None
        finally:
            if self.remote is not None and not keep:
                self.remote.release()
        if self.remote is not None:
            self.remote.check()
        return data

    def release(self, ranges=None) -> None:
        """Drop blocks kept by ``read(..., keep=True)``: the ``(offset, length)`` ranges given, or all."""
        if self.remote is not None:
            self.remote.release(ranges)

    def _env(self):
        """GDAL's configuration for this tile (anonymous s3), in force around every open and read (whenever GDAL
        may make a request), and only there: a process-wide setting would change how the user's other GDAL
        reads are signed."""
        import rasterio

        return rasterio.Env(**self.options) if self.options else contextlib.nullcontext()

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """float32 of raw ``[64, ...]`` values (as :meth:`read` gives, or picked from it); NaN where there is no
        vector. Decoding only the picked pixels keeps a sparse grid over a large window cheap."""
        if self.dtype == "int8":
            if self.nodata is not None and self.nodata != NODATA:
                raw = np.where(raw == np.int8(self.nodata), np.int8(NODATA), raw)
            return dequantize(raw)
        v = np.array(raw, dtype=np.float32)
        # an export's masked pixels: its nodata value, NaN, or the all-zero vector (AEF vectors have unit norm)
        missing = ~np.isfinite(v).all(0) | (v == 0).all(0)
        if self.nodata is not None and np.isfinite(self.nodata):
            missing |= (raw == self.nodata).any(0)
        v[:, missing] = np.nan
        return v

    def close(self) -> None:
        self.ds.close()


__all__ = ["TileReader", "RemoteError"]
