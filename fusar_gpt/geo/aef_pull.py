"""Pull the AEF pixels a set of footprints needs from a remote root into a local one.

Why: the public bucket holds ~300k tiles of 8192 x 8192 x 64 bytes; a dataset of a few hundred SAR
chips needs a few blocks of a few of them. ``pull`` plans the windows (:mod:`.aef_plan`), fetches exactly
their blocks (parallel, checked, retried range reads: :mod:`.aef_http`), and writes each window as a
tile of its own in the public layout (same ``{year}/{zone}/`` folders, int8, bottom-up, nodata -128,
64 bands, band-planar blocks of the source's size) that keeps the geotransform of its window, plus an
index. ``AEFStore(local)`` then gives byte-identical anchors to ``AEFStore(remote)`` for those footprints.

Each block of a tile is fetched at most once per pull, however many of the tile's windows share it (it is
kept in memory until the last of them is read), and the planned bytes count it once.

Resumable: a window file appears only when complete (staged in a hidden folder, then renamed), and a re-run
skips windows that a local file (a window or the whole tile) already holds; the staging folders a killed
pull left behind are swept first (``aef_tiles.sweep_temps``). ``whole_tiles=True`` copies the tiles byte for
byte instead (what a mirror does).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import GeoError
from .aef import AEFStore
from .aef_codes import DIM
from .aef_http import HttpClient, RemoteError, is_http
from .aef_paths import is_remote
from .aef_plan import (
    Box,
    Footprint,
    block_pieces,
    footprint_box,
    local_windows,
    merge_boxes,
    tile_tail,
    window_name,
)
from .aef_read import TileReader
from .aef_remote_tile import block_ranges
from .aef_tiles import staging_dir, sweep_temps, write_index, write_tile_pieces
from .transforms import window_transform

INDEX_NAME = "aef_index.parquet"


@dataclass
class TilePlan:
    path: str                 # the remote tile (as the index re-roots it)
    year: int
    zone: str
    file: str
    boxes: list[Box] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)
    ranges: list[frozenset] = field(default_factory=list)  # (offset, length) of the stored blocks each window needs
    size: int = 0             # the whole file, bytes
    footprints: int = 0

    @property
    def fetch_bytes(self) -> list[int]:
        """Stored (compressed) bytes of the blocks each window needs, on its own."""
        return [sum(n for _, n in r) for r in self.ranges]

    def new_bytes(self) -> list[int]:
        """Bytes each missing window adds to the pull: its blocks that no earlier missing window of this tile
        fetches (a block two windows share is fetched once). Present windows add nothing."""
        seen: set = set()
        out = []
        for r, present in zip(self.ranges, self.present):
            fresh = set() if present else r - seen
            seen |= fresh
            out.append(sum(n for _, n in fresh))
        return out

    def local(self, box: Box | None = None) -> str:
        return f"{self.year}/{self.zone}/{window_name(self.file, box) if box else self.file}"


@dataclass
class PullPlan:
    remote: str
    local: str
    tiles: list[TilePlan]
    footprints: int
    years: list[int]
    problems: list[dict]
    whole_tiles: bool

    def as_dict(self) -> dict:
        tiles = []
        for t in self.tiles:
            if self.whole_tiles:
                wins = [{"local": t.local(), "bytes": t.size, "new_bytes": 0 if all(t.present) else t.size,
                         "present": all(t.present)}]
            else:
                wins = [{"window": b.as_list(), "local": t.local(b), "pixels": b.area, "raw_bytes": b.area * DIM,
                         "bytes": n, "new_bytes": m, "present": p}
                        for b, n, m, p in zip(t.boxes, t.fetch_bytes, t.new_bytes(), t.present)]
            tiles.append({"tile": t.path, "year": t.year, "zone": t.zone, "footprints": t.footprints,
                          "tile_bytes": t.size, "bytes_to_fetch": sum(w["new_bytes"] for w in wins), "windows": wins})
        todo = [w for t in tiles for w in t["windows"] if not w["present"]]
        return {"remote": self.remote, "local": self.local, "footprints": self.footprints, "years": self.years,
                "tiles": tiles, "windows": sum(len(t["windows"]) for t in tiles), "to_fetch": len(todo),
                "bytes_to_fetch": sum(t["bytes_to_fetch"] for t in tiles),
                "whole_tile_bytes": sum(t["tile_bytes"] for t in tiles), "problems": self.problems}


def plan_pull(store: AEFStore, local, footprints: list[Footprint], *, years=None, margin: int = 4, gap: int = 32,
              whole_tiles: bool = False, index_name: str | None = None) -> PullPlan:
    """Tiles and windows of ``store`` (the remote) that ``footprints`` need, in the years asked (each footprint's
    own year when ``years`` is None), clipped to the store's years as sampling clips them."""
    if margin < 0 or gap < 0:
        raise GeoError(f"margin and gap must be >= 0 pixels, got {margin} and {gap}")
    local = Path(local)
    problems: list[dict] = []
    wanted: dict[int, list[tuple[int, Footprint]]] = {}  # tile index -> (year, footprint)
    used_years: set[int] = set()
    for fp in footprints:
        asked = list(years) if years else [fp.year]
        if asked == [None]:
            problems.append({"image": fp.source, "reason": "no acquisition year (pass --years)"})
            continue
        for y in sorted({store.resolve_year(a) for a in asked}):
            used_years.add(y)
            hits = store.index.candidates(y, *fp.bbox)
            if not len(hits):
                problems.append({"image": fp.source, "reason": f"no AEF tile of {y} reaches its footprint"})
            for k in hits:
                wanted.setdefault(int(k), []).append((y, fp))
    plans = []
    for k in sorted(wanted, key=lambda i: str(store.index.paths[i])):
        path = str(store.index.paths[k])
        _, zone, file = tile_tail(path)
        tile = _open(store, path, index_name)
        try:
            _check_matches(store, k, tile, index_name)
            plan = TilePlan(path, int(store.index.years[k]), zone, file, footprints=len(wanted[k]))
            plan.size = _size(store, path)
            boxes = [footprint_box(fp.bbox, tile.crs, tile.ds.transform, tile.width, tile.height, margin)
                     for _, fp in wanted[k]]
            plan.boxes = merge_boxes([b for b in boxes if b is not None], gap)
            if not plan.boxes:
                continue  # the WGS84 boxes met, the pixels do not
            whole = (local / plan.local()).exists()
            have = local_windows(local / str(plan.year) / zone, file)
            plan.present = [whole or any(h.contains(b) for h in have) for b in plan.boxes]
            plan.ranges = [frozenset(block_ranges(tile.ds, _window(b), tile.order)) for b in plan.boxes]
            if whole_tiles:
                plan.present = [whole] * len(plan.boxes)
            plans.append(plan)
        finally:
            tile.close()
    return PullPlan(store.root, str(local), plans, len(footprints), sorted(used_years), problems, whole_tiles)


def _open(store: AEFStore, path: str, index_name) -> TileReader:
    """A remote tile's reader; 403/404 say which tile and that the index may belong to another root."""
    try:
        tile = TileReader(path, store.http)
    except RemoteError as err:
        if err.status in (403, 404):
            what = "not found (HTTP 404)" if err.status == 404 else "access denied (HTTP 403)"
            raise GeoError(f"AEF tile {path}: {what}; the index {index_name or store.index.source} lists it under "
                           f"{store.root}: is it the index of that root?") from None
        raise
    if tile.dtype != "int8":
        tile.close()
        raise GeoError(f"{path} holds {tile.dtype} values (an Earth Engine export?): use such files in place "
                       f"(AEFStore reads them); pull copies bucket tiles")
    return tile


def _check_matches(store: AEFStore, k: int, tile: TileReader, index_name) -> None:
    """The tile's own header must lie where the index says: an index of another root (or another version of
    the bucket) would otherwise fetch the wrong place's pixels without any error."""
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(tile.ds.crs, "EPSG:4326", *tile.ds.bounds, densify_pts=21)
    iw, is_, ie, in_ = (float(v) for v in store.index.bounds[k])
    inter = max(min(e, ie) - max(w, iw), 0) * max(min(n, in_) - max(s, is_), 0)
    union = (e - w) * (n - s) + (ie - iw) * (in_ - is_) - inter
    if union <= 0 or inter / union < 0.5:
        got, said = tuple(round(v, 4) for v in (w, s, e, n)), tuple(round(v, 4) for v in (iw, is_, ie, in_))
        raise GeoError(f"AEF index {index_name or store.index.source} does not match {store.root}: tile "
                       f"{store.index.paths[k]} covers lon/lat {got} but the index says {said}")


def _size(store: AEFStore, path: str) -> int:
    if is_http(path):
        return store.http.size(path)
    return os.path.getsize(path) if not is_remote(path) and os.path.exists(path) else 0


def _window(box: Box):
    from rasterio.windows import Window

    return Window(box.c0, box.r0, box.width, box.height)


# ----------------------------------------------------------------------------------------------- fetching
def execute(plan: PullPlan, store: AEFStore, *, workers: int = 4, progress: bool = True, since: dict | None = None
            ) -> dict:
    """Fetch what ``plan`` lists as missing, write the local index, and say what it cost (requests, bytes and
    retries since ``since``, a snapshot of ``store.http.stats``; default: since this call)."""
    local = Path(plan.local)
    swept = sweep_temps(local)  # what a killed pull left half-written
    todo = [t for t in plan.tiles if not all(t.present)]
    total = sum(t.size if plan.whole_tiles else sum(t.new_bytes()) for t in todo)
    bar = None
    if progress:
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="pulling AEF", leave=False)
    lock = threading.Lock()
    before = since or store.http.stats.as_dict()
    store.http.on_bytes = (lambda n: (lock.acquire(), bar.update(n), lock.release())) if bar is not None else None
    t0 = time.perf_counter()
    written: list[str] = []
    try:
        with ThreadPoolExecutor(max(int(workers), 1), thread_name_prefix="aef-pull") as pool:
            for files in pool.map(lambda t: _fetch_tile(t, store, local, plan.whole_tiles), todo):
                written += files
    finally:
        store.http.on_bytes = None
        if bar is not None:
            bar.close()
    if written or not (local / INDEX_NAME).exists():
        if any(local.glob("*/*/*.tif*")):
            write_index(local, INDEX_NAME)
    after = store.http.stats.as_dict()
    return {**{k: v for k, v in plan.as_dict().items() if k != "tiles"}, "written": written, "swept": swept,
            "fetched_bytes": after["bytes"] - before["bytes"], "requests": after["requests"] - before["requests"],
            "retries": after["retries"] - before["retries"],
            "retry_causes": {k: v - before["retry_causes"].get(k, 0) for k, v in after["retry_causes"].items()
                             if v - before["retry_causes"].get(k, 0)},
            "seconds": round(time.perf_counter() - t0, 3)}


def _fetch_tile(t: TilePlan, store: AEFStore, local: Path, whole: bool) -> list[str]:
    if whole:
        dest = local / t.local()
        if is_remote(t.path) and not is_http(t.path):
            raise GeoError(f"{t.path}: whole tiles are copied from http(s) or local roots (use the bucket's "
                           f"https:// address instead of {store.root})")
        with staging_dir(dest.parent) as tmp:
            staged = Path(tmp) / "whole.tiff"
            if is_http(t.path):
                with open(staged, "wb") as fh:
                    store.http.download(t.path, fh)
            else:
                shutil.copyfile(t.path, staged)
            os.replace(staged, dest)
        return [t.local()]
    tile = TileReader(t.path, store.http)
    out = []
    # blocks fetched but not yet used up survive a kill here (see RemoteTile.spill); keyed by the remote size
    spill = local / t.local().rsplit("/", 1)[0] / f".aef-blocks-{Path(t.path).stem}-{tile.remote.size}" \
        if tile.remote is not None else None
    try:
        block = tile.ds.block_shapes[0]
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)
            tile.remote.spill = spill
        todo = [b for b, present in zip(t.boxes, t.present) if not present]
        pieces = {b: block_pieces(b, block) for b in todo}
        needs = {(b, p): sorted(set(block_ranges(tile.ds, _window(p), tile.order))) for b in todo for p in pieces[b]}
        uses = Counter(r for rs in needs.values() for r in rs)  # how many pieces still need each block

        def read(box: Box, p: Box):
            data = tile.read(_window(p), keep=True)
            for r in needs[(box, p)]:
                uses[r] -= 1
            tile.release([r for r in needs[(box, p)] if uses[r] == 0])  # no later window needs it: free it
            return _window(Box(p.c0 - box.c0, p.r0 - box.r0, p.c1 - box.c0, p.r1 - box.r0)), data

        for box in todo:
            write_tile_pieces(local / t.local(box), (read(box, p) for p in pieces[box]), width=box.width,
                              height=box.height, crs=tile.ds.crs, block_size=block[0], overviews=False,
                              transform=window_transform(tile.ds.transform, box.c0, box.r0))
            out.append(t.local(box))
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)  # every window of the tile is written: nothing to resume
    finally:
        tile.close()
    return out


def pull(remote, to, footprints: list[Footprint], *, index=None, years=None, margin: int = 4, gap: int = 32,
         whole_tiles: bool = False, workers: int = 4, dry_run: bool = False, progress: bool = True,
         http: HttpClient | None = None, cache_dir=None, problems: list[dict] | None = None) -> dict:
    """Plan and (unless ``dry_run``) fetch; returns the plan (dry run) or what was done, as a dict."""
    if not footprints:
        raise GeoError("nothing to pull: no footprint (every image was unreadable or had no georeference)")
    http = http or HttpClient(parallel=8)
    since = http.stats.as_dict()  # what planning costs (index, headers, their retries) is reported too
    store = AEFStore(remote, index=index, cache_dir=cache_dir, http=http)
    plan = plan_pull(store, to, footprints, years=years, margin=margin, gap=gap, whole_tiles=whole_tiles,
                     index_name=str(index) if index else None)
    plan.problems = (problems or []) + plan.problems
    if dry_run:
        return {"dry_run": True, **plan.as_dict(), "http": store.http.stats.as_dict()}
    return {"dry_run": False, **execute(plan, store, workers=workers, progress=progress, since=since)}
