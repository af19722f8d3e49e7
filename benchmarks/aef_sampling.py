"""AEF anchor sampling: footprints/s of AEFStore vs the naive way, as a ratio measured in one run.

World: 4 tiles in the public layout (int8, 64 bands, bottom-up, ZSTD, 1024-px blocks), two per
UTM zone on both sides of the 31N/32N edge at 6E, filled with patches of the real AEF vectors of
shared/data/aef_samples and some nodata (sea). 1,000 random footprints of 0.3-3 km.

Ours:  ``AEFStore.sample(bbox, year, grid)``: one window read per tile per footprint, open handles
       kept in an LRU, vectorised coordinate transforms.
Naive: for every node, reopen the tile and call ``rasterio.sample`` on that one point (trying the
       node's own zone first, then the other tiles, as ours does), then de-quantise.
Also:  the same per-node reads on files kept open (what the single window read alone buys).
Both are checked to return identical anchors on the footprints the naive way is timed on.

Usage: python benchmarks/aef_sampling.py [--footprints 1000] [--naive 40] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from fusar_gpt.geo.aef import AEFStore, dequantize, lonlat_to, natural_zone, quantize
from fusar_gpt.geo.aef_index import parse_zone
from fusar_gpt.geo.aef_tiles import utm_epsg, write_tile

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "aef_samples"
EDGE_LON, LAT = 6.0, 45.0


def real_codes() -> np.ndarray:
    rows = []
    for f in sorted(SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            rows += [[float(r[f"A{i:02d}"]) for i in range(64)] for r in csv.DictReader(fh)]
    return quantize(np.array(rows))


def build_world(root: Path, tile: int = 1024, seed: int = 0) -> tuple[float, float, float, float]:
    """Write the 4 tiles; return the lon/lat box footprints are drawn from."""
    rng = np.random.default_rng(seed)
    pool = real_codes()
    span = tile * 10.0
    for zone, sign in (("31N", -1), ("32N", 1)):
        epsg = utm_epsg(zone)
        x, y = lonlat_to(f"EPSG:{epsg}", np.array([EDGE_LON]), np.array([LAT]))
        # each zone's tiles reach 20% of a tile over the edge, as neighbouring zones' tiles do
        west = float(x[0]) - 0.2 * span if sign > 0 else float(x[0]) - 0.8 * span
        for k in range(2):
            north = float(y[0]) + span - k * span
            patches = rng.integers(0, len(pool), (tile // 32, tile // 32))
            codes = pool[np.kron(patches, np.ones((32, 32), int))].transpose(2, 0, 1).copy()
            codes[:, : tile // 8, : tile // 4] = -128  # a stretch of open sea: nodata
            write_tile(root / "2024" / zone / f"t{k}.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north)
    dlat = span / 111_000.0
    dlon = span / (111_000.0 * np.cos(np.radians(LAT)))
    return EDGE_LON - 0.7 * dlon, LAT - 0.9 * dlat, EDGE_LON + 0.7 * dlon, LAT + 0.9 * dlat


def random_footprints(n: int, box, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side_km = rng.uniform(0.3, 3.0, n)
    dlat = side_km / 111.0
    dlon = side_km / (111.0 * np.cos(np.radians(LAT)))
    lon0 = rng.uniform(box[0], box[2] - dlon)
    lat0 = rng.uniform(box[1], box[3] - dlat)
    return np.stack([lon0, lat0, lon0 + dlon, lat0 + dlat], 1)


def naive_sample(store: AEFStore, bbox, grid: int, year: int = 2024, handles: dict | None = None) -> np.ndarray:
    """One reopen + ``rasterio.sample`` per node. Returns features [S, 64] (NaN where missing).

    With ``handles`` (a dict) datasets are kept open instead: per-node reads without reopening,
    which isolates what the single window read buys from what keeping files open buys.
    """
    lon_min, lat_min, lon_max, lat_max = bbox
    out = np.full((grid * grid, 64), np.nan, np.float32)
    years = store.index.years
    for i in range(grid):
        for j in range(grid):
            lon = lon_min + j / (grid - 1) * (lon_max - lon_min)
            lat = lat_max - i / (grid - 1) * (lat_max - lat_min)
            zone, north = natural_zone(np.array([lon]), np.array([lat]))
            order = sorted(np.flatnonzero(years == year),
                           key=lambda k: parse_zone(str(store.index.zones[k]))[0] != zone[0])
            for k in order:
                path = store.index.paths[k]
                if handles is None:
                    ds = rasterio.open(path)
                else:
                    ds = handles.get(path) or handles.setdefault(path, rasterio.open(path))
                x, y = lonlat_to(f"EPSG:{ds.crs.to_epsg()}", np.array([lon]), np.array([lat]))
                row, col = ds.index(x[0], y[0])
                inside = 0 <= row < ds.height and 0 <= col < ds.width
                v = dequantize(next(ds.sample([(x[0], y[0])])).astype(np.int8)) if inside else None
                if handles is None:
                    ds.close()
                if v is not None and np.isfinite(v).all():
                    out[i * grid + j] = v
                    break
    return out


def run(footprints: int = 1000, naive: int = 40, repeats: int = 3, tile: int = 1024, grids=(8, 16)) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "aef"
        t0 = time.perf_counter()
        box = build_world(root, tile=tile)
        world_s = time.perf_counter() - t0
        boxes = random_footprints(footprints, box)
        result = {"footprints": footprints, "repeats": repeats, "tile_px": tile,
                  "world_write_s": round(world_s, 2), "grids": {}}
        for grid in grids:
            store = AEFStore(root, cache_dir=False)
            times, valid = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                anchors = [store.sample(b, 2024, grid=grid) for b in boxes]
                times.append(time.perf_counter() - t0)
                valid = sum(a.n_valid for a in anchors)
            ours_fps = footprints / statistics.median(times)
            n_naive = max(3, naive * 64 // (grid * grid))  # the naive way's cost grows with the node count
            t0 = time.perf_counter()
            slow = [naive_sample(store, b, grid) for b in boxes[:n_naive]]
            naive_fps = n_naive / (time.perf_counter() - t0)
            same = all(np.array_equal(s, a.features, equal_nan=True) for s, a in zip(slow, anchors[:n_naive]))
            handles: dict = {}
            open_slow = [naive_sample(store, b, grid, handles=handles) for b in boxes[:n_naive]]  # warm the cache
            t0 = time.perf_counter()
            open_slow = [naive_sample(store, b, grid, handles=handles) for b in boxes[:n_naive]]
            kept_open_fps = n_naive / (time.perf_counter() - t0)
            same = same and all(np.array_equal(s, a.features, equal_nan=True)
                                for s, a in zip(open_slow, anchors[:n_naive]))
            for ds in handles.values():
                ds.close()
            result["grids"][f"{grid}x{grid}"] = {
                "ours_footprints_per_s": round(ours_fps, 1), "naive_footprints_per_s": round(naive_fps, 2),
                "per_node_kept_open_footprints_per_s": round(kept_open_fps, 1),
                "ratio_vs_kept_open": round(ours_fps / kept_open_fps, 1),
                "ratio": round(ours_fps / naive_fps, 1), "identical_to_naive": bool(same), "naive_timed_on": n_naive,
                "valid_node_share": round(valid / (footprints * grid * grid), 3)}
            store.close()
    cpu = platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result["machine"] = (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                         f"GDAL {rasterio.__gdal_version__}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--footprints", type=int, default=1000)
    p.add_argument("--naive", type=int, default=40,
                   help="footprints the (slow) naive way is timed on at 8x8 (fewer at larger grids)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tile", type=int, default=1024, help="tile side in pixels (10 m)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a.footprints, a.naive, a.repeats, a.tile)
    if a.json:
        print(json.dumps(r))
        return
    print(f"AEF sampling, {r['footprints']} footprints, 4 tiles of {r['tile_px']} px in 2 UTM zones "
          f"(world written in {r['world_write_s']} s)")
    for g, v in r["grids"].items():
        print(f"  grid {g}: ours {v['ours_footprints_per_s']} footprints/s, naive {v['naive_footprints_per_s']}/s, "
              f"ratio {v['ratio']}x; per-node reads on kept-open files {v['per_node_kept_open_footprints_per_s']}/s, "
              f"ratio {v['ratio_vs_kept_open']}x; identical on {v['naive_timed_on']}: {v['identical_to_naive']}, "
              f"valid nodes {v['valid_node_share']}")


if __name__ == "__main__":
    main()
