"""AEF over HTTP: bytes and wall time of three ways to get a dataset's anchors, as ratios measured in one run.

Layout (``--layout archive``, the default: the public archive's geometry). ``--tiles 2`` tiles of ``--tile-px
8192`` px at 10 m (82 km across), 64 int8 bands, bottom-up, ZSTD, band-planar ``--block-px 1024`` blocks and
overviews, as the bucket stores them; one UTM zone. Each is a coastal tile: its eastern ``--sea-share 0.25`` is
open sea (nodata -128; the coastline on a block edge). SAR ship and harbour datasets cluster around ports,
which lie tens of km apart: ``--sites-per-tile 1`` port per tile, ``--sigma-m`` inland of its coast, and
``--chips 300`` chips of ``--chip-m 1000`` m (100 AEF px; a 333-1000 px SAR chip at 1-3 m) whose centres scatter
around their port with ``--sigma-m 1000``; windows get ``--margin 4`` px. Land pixels hold real AEF vectors
(shared/data/aef_samples, 2880 of them) in 4-px fields with every third pixel drawn afresh (real embeddings
vary pixel to pixel; uniform patches would compress to nothing). ``--layout scattered`` is the earlier
figure's layout: 4 tiles of 4096 px, 6 sites, chips of 0.3-1.5 km scattered with sigma 1.5 km, no sea.

What is written and what is measured (``--blocks touched``, the default). Writing a whole tile takes ~8 min
on 2 shared cores (4 GiB of codes to compress), so only the block positions that the chips' windows touch
get land content; the tile's other positions are written as nodata. Its geometry, header and every block
a window or a chip reads are therefore real, and the window and per-chip bytes are MEASURED (what the
loopback server sent). The whole-tile bytes are COMPUTED from measured block sizes: the file's own header
and written blocks, each untouched land position counted at the mean measured size of the land positions
written in this run (all 64 bands), and overviews at the share of a fully written land reference tile
(1024 px, same content, with overviews) measured in this run. ``--blocks all`` writes every block and
downloads the whole tiles for real (the dry run does, and checks the computed figure against it).

window:    ``aef pull`` (windows around the chips; each block fetched once) then local sampling.
whole:     ``aef pull --whole-tiles`` (the tiles the chips touch) then local sampling: computed or measured.
per-chip:  ``AEFStore(REMOTE)``: every chip's nodes read over HTTP as it is sampled (no copy kept).
Served by tests/aef_server.py on loopback, each answer delayed by ``--latency`` seconds (10 ms, a near cloud
region). Bytes are what the server sent (headers and index included); anchors (8 x 8 per chip, 2024) are
checked identical between the ways. Medians over ``--repeats``, each from an empty local root and a new client.

Usage: python benchmarks/aef_pull.py [--layout archive|scattered] [--chips N] [--tile-px PX] [--block-px PX]
       [--tiles N] [--sites-per-tile F] [--chip-m M[,M]] [--sigma-m M] [--margin PX] [--sea-share F]
       [--blocks touched|all] [--latency S] [--repeats N] [--json] [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the loopback bucket server lives with the tests

from fusar_gpt.geo.aef import AEFStore, quantize, to_lonlat  # noqa: E402
from fusar_gpt.geo.aef_http import HttpClient  # noqa: E402
from fusar_gpt.geo.aef_plan import Footprint, block_pieces, footprint_box, merge_boxes  # noqa: E402
from fusar_gpt.geo.aef_pull import pull  # noqa: E402
from fusar_gpt.geo.aef_tiles import tile_origin, write_tile_pieces  # noqa: E402
from tests.aef_server import serve, write_url_index  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "aef_samples"
LON, LAT, YEAR, RES = 4.52, 43.59, 2024, 10.0


@dataclasses.dataclass
class Layout:
    tile_px: int = 8192
    block_px: int = 1024
    tiles: int = 2
    sites_per_tile: float = 1.0
    chips: int = 300
    chip_m: tuple = (1000.0, 1000.0)  # side, drawn uniformly between the two
    sigma_m: float = 1000.0
    margin: int = 4
    sea_share: float = 0.25


LAYOUTS = {
    "archive": Layout(),
    "scattered": Layout(tile_px=4096, tiles=4, sites_per_tile=1.5, chip_m=(300.0, 1500.0), sigma_m=1500.0,
                        sea_share=0.0),
}
DRY = Layout(tile_px=128, block_px=64, tiles=4, sites_per_tile=1.0, chips=12, chip_m=(200.0, 400.0), sigma_m=200.0,
             sea_share=0.5)


def real_codes() -> np.ndarray:
    rows = []
    for f in sorted(SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            rows += [[float(r[f"A{i:02d}"]) for i in range(64)] for r in csv.DictReader(fh)]
    return quantize(np.array(rows))


class World:
    """Tile geometry (tile k at column k % cols, row k // cols of an adjacent grid), coasts, ports and chips."""

    def __init__(self, lay: Layout, seed: int = 1):
        self.lay = lay
        self.zone, self.epsg, self.west, self.north = tile_origin(LON, LAT, lay.tile_px)
        self.crs, self.span = f"EPSG:{self.epsg}", lay.tile_px * RES
        self.cols = math.ceil(math.sqrt(lay.tiles))
        nb = lay.tile_px // lay.block_px
        self.coast_block = round((1 - lay.sea_share) * nb)  # block columns from here east are sea
        rng = np.random.default_rng(seed)
        sites = []
        for j in range(max(1, round(lay.sites_per_tile * lay.tiles))):
            w, n = self.corner(j % lay.tiles)
            x = (w + self.coast_block * lay.block_px * RES - lay.sigma_m if lay.sea_share > 0
                 else w + rng.uniform(0.15, 0.85) * self.span)
            sites.append((x, n - rng.uniform(0.15, 0.85) * self.span))
        sites = np.array(sites)
        site = np.arange(lay.chips) % len(sites)
        side = rng.uniform(lay.chip_m[0], lay.chip_m[1], lay.chips)
        rows = math.ceil(lay.tiles / self.cols)
        cx = np.clip(sites[site, 0] + rng.normal(0, lay.sigma_m, lay.chips), self.west + side,
                     self.west + self.cols * self.span - side)
        cy = np.clip(sites[site, 1] + rng.normal(0, lay.sigma_m, lay.chips), self.north - rows * self.span + side,
                     self.north - side)
        lon0, lat0 = to_lonlat(self.crs, cx - side / 2, cy - side / 2)
        lon1, lat1 = to_lonlat(self.crs, cx + side / 2, cy + side / 2)
        self.fps = [Footprint((float(a), float(b), float(c), float(d)), YEAR, f"chip {k}")
                    for k, (a, b, c, d) in enumerate(zip(lon0, lat0, lon1, lat1))]

    def corner(self, k: int) -> tuple[float, float]:
        return self.west + (k % self.cols) * self.span, self.north - (k // self.cols) * self.span

    def transform(self, k: int) -> Affine:
        w, n = self.corner(k)
        return Affine(RES, 0.0, w, 0.0, RES, n - self.span)  # bottom-up, as the bucket

    def touched(self, k: int) -> set[tuple[int, int]]:
        """(block row, block col), as stored, of every block a window of tile k reads (the pull's own planning)."""
        lay = self.lay
        boxes = [footprint_box(fp.bbox, self.crs, self.transform(k), lay.tile_px, lay.tile_px, lay.margin)
                 for fp in self.fps]
        merged = merge_boxes([b for b in boxes if b is not None], 32)
        return {(p.r0 // lay.block_px, p.c0 // lay.block_px) for b in merged
                for p in block_pieces(b, (lay.block_px, lay.block_px))}

    def is_land(self, bcol: int) -> bool:
        return bcol < self.coast_block


def land_codes(pool: np.ndarray, n: int, rng) -> np.ndarray:
    fields = rng.integers(0, len(pool), (n // 4, n // 4))
    idx = np.kron(fields, np.ones((4, 4), int))
    fresh = rng.random((n, n)) < 1 / 3
    idx[fresh] = rng.integers(0, len(pool), int(fresh.sum()))
    return np.ascontiguousarray(pool[idx].transpose(2, 0, 1))


def block_bytes(path, level: int | None = None) -> np.ndarray:
    """Stored bytes of every block position [rows, cols] of one level (all bands summed), from the TIFF tags."""
    opts = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **opts) as ds:
        bh, bw = ds.block_shapes[0]
        ny, nx = -(-ds.height // bh), -(-ds.width // bw)
        out = np.zeros((ny, nx), np.int64)
        for b in range(1, ds.count + 1):
            for y in range(ny):
                for x in range(nx):
                    out[y, x] += int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=b) or 0)
    return out


def overview_bytes(path) -> int:
    with rasterio.open(path) as ds:
        levels = len(ds.overviews(1))
    return sum(int(block_bytes(path, k).sum()) for k in range(levels))


def write_world(world: World, root: Path, blocks: str, seed: int = 0) -> dict:
    """The chip tiles (land content where ``blocks`` says) and the land reference tile; their measured sizes."""
    lay, pool = world.lay, real_codes()
    rng = np.random.default_rng(seed)
    nb, bp = lay.tile_px // lay.block_px, lay.block_px
    tiles = []
    for k in range(lay.tiles):
        touched = world.touched(k)
        content = {(r, c) for r in range(nb) for c in range(nb) if world.is_land(c)
                   and (blocks == "all" or (r, c) in touched)}
        pieces = ((Window(c * bp, r * bp, bp, bp), land_codes(pool, bp, rng)) for r, c in sorted(content))
        path = root / str(YEAR) / world.zone / f"t{k}.tiff"
        write_tile_pieces(path, pieces, width=lay.tile_px, height=lay.tile_px, crs=world.crs,
                          transform=world.transform(k), block_size=bp)  # untouched positions: nodata
        tiles.append({"path": path, "touched": touched, "content": content})
    ref = root.parent / "reference.tiff"  # one fully written land block position, with overviews
    write_tile_pieces(ref, [(Window(0, 0, bp, bp), land_codes(pool, bp, rng))], width=bp, height=bp,
                      crs=world.crs, transform=world.transform(0), block_size=bp)
    ref_full = int(block_bytes(ref).sum())
    land = [ref_full]
    for t in tiles:
        t["full"] = block_bytes(t["path"])
        land += [int(t["full"][r, c]) for r, c in t["content"]]
    ov_share = overview_bytes(ref) / ref_full
    land_mean = float(np.mean(land))
    for t in tiles:  # the whole tile as the bucket would hold it, from the sizes just measured
        est = t["full"].astype(float)
        for r in range(nb):
            for c in range(nb):
                if world.is_land(c) and (r, c) not in t["content"]:
                    est[r, c] = land_mean
        size = t["path"].stat().st_size
        header = size - int(t["full"].sum()) - overview_bytes(t["path"])
        t.update(size=size, header=header, computed=header + est.sum() * (1 + ov_share))
    return {"tiles": tiles, "land_block_bytes": round(land_mean), "reference_block_bytes": ref_full,
            "overview_share": round(ov_share, 4)}


def sample_all(store: AEFStore, fps) -> np.ndarray:
    return np.stack([store.sample(fp.bbox, fp.year, grid=8).features for fp in fps])


def run(layout: str = "archive", blocks: str = "touched", latency: float = 0.01, repeats: int = 3,
        dry_run: bool = False, **overrides) -> dict:
    lay = dataclasses.replace(DRY if dry_run else LAYOUTS[layout], **overrides)
    if dry_run:  # the same code paths on a tiny world, whole tiles written and downloaded, in a few seconds
        blocks, latency, repeats = "all", 0.0, 1
    if lay.tile_px % lay.block_px or not 0 <= lay.sea_share < 1 or lay.chips < 1 or lay.tiles < 1:
        raise ValueError(f"bad layout {lay}")
    world = World(lay)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bucket = tmp / "bucket" / "annual"
        t0 = time.perf_counter()
        built = write_world(world, bucket, blocks)
        res = {"layout": "dry" if dry_run else layout, **dataclasses.asdict(lay), "blocks": blocks,
               "latency_s": latency, "repeats": repeats, "dry_run": dry_run,
               "world_write_s": round(time.perf_counter() - t0, 1),
               **{k: built[k] for k in ("land_block_bytes", "reference_block_bytes", "overview_share")},
               "touched_positions": [len(t["touched"]) for t in built["tiles"]],
               "positions_per_tile": (lay.tile_px // lay.block_px) ** 2}
        with serve(tmp / "bucket") as srv:
            url = f"{srv.url}/annual"
            index = write_url_index(bucket, url, into=tmp / "index")
            srv.faults.slow = latency
            ways = ["window", "per_chip"] + (["whole"] if blocks == "all" else [])
            got, runs = {}, {w: {} for w in ways}
            for r in range(repeats):
                for way in ways:
                    srv.log.clear()
                    client = HttpClient(parallel=8)
                    t0 = time.perf_counter()
                    if way == "per_chip":
                        feats = sample_all(AEFStore(url, index=index, cache_dir=tmp / f"c{r}{way}", http=client),
                                           world.fps)
                        extra = {}
                    else:
                        out = tmp / f"local-{way}-{r}"
                        info = pull(url, out, world.fps, index=index, whole_tiles=way == "whole", workers=4,
                                    margin=lay.margin, progress=False, http=client, cache_dir=tmp / f"c{r}{way}")
                        feats = sample_all(AEFStore(out, cache_dir=False), world.fps)
                        extra = {"files": len(info["written"]), "retries": info["retries"],
                                 "planned_bytes": info["bytes_to_fetch"], "tiles_touched": len(info["written"])
                                 if way == "whole" else len({p.split("__")[0] for p in info["written"]}),
                                 "local_bytes": sum(p.stat().st_size for p in out.rglob("*.tiff"))}
                    seconds = time.perf_counter() - t0
                    for key, v in (("seconds", seconds), ("bytes", srv.bytes_sent()), ("requests", len(srv.log))):
                        runs[way].setdefault(key, []).append(v)
                    runs[way].update(extra)
                    got[way] = feats
        identical = all(np.array_equal(got["window"], got[w], equal_nan=True) for w in ways)
        for v in runs.values():
            for k in ("seconds", "bytes", "requests"):
                v[k] = statistics.median(v[k])
            v["seconds"] = round(v["seconds"], 3)
        touched = runs["window"]["tiles_touched"]
        used = [t for t in built["tiles"] if t["touched"]]
        assert len(used) == touched, (len(used), touched)
        computed = round(sum(t["computed"] for t in used))
        if "whole" not in runs:  # not downloaded: the whole tiles' bytes as computed from measured block sizes
            runs["whole"] = {"bytes": computed, "computed": True}
        runs["whole"]["computed_bytes"] = computed
        w = runs["window"]
        res.update(runs, identical=identical,
                   valid_node_share=round(float(np.isfinite(got["window"]).all(-1).mean()), 3),
                   per_chip_bytes_per_chip=round(runs["per_chip"]["bytes"] / lay.chips),
                   bytes_ratio_whole_vs_window=round(runs["whole"]["bytes"] / w["bytes"], 2),
                   bytes_ratio_per_chip_vs_window=round(runs["per_chip"]["bytes"] / w["bytes"], 2),
                   time_ratio_per_chip_vs_window=round(runs["per_chip"]["seconds"] / w["seconds"], 2),
                   time_ratio_whole_vs_window=(round(runs["whole"]["seconds"] / w["seconds"], 2)
                                               if "seconds" in runs["whole"] else None))
    cpu = platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    res["machine"] = (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                      f"GDAL {rasterio.__gdal_version__}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="archive", help="preset the settings below start from")
    for name, kind, what in (("tile-px", int, "tile side in 10 m pixels"), ("block-px", int, "block side in pixels"),
                             ("tiles", int, "tiles"), ("sites-per-tile", float, "ports (sites) per tile"),
                             ("chips", int, "chips"), ("sigma-m", float, "spread of chip centres around a port, m"),
                             ("margin", int, "window margin, pixels"), ("sea-share", float, "share of a tile at sea")):
        p.add_argument(f"--{name}", type=kind, help=f"{what} (default: the layout's)")
    p.add_argument("--chip-m", help="chip side in metres, or MIN,MAX (default: the layout's)")
    p.add_argument("--blocks", choices=["touched", "all"], default="touched",
                   help="write land content only where windows read (whole tiles computed) or everywhere (measured)")
    p.add_argument("--latency", type=float, default=0.01, help="seconds the server waits before each answer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="a tiny world, one repeat, no latency: the code paths")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    over = {f.name: getattr(a, f.name) for f in dataclasses.fields(Layout)
            if f.name != "chip_m" and getattr(a, f.name, None) is not None}
    if a.chip_m:
        sides = [float(v) for v in a.chip_m.split(",")]
        over["chip_m"] = (sides[0], sides[-1])
    r = run(a.layout, a.blocks, a.latency, a.repeats, a.dry_run, **over)
    if a.json:
        print(json.dumps(r))
        return
    mib = 2 ** 20
    print(f"AEF over HTTP ({r['layout']}): {r['chips']} chips around {round(r['sites_per_tile'] * r['tiles'])} "
          f"port(s), {r['tiles']} tiles of {r['tile_px']} px in {r['block_px']}-px blocks, sea share "
          f"{r['sea_share']}, blocks read per tile {r['touched_positions']} of {r['positions_per_tile']}; "
          f"{r['latency_s'] * 1000:.0f} ms per answer, median of {r['repeats']}")
    for way in ("window", "whole", "per_chip"):
        v = r[way]
        if v.get("computed"):
            print(f"  {way:8s} {v['bytes'] / mib:8.1f} MiB (computed from measured block sizes)")
        else:
            print(f"  {way:8s} {v['bytes'] / mib:8.1f} MiB in {v['requests']:6.0f} requests, {v['seconds']:7.2f} s")
    print(f"  bytes: whole/window {r['bytes_ratio_whole_vs_window']}x, per-chip/window "
          f"{r['bytes_ratio_per_chip_vs_window']}x; time: per-chip/window {r['time_ratio_per_chip_vs_window']}x; "
          f"valid nodes {r['valid_node_share']}; identical anchors: {r['identical']}")


if __name__ == "__main__":
    main()
