"""Write AEF tiles in the public layout, plus the index: the fixtures of the tests and the synthetic world.

Tiles are written exactly as the bucket stores them (int8, 64 bands A00..A63, bottom-up, nodata
-128, ZSTD, band-planar 1024 px blocks, overviews in a COG layout), so that the reader is
exercised on the real format rather than on a convenient one.

A tile is staged in a hidden ``.aef-tile-{host}-{pid}-*`` folder beside it and renamed when complete. A
process killed meanwhile (SIGKILL, power loss) leaves that folder behind; :func:`sweep_temps` removes the
ones whose writer is gone, so that a re-run of ``aef pull`` does not accumulate them.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from affine import Affine

from ..io_atomic import atomic_path
from . import GeoError
from .aef import natural_zone
from .aef_codes import BANDS, DIM, NODATA
from .aef_index import CSV_COLUMNS, parse_zone, scan_tiles
from .transforms import lonlat_to

TEMP_PREFIX = ".aef-tile-"
STALE_S = 3600  # a temporary of another host, or of an older version's name, is stale after an hour untouched
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_OURS = re.compile(r"^\.aef-tile-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+$")
_OTHERS = re.compile(r"^(\.aef-tile-[a-z0-9_]{8}"                      # before the host and pid were in the name
                     r"|\..+\.tiff?\.[a-z0-9_]{8}\.tmp\.tiff"          # a whole tile being copied (atomic_path)
                     r"|\.aef_index\.(parquet|csv)\.[a-z0-9_]{8}\.tmp)$")  # the index being written (atomic_path)


def temp_prefix() -> str:
    """The name a staging folder starts with: it says which host and process own it (see :func:`sweep_temps`)."""
    return f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-"


def staging_dir(parent) -> tempfile.TemporaryDirectory:
    """A hidden staging folder in ``parent`` (the same file system, so the finished file is renamed, not copied)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=parent, prefix=temp_prefix())


def sweep_temps(root) -> list[str]:
    """Remove the temporaries that killed writers left in an AEF root (``root`` and its ``YEAR/ZONE/`` folders),
    and only ours: a staging folder of this host whose process is gone, or any of our temporary names (another
    host's, or an older version's) untouched for ``STALE_S`` seconds. A live writer's folder is left alone.
    Returns the paths removed, relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for p in [*root.glob(".*"), *root.glob("*/*/.*")]:
        m = _OURS.match(p.name)
        try:
            if m and m.group("host") == _HOST:
                stale = not _alive(int(m.group("pid")))
            elif m or _OTHERS.match(p.name):
                stale = time.time() - _newest_mtime(p) > STALE_S
            else:
                continue
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if stale and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.relative_to(root).as_posix())
    return sorted(removed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _newest_mtime(p: Path) -> float:
    times = [p.lstat().st_mtime]
    if p.is_dir() and not p.is_symlink():
        times += [c.lstat().st_mtime for c in p.iterdir()]
    return max(times)


def utm_epsg(zone: str) -> int:
    parsed = parse_zone(zone)
    if parsed is None or not 1 <= parsed[0] <= 60:
        raise GeoError(f"UTM zone must look like '31N' or '37S', got {zone!r}")
    return (32600 if parsed[1] == "N" else 32700) + parsed[0]


def tile_origin(lon: float, lat: float, size: int, pixel_size: float = 10.0, zone: str | None = None):
    """(zone, epsg, west, north) of the ``size``-pixel tile of the regular UTM tile grid holding (lon, lat).

    The zone defaults to the point's own zone; pass ``zone`` to build a tile of a neighbouring zone
    that reaches over the zone edge, as real tiles near the edges do.
    """
    if zone is None:
        num, north = natural_zone(np.array([lon]), np.array([lat]))
        zone = f"{int(num[0])}{'N' if north[0] else 'S'}"
    epsg = utm_epsg(zone)
    x, y = lonlat_to(f"EPSG:{epsg}", np.array([lon], float), np.array([lat], float))
    span = size * pixel_size
    return zone, epsg, float(np.floor(x[0] / span) * span), float(np.ceil(y[0] / span) * span)


def write_tile(path, codes: np.ndarray, *, crs, west: float, north: float, pixel_size: float = 10.0,
               bottom_up: bool = True, block_size: int = 1024, overviews: bool = True) -> Path:
    """Write int8 ``codes [64, H, W]`` given NORTH-UP (row 0 = northernmost) with its top-left corner
    at (``west``, ``north``) in ``crs``. ``bottom_up`` stores it as the bucket does (positive y size).
    """
    from rasterio.windows import Window

    codes = np.asarray(codes)
    if codes.dtype != np.int8 or codes.ndim != 3 or codes.shape[0] != DIM:
        raise GeoError(f"AEF tile codes must be int8 [{DIM}, H, W], got {codes.dtype} {list(codes.shape)}")
    _, h, w = codes.shape
    if bottom_up:
        transform = Affine(pixel_size, 0.0, west, 0.0, pixel_size, north - h * pixel_size)
        data = codes[:, ::-1, :]
    else:
        transform = Affine(pixel_size, 0.0, west, 0.0, -pixel_size, north)
        data = codes
    return write_tile_pieces(path, [(Window(0, 0, w, h), data)], width=w, height=h, crs=crs, transform=transform,
                             block_size=block_size, overviews=overviews)


def write_tile_pieces(path, pieces, *, width: int, height: int, crs, transform, block_size: int = 1024,
                      overviews: bool = True) -> Path:
    """Write a tile from ``(Window, int8 codes [64, h, w])`` pieces given as STORED (rows in the order of
    ``transform``: bottom-up for a positive y pixel size), so that a window of a bucket tile is copied piece by
    piece (memory bounded by a piece, not the window) and keeps its geotransform. The file appears only when
    complete (written beside it under a temporary name, then renamed)."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling

    if block_size % 16:
        raise GeoError(f"block_size must be a multiple of 16, got {block_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = dict(tiled=True, blockxsize=block_size, blockysize=block_size, compress="zstd", interleave="band")
    with staging_dir(path.parent) as tmp:
        staged, final = Path(tmp) / "staged.tif", Path(tmp) / "final.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GDAL notes that positive y pixel sizes are unusual: that is the point
            with rasterio.open(staged, "w", driver="GTiff", dtype="int8", count=DIM, width=width, height=height,
                               crs=crs, transform=transform, nodata=NODATA, **layout) as ds:
                for window, codes in pieces:
                    codes = np.asarray(codes)
                    if codes.dtype != np.int8 or codes.ndim != 3 or codes.shape[0] != DIM:
                        raise GeoError(f"AEF tile codes must be int8 [{DIM}, h, w], got {codes.dtype} "
                                       f"{list(codes.shape)}")
                    ds.write(codes, window=window)
                ds.descriptions = BANDS
                factors = [2 ** k for k in range(1, 32) if max(height, width) / 2 ** (k - 1) > 1]
                if overviews and factors:
                    ds.build_overviews(factors, Resampling.nearest)  # nearest keeps codes on the lattice
            # copying with the overviews first gives the cloud-optimised ordering
            rasterio.shutil.copy(staged, final, driver="GTiff", copy_src_overviews=True, **layout)
        os.replace(final, path)
    return path


def write_index(root, name: str = "aef_index.csv") -> Path:
    """Scan ``root`` and write an index in the official column layout (paths relative to ``root``)."""
    import rasterio
    from rasterio.warp import transform_bounds

    root = Path(root)
    tiles = scan_tiles(str(root), cache_dir=False)
    if not len(tiles):
        raise GeoError(f"no AEF tiles under {root} to index")
    rows = []
    for fid, (p, year, zone) in enumerate(zip(tiles.paths, tiles.years, tiles.zones)):
        with warnings.catch_warnings(), rasterio.open(p) as ds:
            warnings.simplefilter("ignore")
            utm = ds.bounds
            wgs = transform_bounds(ds.crs, "EPSG:4326", *utm, densify_pts=21)
            crs = f"EPSG:{ds.crs.to_epsg()}"
        rel = Path(p).relative_to(root).as_posix()
        rows.append([fid, rel, int(year), zone, crs, utm.left, utm.bottom, utm.right, utm.top, *wgs])
    out = root / name
    with atomic_path(out) as tmp:
        if name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(CSV_COLUMNS)}), tmp)
        else:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_COLUMNS)
                writer.writerows(rows)
    return out
