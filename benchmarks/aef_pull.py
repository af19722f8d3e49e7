"""AEF over HTTP: bytes and wall time of three ways to get a dataset's anchors, as ratios measured in one run.

World: 4 bucket-layout tiles (int8, 64 bands, bottom-up, ZSTD, band-planar 1024-px blocks; 4096 px by default,
the bucket's are 8192) of one UTM zone, filled with real AEF vectors (shared/data/aef_samples) in 4-px
fields with every third pixel drawn afresh (real embeddings vary pixel to pixel; uniform patches would
compress to nothing). Served by tests/aef_server.py on loopback, each answer delayed by ``--latency``
seconds (default 10 ms, a near cloud region; 0 measures the CPU alone). Chips: ``--chips`` footprints of
0.3-1.5 km (SAR chips of 224-504 px at 1-3 m) around ``--sites`` sites, as a dataset of harbours and
airfields is laid out; all in 2024, sampled on 8 x 8 grids.

window:    ``aef pull`` (windows around the chips, their blocks fetched in parallel) then local sampling.
whole:     ``aef pull --whole-tiles`` (the tiles the chips touch, byte for byte) then local sampling.
per-chip:  ``AEFStore(REMOTE)``: every chip's nodes read over HTTP as it is sampled (no copy kept).
Bytes are what the server sent (body bytes, headers and index included); the anchors of the three are
checked to be identical. Medians over ``--repeats``, each from an empty local root and a new client.

Usage: python benchmarks/aef_pull.py [--chips 300] [--sites 6] [--tile 4096] [--latency 0.01] [--repeats 3]
       [--json] [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the loopback bucket server lives with the tests

from fusar_gpt.geo.aef import AEFStore, quantize, to_lonlat  # noqa: E402
from fusar_gpt.geo.aef_http import HttpClient  # noqa: E402
from fusar_gpt.geo.aef_plan import Footprint  # noqa: E402
from fusar_gpt.geo.aef_pull import pull  # noqa: E402
from fusar_gpt.geo.aef_tiles import tile_origin, write_tile  # noqa: E402
from tests.aef_server import serve, write_url_index  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "aef_samples"
LON, LAT, YEAR = 4.52, 43.59, 2024


def real_codes() -> np.ndarray:
    rows = []
    for f in sorted(SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            rows += [[float(r[f"A{i:02d}"]) for i in range(64)] for r in csv.DictReader(fh)]
    return quantize(np.array(rows))


def build_bucket(root: Path, tile: int, block: int, seed: int = 0):
    """2 x 2 tiles; returns (epsg, west, north, span) of the whole area."""
    rng = np.random.default_rng(seed)
    pool = real_codes()
    zone, epsg, west, north = tile_origin(LON, LAT, tile)
    span = tile * 10.0
    for ty in range(2):
        for tx in range(2):
            fields = rng.integers(0, len(pool), (tile // 4, tile // 4))
            idx = np.kron(fields, np.ones((4, 4), int))
            fresh = rng.random((tile, tile)) < 1 / 3
            idx[fresh] = rng.integers(0, len(pool), int(fresh.sum()))
            codes = np.ascontiguousarray(pool[idx].transpose(2, 0, 1))
            write_tile(root / str(YEAR) / zone / f"t{ty}{tx}.tiff", codes, crs=f"EPSG:{epsg}", west=west + tx * span,
                       north=north - ty * span, block_size=block)
    return epsg, west, north, 2 * span


def chips(n: int, sites: int, area, seed: int = 1) -> list[Footprint]:
    epsg, west, north, span = area
    rng = np.random.default_rng(seed)
    cx = west + rng.uniform(0.15, 0.85, sites) * span
    cy = north - rng.uniform(0.15, 0.85, sites) * span
    site = np.arange(n) % sites
    side = rng.uniform(300, 1500, n)
    x0 = np.clip(cx[site] + rng.normal(0, 1500, n), west + 100, west + span - 1700)
    y1 = np.clip(cy[site] + rng.normal(0, 1500, n), north - span + 1700, north - 100)
    lon0, lat0 = to_lonlat(f"EPSG:{epsg}", x0, y1 - side)
    lon1, lat1 = to_lonlat(f"EPSG:{epsg}", x0 + side, y1)
    return [Footprint((float(a), float(b), float(c), float(d)), YEAR, f"chip {k}")
            for k, (a, b, c, d) in enumerate(zip(lon0, lat0, lon1, lat1))]


def sample_all(store: AEFStore, fps) -> np.ndarray:
    return np.stack([store.sample(fp.bbox, fp.year, grid=8).features for fp in fps])


def run(chips_n: int = 300, sites: int = 6, tile: int = 4096, block: int = 1024, latency: float = 0.01,
        repeats: int = 3, dry_run: bool = False) -> dict:
    if dry_run:  # the same code paths on a tiny world, in a few seconds
        chips_n, sites, tile, block, latency, repeats = 12, 2, 256, 128, 0.0, 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        area = build_bucket(tmp / "bucket" / "annual", tile, block)
        world_s = time.perf_counter() - t0
        fps = chips(chips_n, sites, area)
        res = {"chips": chips_n, "sites": sites, "tile_px": tile, "block_px": block, "latency_s": latency,
               "repeats": repeats, "world_write_s": round(world_s, 1), "dry_run": dry_run,
               "bucket_bytes": sum(p.stat().st_size for p in (tmp / "bucket").rglob("*.tiff"))}
        with serve(tmp / "bucket") as srv:
            url = f"{srv.url}/annual"
            index = write_url_index(tmp / "bucket" / "annual", url, into=tmp / "index")
            srv.faults.slow = latency
            ways = {"window": {}, "whole": {}, "per_chip": {}}
            got = {}
            for r in range(repeats):
                for way in ways:
                    srv.log.clear()
                    client = HttpClient(parallel=8)
                    t0 = time.perf_counter()
                    if way == "per_chip":
                        feats = sample_all(AEFStore(url, index=index, cache_dir=tmp / f"c{r}{way}", http=client), fps)
                        extra = {}
                    else:
                        out = tmp / f"local-{way}-{r}"
                        info = pull(url, out, fps, index=index, whole_tiles=way == "whole", workers=4,
                                    progress=False, http=client, cache_dir=tmp / f"c{r}{way}")
                        feats = sample_all(AEFStore(out, cache_dir=False), fps)
                        extra = {"files": len(info["written"]), "retries": info["retries"],
                                 "local_bytes": sum(p.stat().st_size for p in out.rglob("*.tiff"))}
                    seconds = time.perf_counter() - t0
                    ways[way].setdefault("seconds", []).append(seconds)
                    ways[way].setdefault("bytes", []).append(srv.bytes_sent())
                    ways[way].setdefault("requests", []).append(len(srv.log))
                    ways[way].update(extra)
                    got[way] = feats
        identical = all(np.array_equal(got["window"], got[w], equal_nan=True) for w in ("whole", "per_chip"))
        for v in ways.values():
            for k in ("seconds", "bytes", "requests"):
                v[k] = statistics.median(v[k])
            v["seconds"] = round(v["seconds"], 3)
        w = ways["window"]
        valid = float(np.isfinite(got["window"]).all(-1).mean())
        res.update(ways, identical=identical, valid_node_share=round(valid, 3),
                   bytes_ratio_whole_vs_window=round(ways["whole"]["bytes"] / w["bytes"], 2),
                   bytes_ratio_per_chip_vs_window=round(ways["per_chip"]["bytes"] / w["bytes"], 2),
                   time_ratio_whole_vs_window=round(ways["whole"]["seconds"] / w["seconds"], 2),
                   time_ratio_per_chip_vs_window=round(ways["per_chip"]["seconds"] / w["seconds"], 2))
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
    p.add_argument("--chips", type=int, default=300)
    p.add_argument("--sites", type=int, default=6)
    p.add_argument("--tile", type=int, default=4096, help="tile side in pixels (10 m); the bucket's are 8192")
    p.add_argument("--block", type=int, default=1024, help="block side in pixels (the bucket's: 1024)")
    p.add_argument("--latency", type=float, default=0.01, help="seconds the server waits before each answer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="a tiny world, one repeat, no latency: the code paths")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a.chips, a.sites, a.tile, a.block, a.latency, a.repeats, a.dry_run)
    if a.json:
        print(json.dumps(r))
        return
    mib = 2 ** 20
    print(f"AEF over HTTP: {r['chips']} chips around {r['sites']} sites, 4 tiles of {r['tile_px']} px "
          f"({r['bucket_bytes'] / mib:.0f} MiB), {r['latency_s'] * 1000:.0f} ms per answer, median of {r['repeats']}")
    for way in ("window", "whole", "per_chip"):
        v = r[way]
        print(f"  {way:8s} {v['bytes'] / mib:8.1f} MiB in {v['requests']:6.0f} requests, {v['seconds']:7.2f} s")
    print(f"  bytes: whole/window {r['bytes_ratio_whole_vs_window']}x, per-chip/window "
          f"{r['bytes_ratio_per_chip_vs_window']}x; time: whole/window {r['time_ratio_whole_vs_window']}x, "
          f"per-chip/window {r['time_ratio_per_chip_vs_window']}x; identical anchors: {r['identical']}")


if __name__ == "__main__":
    main()
