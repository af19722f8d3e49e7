"""AlphaEarth (AEF) anchors: de-quantisation and sampling straight from the public COG tiles.

Facts this module is built on (PAPER.md): tiles are int8, 64 bands, nodata -128 in all bands at
once, stored BOTTOM-UP (positive y pixel size), one folder per year and UTM zone; a stored code q
means ``sign(q) * (q / 127.5) ** 2``. Everything geometric goes through the tile's own affine
transform, so bottom-up and north-up tiles need no special case.

Speed comes from reading each tile once per footprint (one window over all of its nodes), keeping
datasets open in a small LRU, and transforming coordinates in vectors with cached transformers.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from . import GeoError, check_bbox
from .aef_codes import BANDS, DIM, LUT, NODATA, dequantize, quantize
from .aef_http import HttpClient
from .aef_index import TileIndex, load_index, parse_zone
from .aef_read import TileReader
from .anchors import Anchors
from .transforms import crs_key, lonlat_to, pixel_to_map, to_lonlat

# the code lattice lives in aef_codes; it is re-exported here, where callers have always found it
__all__ = ["AEFStore", "BANDS", "DIM", "LUT", "NODATA", "dequantize", "quantize", "grid_positions", "grid_shape",
           "natural_zone", "lonlat_to", "to_lonlat"]

def grid_shape(grid) -> tuple[int, int]:
    rows, cols = (grid, grid) if np.isscalar(grid) else tuple(grid)
    if int(rows) != rows or int(cols) != cols or rows < 2 or cols < 2:
        raise GeoError(f"grid must be an integer >= 2 (or rows, cols), got {grid!r}")
    return int(rows), int(cols)


def grid_positions(grid) -> np.ndarray:
    """Normalised (y, x) of the nodes, row-major from the north-west corner."""
    rows, cols = grid_shape(grid)
    i, j = np.meshgrid(np.arange(rows) / (rows - 1), np.arange(cols) / (cols - 1), indexing="ij")
    return np.stack([i.ravel(), j.ravel()], 1).astype(np.float32)


def natural_zone(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UTM zone number each point belongs to by longitude, and its hemisphere (True = north)."""
    zone = np.clip(np.floor((np.asarray(lon) + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    return zone, np.asarray(lat) >= 0


YEARS = (1900, 2100)  # a year outside is a typo (or -3), not a request for the nearest AEF year


class AEFStore:
    """AEF tiles under ``root`` (``{year}/{zone}/*.tif[f]``; any GDAL path works with an index file).

    ``root`` may be a local folder (bucket tiles, Earth Engine exports, or both), a GDAL path
    (``/vsis3/...``) or an ``http(s)://`` URL; remote roots need an index (a local file, or the root's
    own ``aef_index.parquet``, fetched once and cached). Over HTTP only the blocks a footprint needs are
    read, through ``http`` (an :class:`~fusar_gpt.geo.aef_http.HttpClient`: retries, byte counts).

    ``sample(bbox, year, grid)`` lays a grid over a lon/lat footprint; ``sample_raster`` lays it
    over an image's pixel grid. Nodes outside the coverage or on nodata come back with mask False
    and NaN features, never an exception: open sea is simply not covered by AEF.
    """

    def __init__(self, root, *, index: str | None = None, cache_dir=None, max_open: int = 16,
                 window_cap: int = 1 << 20, progress: bool = False, http: HttpClient | None = None):
        self.root = str(root)
        self.http = http if http is not None else HttpClient()  # used only for http(s) tiles
        self.index: TileIndex = load_index(self.root, index=index, cache_dir=cache_dir, progress=progress,
                                           http=self.http)
        if len(self.index) == 0:
            raise GeoError(f"no AEF tiles for any year under {self.root} (expected {self.root}/YEAR/ZONE/*.tiff "
                           f"or an aef_index.parquet/.csv listing them)")
        self.max_open = max_open
        self.window_cap = window_cap  # pixels; larger spans are read one node row at a time
        self._tiles: OrderedDict[str, TileReader] = OrderedDict()
        self._lock = threading.RLock()
        self._pid = os.getpid()

    # -- years -------------------------------------------------------------------------------
    @property
    def years(self) -> list[int]:
        return self.index.available_years

    def resolve_year(self, year: int) -> int:
        """The asked year clipped into the store's years (nearest year; the earlier one on a tie)."""
        try:
            year = int(year)
        except (TypeError, ValueError, OverflowError):
            raise GeoError(f"year must be an integer, got {year!r}") from None
        if not YEARS[0] <= year <= YEARS[1]:
            raise GeoError(f"year must be in {YEARS[0]}..{YEARS[1]}, got {year}")
        years = np.array(self.years)
        return int(years[np.argmin(np.abs(years - year) * 2 + (years > year))])

    # -- public sampling -----------------------------------------------------------------------
    def sample(self, bbox, year, grid=8, *, method: str = "point", block: int = 3) -> Anchors:
        lon_min, lat_min, lon_max, lat_max = check_bbox(bbox)
        rows, cols = grid_shape(grid)
        pos = grid_positions((rows, cols))
        lat = lat_max - pos[:, 0].astype(np.float64) * (lat_max - lat_min)
        lon = lon_min + pos[:, 1].astype(np.float64) * (lon_max - lon_min)
        return self._anchors(lon, lat, pos, year, method, block)

    def sample_raster(self, crs, transform, width: int, height: int, year, grid=8, *,
                      method: str = "point", block: int = 3) -> Anchors:
        """Nodes on the image's own pixel grid: node (i, j) sits at pixel (x, y) = (j/(cols-1)*W, i/(rows-1)*H)."""
        pos = grid_positions(grid)
        x, y = pixel_to_map(transform, pos[:, 1].astype(np.float64) * width, pos[:, 0].astype(np.float64) * height)
        lon, lat = to_lonlat(crs_key(crs), x, y)
        if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
            raise GeoError("raster corners do not map to valid lon/lat (check its CRS and transform)")
        check_bbox((lon.min(), lat.min(), lon.max(), lat.max()), "raster footprint")
        return self._anchors(lon, lat, pos, year, method, block)

    def has_tiles(self, bbox, year) -> bool:
        """Whether any tile of the (resolved) year reaches the lon/lat box: False means 'no AEF here at all',
        as opposed to tiles that hold only nodata (open sea), which is a valid, empty prior."""
        lon_min, lat_min, lon_max, lat_max = check_bbox(bbox)
        return len(self.index.candidates(self.resolve_year(year), lon_min, lat_min, lon_max, lat_max)) > 0

    def sample_points(self, lon, lat, year: int, *, method: str = "point", block: int = 3):
        """Features [N, 64] (NaN where missing) at arbitrary lon/lat points of the (resolved) year."""
        lon, lat = np.asarray(lon, np.float64).ravel(), np.asarray(lat, np.float64).ravel()
        with self._lock:
            return self._sample_year(lon, lat, self.resolve_year(year), method, block)

    # -- internals ---------------------------------------------------------------------------
    def _anchors(self, lon, lat, pos, year, method, block) -> Anchors:
        if method not in ("point", "mean"):
            raise GeoError(f"method must be 'point' or 'mean', got {method!r}")
        if method == "mean" and (block < 1 or block % 2 == 0):
            raise GeoError(f"block must be a positive odd number of pixels, got {block}")
        multi = isinstance(year, Sequence) and not isinstance(year, str) or isinstance(year, np.ndarray)
        asked = list(year) if multi else [year]
        if not asked:
            raise GeoError("no year given")
        used = [self.resolve_year(y) for y in asked]
        with self._lock:
            feats = np.stack([self._sample_year(lon, lat, y, method, block) for y in used])
        mask = np.isfinite(feats).all(-1)
        lonlat = np.stack([lon, lat], 1)
        if multi:
            return Anchors(feats, pos, mask, lonlat=lonlat, years=np.array(used, np.int64))
        return Anchors(feats[0], pos, mask[0], lonlat=lonlat, year=used[0])

    def _tile(self, path: str) -> TileReader:
        if os.getpid() != self._pid:  # forked data-loader worker: never share GDAL handles across processes
            self._tiles = OrderedDict()
            self._pid = os.getpid()
        tile = self._tiles.get(path)
        if tile is None:
            tile = TileReader(path, self.http)
            self._tiles[path] = tile
            while len(self._tiles) > self.max_open:
                self._tiles.popitem(last=False)[1].close()
        else:
            self._tiles.move_to_end(path)
        return tile

    def _sample_year(self, lon, lat, year, method, block) -> np.ndarray:
        n = len(lon)
        out = np.full((n, DIM), np.nan, np.float32)
        cand = self.index.candidates(year, lon.min(), lat.min(), lon.max(), lat.max())
        if len(cand) == 0:
            return out
        zone, north = natural_zone(lon, lat)
        tiles, cols, rows, score = [], [], [], []
        projected: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k in cand:
            tile = self._tile(str(self.index.paths[k]))
            if tile.crs not in projected:
                projected[tile.crs] = lonlat_to(tile.crs, lon, lat)
            c, r = tile.pixel(*projected[tile.crs])
            inside = (c >= 0) & (c < tile.width) & (r >= 0) & (r < tile.height)
            parsed = parse_zone(str(self.index.zones[k]))
            if parsed is None:  # unknown zone: usable, but after any tile of the point's own zone
                rank = np.ones(n)
            else:
                dz = np.abs(zone - parsed[0])
                rank = np.minimum(dz, 60 - dz) + ((parsed[1] == "N") != north) * 0.5
            tiles.append(tile)
            cols.append(c)
            rows.append(r)
            score.append(np.where(inside, rank, np.inf))
        score = np.array(score)  # [C, n]; a tile whose value is nodata is struck off and the next tried
        pending = np.ones(n, bool)
        while True:
            s = np.where(pending[None], score, np.inf)
            best = np.argmin(s, 0)
            has = np.isfinite(s[best, np.arange(n)])
            if not has.any():
                return out
            for c in np.unique(best[has]):
                sel = np.flatnonzero(has & (best == c))
                vals = self._read(tiles[c], cols[c][sel], rows[c][sel], method, block)
                ok = np.isfinite(vals).all(1)
                out[sel[ok]] = vals[ok]
                pending[sel[ok]] = False
                score[c, sel] = np.inf

    def _read(self, tile: TileReader, col, row, method, block) -> np.ndarray:
        """Values at (col, row) pixels: one window over all nodes, or one per node row when that is huge."""
        r = block // 2 if method == "mean" else 0
        c0, c1 = max(int(col.min()) - r, 0), min(int(col.max()) + r + 1, tile.width)
        r0, r1 = max(int(row.min()) - r, 0), min(int(row.max()) + r + 1, tile.height)
        if (c1 - c0) * (r1 - r0) <= self.window_cap:
            return self._from_window(tile, col, row, r, c0, c1, r0, r1)
        out = np.empty((len(col), DIM), np.float32)
        for value in np.unique(row):
            sel = row == value
            cc0, cc1 = max(int(col[sel].min()) - r, 0), min(int(col[sel].max()) + r + 1, tile.width)
            rr0, rr1 = max(int(value) - r, 0), min(int(value) + r + 1, tile.height)
            out[sel] = self._from_window(tile, col[sel], row[sel], r, cc0, cc1, rr0, rr1)
        return out

    def _from_window(self, tile, col, row, r, c0, c1, r0, r1) -> np.ndarray:
        from rasterio.windows import Window

        q = tile.read(Window(c0, r0, c1 - c0, r1 - r0))  # [64, h, w] raw (int8 codes or an export's floats)
        if r == 0:
            return tile.decode(q[:, row - r0, col - c0]).T
        offs = np.arange(-r, r + 1)
        rr = (row - r0)[:, None, None] + offs[None, :, None]  # [k, b, 1]
        cc = (col - c0)[:, None, None] + offs[None, None, :]  # [k, 1, b]
        rr, cc = np.broadcast_arrays(rr, cc)
        inside = (rr >= 0) & (rr < q.shape[1]) & (cc >= 0) & (cc < q.shape[2])
        v = tile.decode(q[:, np.clip(rr, 0, q.shape[1] - 1), np.clip(cc, 0, q.shape[2] - 1)])  # [64, k, b, b]
        valid = inside & np.isfinite(v).all(0)
        mean = np.where(valid[None], v, 0).sum((2, 3)) / np.maximum(valid.sum((1, 2)), 1)[None]
        mean = mean.T.astype(np.float64)  # [k, 64]
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where((valid.any((1, 2)) & (norm[:, 0] > 0))[:, None], mean / norm, np.nan)
        return mean.astype(np.float32)

    def __getstate__(self):
        """Picklable for process pools and spawn-started data loaders: handles are reopened on first use."""
        state = self.__dict__.copy()
        state["_tiles"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            for tile in self._tiles.values():
                tile.close()
            self._tiles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"AEFStore({self.root!r}, tiles={len(self.index)}, years={self.years})"
