"""Where the AlphaEarth tiles are: the tile index of an AEF root, read or built, and cached.

The public buckets ship an index (``aef_index.parquet`` / ``aef_index.csv``) whose ``path``
column points at the bucket itself (``s3://...`` or ``gs://...``). A local or mirrored copy keeps
the same ``{year}/{zone}/{name}.tiff`` tail, so every indexed path is re-rooted onto the store's
root: the same index serves the bucket, a mirror and a partial local copy. Without an index the
headers are scanned once; both results are cached on disk because the official index is large
(~300k rows) and header scans of remote files are slow.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io_atomic import atomic_path, write_text
from . import GeoError
from .aef_codes import band_order
from .aef_http import HttpClient, RemoteError, is_http
from .aef_paths import cache_path, gdal_path, is_remote

INDEX_NAMES = ("aef_index.parquet", "aef_index.csv")
REQUIRED_COLUMNS = ("path", "year", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
CSV_COLUMNS = ("fid", "path", "year", "utm_zone", "crs", "utm_west", "utm_south", "utm_east", "utm_north",
               "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
_ZONE = re.compile(r"^(\d{1,2})([NS])$")
_YEAR = re.compile(r"^\d{4}$")
CACHE_VERSION = 2  # 2: exports (any folder, year from path, zone from CRS) are scanned too


def parse_zone(zone: str) -> tuple[int, str] | None:
    m = _ZONE.match(str(zone).strip().upper())
    return (int(m.group(1)), m.group(2)) if m else None


@dataclass
class TileIndex:
    """Tiles as parallel arrays, so picking the tiles under a footprint is one vector comparison."""

    paths: np.ndarray   # str [N], openable by GDAL
    years: np.ndarray   # int64 [N]
    zones: np.ndarray   # str [N], e.g. "31N" ("" when unknown)
    bounds: np.ndarray  # float64 [N, 4] WGS84 (west, south, east, north)
    source: str = ""    # which index file, or "scan"

    def __post_init__(self):
        self._by_year = {int(y): np.flatnonzero(self.years == y) for y in np.unique(self.years)}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def available_years(self) -> list[int]:
        return sorted(self._by_year)

    def candidates(self, year: int, lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> np.ndarray:
        """Indices of the year's tiles whose WGS84 box meets the query box (a superset of the true hits)."""
        idx = self._by_year.get(int(year))
        if idx is None:
            return np.empty(0, np.int64)
        b = self.bounds[idx]
        hit = (b[:, 0] <= lon_max) & (b[:, 2] >= lon_min) & (b[:, 1] <= lat_max) & (b[:, 3] >= lat_min)
        return idx[hit]

    def summary(self) -> dict:
        return {"tiles": len(self), "years": self.available_years,
                "zones": sorted({str(z) for z in self.zones if z}), "source": self.source}

    def save_npz(self, path: Path) -> None:
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, paths=self.paths.astype(str), years=self.years, zones=self.zones.astype(str),
                     bounds=self.bounds, source=np.array(self.source))

    @classmethod
    def load_npz(cls, path: Path) -> TileIndex:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["paths"], z["years"], z["zones"], z["bounds"], str(z["source"]))


def _rerooted(path: str, root: str) -> str:
    """Map an indexed path onto ``root`` by its ``{year}/{zone}/{name}`` tail."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    if len(parts) >= 3 and _YEAR.match(parts[-3]) and parse_zone(parts[-2]):
        return f"{root.rstrip('/')}/{'/'.join(parts[-3:])}"
    if not is_remote(path) and not os.path.isabs(path):
        return f"{root.rstrip('/')}/{path}"
    return gdal_path(path)


def _read_rows(index_file: str) -> dict[str, list]:
    if index_file.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise GeoError("reading aef_index.parquet needs pyarrow (pip install pyarrow), "
                           "or provide aef_index.csv") from None
        try:
            table = pq.read_table(index_file)
        except Exception as err:  # pyarrow raises several unrelated types for bad files
            raise GeoError(f"cannot read AEF index {index_file}: {str(err).splitlines()[0]}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise GeoError(f"AEF index {index_file} lacks column(s) {', '.join(missing)}")
        wanted = [c for c in (*REQUIRED_COLUMNS, "utm_zone", "crs") if c in table.column_names]
        return {c: table.column(c).to_pylist() for c in wanted}
    with open(index_file, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GeoError(f"AEF index {index_file} lacks column(s) {', '.join(missing)}")
        cols: dict[str, list] = {c: [] for c in reader.fieldnames}
        for row in reader:
            for c in cols:
                cols[c].append(row[c])
        return cols


def read_index_file(index_file: str, root: str) -> TileIndex:
    """Parse an official-layout index; rows whose tile is absent from a local root are dropped."""
    cols = _read_rows(index_file)
    n = len(cols["path"])
    try:
        years = np.array([int(float(y)) for y in cols["year"]], np.int64)
        bounds = np.array([[float(cols[k][i]) for k in REQUIRED_COLUMNS[2:]] for i in range(n)],
                          np.float64).reshape(n, 4)
    except (TypeError, ValueError) as err:
        raise GeoError(f"AEF index {index_file} has a non-numeric year or bound ({err})") from None
    paths = np.array([_rerooted(str(p), root) for p in cols["path"]], dtype=object)
    zone_col = cols.get("utm_zone") or [str(p).replace("\\", "/").split("/")[-2] if "/" in str(p) else ""
                                        for p in cols["path"]]
    zones = np.array([z if parse_zone(str(z or "")) else "" for z in zone_col], dtype=object)
    keep = np.ones(n, bool)
    if not is_remote(root):
        keep = np.array([os.path.exists(p) for p in paths], bool)
    return TileIndex(paths[keep].astype(str), years[keep], zones[keep].astype(str), bounds[keep],
                     source=os.path.basename(index_file))


def scan_tiles(root: str, cache_dir: Path | None = None, progress: bool = False) -> TileIndex:
    """Read every tile header under ``root``; unchanged files come from the cache.

    Bucket tiles sit in ``{year}/{zone}/``; any other GeoTIFF under ``root`` (an Earth Engine export, in any
    folder, CRS or tiling) is taken as an export: its year from a ``YEAR`` folder above it or one year in its
    name (``aef_2024_...tif``), its zone from its CRS when that is UTM. Every file must hold the 64 AEF bands
    (``aef_codes.band_order``): one that does not is refused naming it, rather than skipped in silence.
    """
    import rasterio
    from rasterio.warp import transform_bounds

    base = Path(root)
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    cache_file = cache_path(root, cache_dir, "scan.json")
    cached = {}
    if cache_file and cache_file.exists():
        try:
            blob = json.loads(cache_file.read_text())
            if blob.get("version") == CACHE_VERSION:
                cached = blob["tiles"]
        except (OSError, ValueError, KeyError):
            cached = {}
    entries = {}
    it = files
    if progress:
        it = tqdm(files, desc="scanning AEF tile headers", unit="tile", disable=len(files) < 50)
    for p in it:
        rel = p.relative_to(base).as_posix()
        st = p.stat()
        sig = [st.st_size, st.st_mtime_ns]
        if rel in cached and cached[rel]["sig"] == sig:
            entries[rel] = cached[rel]
            continue
        parts = p.relative_to(base).parts
        bucket = len(parts) >= 3 and _YEAR.match(parts[-3]) and parse_zone(parts[-2])
        year = int(parts[-3]) if bucket else export_year(p.relative_to(base))
        try:
            with warnings.catch_warnings(), rasterio.open(p, driver="GTiff") as ds:
                warnings.simplefilter("ignore")
                if ds.crs is None:
                    raise GeoError(f"AEF tile {p} has no CRS")
                band_order(ds.descriptions, ds.count, ds.dtypes[0], str(p))
                wb = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
                zone = p.parent.name.upper() if bucket else utm_zone_of(ds.crs.to_epsg())
        except rasterio.errors.RasterioIOError as err:
            raise GeoError(f"cannot read AEF tile {p}: {str(err).splitlines()[0]}") from None
        entries[rel] = {"sig": sig, "year": year, "zone": zone, "bounds": [float(v) for v in wb]}
    if cache_file:
        write_text(cache_file, json.dumps({"version": CACHE_VERSION, "root": root, "tiles": entries}))
    rels = sorted(entries)
    return TileIndex(np.array([f"{root.rstrip('/')}/{r}" for r in rels], dtype=str),
                     np.array([entries[r]["year"] for r in rels], np.int64),
                     np.array([entries[r]["zone"] for r in rels], dtype=str),
                     np.array([entries[r]["bounds"] for r in rels], np.float64).reshape(len(rels), 4),
                     source="scan")


_NAME_YEAR = re.compile(r"(?<![0-9])(19[0-9]{2}|20[0-9]{2}|2100)(?![0-9])")


def export_year(rel: Path) -> int:
    """The year of an export at ``rel`` (relative to the root): a ``YEAR`` folder above it, else the one year its
    name holds. Earth Engine puts no year in the file, so without either the file cannot be placed in time."""
    folders = [int(d) for d in rel.parts[:-1] if _YEAR.match(d) and 1900 <= int(d) <= 2100]
    if folders:
        return folders[-1]
    named = {int(m) for m in _NAME_YEAR.findall(rel.stem)}
    if len(named) == 1:
        return named.pop()
    raise GeoError(f"AEF export {rel}: cannot tell its year ({'several years' if named else 'no year'} in its "
                   f"name): put it under a YEAR/ folder, name it like aef_2024_....tif, or list it in an index")


def utm_zone_of(epsg: int | None) -> str:
    """'31N' for EPSG:32631, '37S' for EPSG:32737, '' for any other CRS (ranked after a point's own zone)."""
    if epsg and 32601 <= epsg <= 32660:
        return f"{epsg - 32600}N"
    if epsg and 32701 <= epsg <= 32760:
        return f"{epsg - 32700}S"
    return ""


def load_index(root: str, index: str | None = None, cache_dir: Path | None = None,
               progress: bool = False, http=None) -> TileIndex:
    """The index for ``root``: an explicit file, else ``root/aef_index.{parquet,csv}``, else a header scan.

    Over HTTP (``root`` or ``index`` an ``http(s)://`` URL) the index file is fetched once into the cache
    (again only when its size changes) with ``http`` (an :class:`~fusar_gpt.geo.aef_http.HttpClient`)."""
    root = str(root)
    if index is None and is_http(root):
        index = _fetch_root_index(root, cache_dir, http)
    elif index is not None and is_http(str(index)):
        index = _fetch_index(str(index), cache_dir, http)
    if index is None and not is_remote(root):
        for name in INDEX_NAMES:
            cand = f"{root.rstrip('/')}/{name}"
            if _exists(cand):
                index = cand
                break
    if index is not None:
        index = str(index)
        if not _exists(index):
            raise GeoError(f"AEF index {index} is not a local file (download the bucket's aef_index.parquet "
                           f"once and pass its path)")
        cache_file = cache_path(f"{root}|{index}|{_signature(index)}", cache_dir, "index.npz")
        if cache_file and cache_file.exists():
            try:
                return TileIndex.load_npz(cache_file)
            except (OSError, ValueError, KeyError):
                pass
        tiles = read_index_file(index, root)
        if cache_file:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tiles.save_npz(cache_file)
        return tiles
    if is_remote(root):
        raise GeoError(f"AEF root {root} is remote: pass --index LOCAL_COPY_OF/aef_index.parquet (--aef-index in "
                       f"build, ask and serve; headers of a remote bucket are not scanned)")
    if not os.path.isdir(root):
        raise GeoError(f"AEF root {root} is not a directory")
    return scan_tiles(root, cache_dir, progress=progress)


def _fetch_index(url: str, cache_dir, http) -> str:
    """A remote index file as a local copy in the cache (kept while the remote size is unchanged)."""
    client = http if http is not None else HttpClient()
    name = url.rsplit("/", 1)[-1].split("?")[0]
    suffix = ".parquet" if name.endswith(".parquet") else ".csv"
    size = client.size(url)
    local = cache_path(f"{url}|{size}", cache_dir, f"aef_index{suffix}")
    if local is None:  # caching off: a private temporary copy
        local = Path(tempfile.mkdtemp(prefix="fusar-aef-index-")) / f"aef_index{suffix}"
    if not local.exists() or local.stat().st_size != size:
        with atomic_path(local, suffix) as tmp, open(tmp, "wb") as fh:
            client.download(url, fh)
    return str(local)


def _fetch_root_index(root: str, cache_dir, http) -> str:
    for name in INDEX_NAMES:
        try:
            return _fetch_index(f"{root.rstrip('/')}/{name}", cache_dir, http)
        except RemoteError as err:
            if err.status != 404:
                raise
    raise GeoError(f"AEF root {root} has no {' or '.join(INDEX_NAMES)} (HTTP 404): pass --index (--aef-index in "
                   f"build, ask and serve) with a local copy or the URL of the bucket's aef_index.parquet")


def _exists(path: str) -> bool:
    return not is_remote(path) and os.path.exists(path)


def _signature(path: str) -> str:
    if is_remote(path):
        return "remote"
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"
