"""``make_world``: the sites' AEF tiles, one SAR GeoTIFF per scene, and the COCO and world JSON files."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
from affine import Affine
from tqdm import tqdm

from ...geo.aef_tiles import write_index, write_tile
from ...io_atomic import write_json
from .canvas import Canvas
from .landcover import noise
from .samples import DW_CLASSES, MAT_DW, MATERIALS, OPEN_SEA, load_samples, material_db
from .sites import AEF_RES, Site, View, build_site
from .targets import CATEGORIES, PLANE_SUBTYPES, SHIP_SUBTYPES, place_distractors, place_targets

VERSION = 1
LOOKS = 4              # speckle: intensity = mean * Gamma(L, 1/L)
NOISE_FLOOR = 10 ** (-25 / 10)  # thermal noise equivalent sigma0
ATTRIBUTION = ("The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind. "
               "Backscatter statistics contain modified Copernicus Sentinel data 2024. Dynamic World CC-BY 4.0.")


def _resolve_year(year: int, years: list[int]) -> int:
    """Index of the nearest AEF year (the earlier on a tie), the rule the AEF store applies."""
    y = np.array(years)
    return int(np.argmin(np.abs(y - year) * 2 + (y > year)))


def _scene(k: int, seed: int, site: Site, years: list[int], acq: tuple[int, int], image_px, pixel_m,
           db_floor: float, max_targets: int = 5, clutter: float = 1.0, min_targets: int = 0):
    rng = np.random.default_rng([seed, 1, k])
    n = site.mats[0].shape[0]
    p = round(float(rng.uniform(*pixel_m)), 2)
    w, h = (int(rng.integers(image_px[0], image_px[1] + 1)) for _ in range(2))
    year = int(rng.integers(acq[0], acq[1] + 1))
    start = dt.datetime(year, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)),
                                                   seconds=int(rng.choice([5, 17]) * 3600 + rng.integers(0, 3600)))
    t = _resolve_year(year, years)
    span, ex, ey = n * AEF_RES, w * p, h * p
    if len(site.hot) and rng.random() < 0.75:
        f = site.hot[rng.integers(len(site.hot))]
        cx = (f % n + 0.5) * AEF_RES + rng.uniform(-0.3, 0.3) * ex
        cy = (f // n + 0.5) * AEF_RES + rng.uniform(-0.3, 0.3) * ey
    else:
        cx, cy = rng.uniform(0, span), rng.uniform(0, span)
    x0 = round(float(np.clip(cx - ex / 2, AEF_RES, span - ex - AEF_RES)), 1)
    y0 = round(float(np.clip(cy - ey / 2, AEF_RES, span - ey - AEF_RES)), 1)
    view = View(p, x0, y0, w, h, n)

    # land cover at the image's pixels, with edges roughened by a few metres (no 10 m staircase)
    jit = max(2.0, 8.0 / p)
    gx = (np.arange(w) + 0.5)[None, :] + 3.0 / p * noise(rng, h, w, jit)
    gy = (np.arange(h) + 0.5)[:, None] + 3.0 / p * noise(rng, h, w, jit)
    idx = view.tile_index(gx, gy)
    mat = site.mats[t].ravel()[idx]
    sigma0 = np.exp(site.db[t].ravel()[idx].astype(np.float64) * (math.log(10) / 10))

    cv = Canvas(h, w)
    occupied: list = []
    anns = place_targets(rng, cv, view, site.mats[t], mat, occupied, max_targets, min_targets)
    place_distractors(rng, cv, view, mat, site.kind, occupied, clutter)
    shadow = np.clip(cv.raster(cv.shadow, False), 0, 1)
    bg = (sigma0 * (1 - 0.85 * shadow) + cv.raster(cv.fill, True) + db_floor)
    inten = bg * rng.standard_gamma(LOOKS, (h, w)) / LOOKS + cv.raster(cv.points, True) + cv.streaks
    amp = np.sqrt(inten).astype(np.float32)

    dw = MAT_DW[mat]
    share = np.bincount(dw.ravel(), minlength=len(DW_CLASSES)) / dw.size
    order = sorted(np.flatnonzero(share >= 0.0005), key=lambda c: (-share[c], c))
    rb, cb = np.linspace(0, h, 4).round().astype(int), np.linspace(0, w, 4).round().astype(int)
    grid = [DW_CLASSES[int(np.argmax(np.bincount(dw[rb[i]:rb[i + 1], cb[j]:cb[j + 1]].ravel(),
                                                 minlength=len(DW_CLASSES))))] for i in range(3) for j in range(3)]
    meta = {"width": w, "height": h, "site": site.name, "kind": site.kind, "date": start.date().isoformat(),
            "pixel_size": p, "landcover": {DW_CLASSES[c]: round(float(share[c]), 3) for c in order},
            "landcover_grid": grid, "open_sea": round(float(np.mean(mat == OPEN_SEA)), 3)}
    transform = Affine(p, 0.0, site.west + x0, 0.0, -p, site.north - y0)
    return amp, meta, anns, transform, start.strftime("%Y-%m-%dT%H:%M:%S")


def _write_scene(path: Path, amp: np.ndarray, epsg: int, transform, when: str, site: str) -> None:
    import rasterio

    h, w = amp.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=f"EPSG:{epsg}",
                       transform=transform, compress="deflate", zlevel=1, predictor=3) as ds:
        ds.write(amp, 1)
        ds.update_tags(ACQUISITION_START_TIME=when, UNITS="amplitude", POLARISATION="VV", LOOKS=str(LOOKS),
                       SENSOR="synthetic", SITE=site)
        ds.set_band_description(1, "VV amplitude")


# ------------------------------------------------------------------------------------------------------ world
def _check(scenes, sites, years, image_px, pixel_m, tile_px, block_size):
    if int(scenes) != scenes or scenes < 0:
        raise ValueError(f"scenes must be a non-negative integer, got {scenes!r}")
    if int(sites) != sites or sites < 1:
        raise ValueError(f"sites must be a positive integer, got {sites!r}")
    years = sorted({int(y) for y in years})
    if not years or years[0] < 2017 or years[-1] > 2100:
        raise ValueError(f"years must list AEF years (2017 on), got {years!r}")
    lo, hi = (int(v) for v in image_px)
    if not 32 <= lo <= hi:
        raise ValueError(f"image_px must be (min, max) with 32 <= min <= max, got {image_px!r}")
    pl, ph = (float(v) for v in pixel_m)
    if not 0 < pl <= ph:
        raise ValueError(f"pixel_m must be (min, max) metres with 0 < min <= max, got {pixel_m!r}")
    if tile_px % 16 or tile_px < 64 or block_size % 16:
        raise ValueError(f"tile_px (>= 64) and block_size must be multiples of 16, got {tile_px}, {block_size}")
    if hi * ph + 2 * AEF_RES > tile_px * AEF_RES * 0.9:
        raise ValueError(f"images of up to {hi} px at {ph} m do not fit a site tile of {tile_px} px at 10 m; "
                         f"raise tile_px or lower image_px / pixel_m")
    return int(scenes), int(sites), years, (lo, hi), (pl, ph)


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / "world.json").is_file():
            raise ValueError(f"{out} is not empty and holds no synthetic world (world.json); refusing to write there")
        for sub in ("aef", "images"):  # a previous synthetic world: replace it, leftovers would confuse the index
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)


def _dump(path: Path, obj) -> None:
    write_json(path, obj, indent=1)


def make_world(out, scenes: int = 40, seed: int = 0, *, sites: int = 4, years=(2019, 2023), image_px=(256, 320),
               pixel_m=(1.0, 3.0), tile_px: int = 512, block_size: int = 512, max_targets: int = 5,
               clutter: float = 1.0, min_targets: int = 0, progress: bool = False) -> dict:
    """Write a synthetic SAR + AEF world under ``out`` (see the module docstring) and return a summary.

    ``years`` are the AEF years written; acquisition years run from 3 years before the first to 2 after the
    last, so the AEF year has to be clipped for some scenes. Scene ``k`` lies at site ``k % sites``.
    ``min_targets``/``max_targets`` (ships and planes per class and scene, each drawn from min..max wherever the
    class has room: water for ships, runways for planes) and ``clutter`` (density of the unannotated
    look-alikes, 1 = realistic) set how hard the world is; the defaults are the realistic world.
    """
    t_start = time.perf_counter()
    scenes, sites, years, image_px, pixel_m = _check(scenes, sites, years, image_px, pixel_m, tile_px, block_size)
    if int(max_targets) != max_targets or not 0 <= max_targets <= 20:
        raise ValueError(f"max_targets must be an integer in 0..20, got {max_targets!r}")
    if int(min_targets) != min_targets or not 0 <= min_targets <= max_targets:
        raise ValueError(f"min_targets must be an integer in 0..max_targets ({max_targets}), got {min_targets!r}")
    if not 0 <= float(clutter) <= 10:
        raise ValueError(f"clutter must be a number in [0, 10], got {clutter!r}")
    seed = int(seed)
    samples = load_samples()
    db_table = material_db(samples)
    out = Path(out)
    _prepare_out(out)

    site_objs = []
    for i in range(sites):
        site = build_site(i, seed, tile_px, years, samples, db_table)
        for t, year in enumerate(years):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_tile(out / "aef" / str(year) / site.zone / f"synth_{site.name}.tiff",
                           np.ascontiguousarray(site.codes[t].transpose(2, 0, 1)), crs=f"EPSG:{site.epsg}",
                           west=site.west, north=site.north, pixel_size=AEF_RES, bottom_up=True,
                           block_size=block_size, overviews=True)
        site.codes = []  # written; free the memory
        site_objs.append(site)
    index = write_index(out / "aef")

    acq = (years[0] - 3, years[-1] + 2)
    images, annotations = [], []
    counts = {"ship": dict.fromkeys(SHIP_SUBTYPES, 0), "plane": dict.fromkeys(PLANE_SUBTYPES, 0)}
    bar = tqdm(total=scenes, desc="synthetic scenes", unit="scene") if progress else None
    for k in range(scenes):
        site = site_objs[k % sites]
        amp, meta, anns, transform, when = _scene(k, seed, site, years, acq, image_px, pixel_m, NOISE_FLOOR,
                                                  int(max_targets), float(clutter), int(min_targets))
        name = f"scene_{k:05d}.tif"
        _write_scene(out / "images" / name, amp, site.epsg, transform, when, site.name)
        images.append({"id": k + 1, "file_name": name, **meta})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, **a})
            counts[CATEGORIES[a["category_id"] - 1]["name"]][a["subtype"]] += 1
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()

    _dump(out / "annotations.json", {"images": images, "annotations": annotations, "categories": list(CATEGORIES)})
    site_info = [{"name": s.name, "kind": s.kind, "zone": s.zone, "epsg": s.epsg, "lon": s.lon, "lat": s.lat,
                  "utm_west": s.west, "utm_north": s.north, "size_m": tile_px * AEF_RES} for s in site_objs]
    world = {"version": VERSION, "seed": seed,
             "parameters": {"scenes": scenes, "sites": sites, "years": years, "acquisition_years": list(acq),
                            "image_px": list(image_px), "pixel_m": list(pixel_m), "tile_px": tile_px,
                            "block_size": block_size, "looks": LOOKS,
                            "min_targets": int(min_targets), "max_targets": int(max_targets),
                            "clutter": float(clutter)},
             "sites": site_info,
             "backscatter_db": {m: round(float(v), 3) for m, v in zip(MATERIALS, db_table)},
             "categories": {"ship": list(SHIP_SUBTYPES), "plane": list(PLANE_SUBTYPES)},
             "attribution": ATTRIBUTION}
    _dump(out / "world.json", world)
    return {"scenes": scenes, "sites": site_info, "objects": counts,
            "annotations": len(annotations), "empty_images": scenes - len({a["image_id"] for a in annotations}),
            "years": years, "acquisition_years": list(acq),
            "paths": {"root": str(out), "aef": str(out / "aef"), "index": str(index), "images": str(out / "images"),
                      "annotations": str(out / "annotations.json"), "world": str(out / "world.json")},
            "seconds": round(time.perf_counter() - t_start, 2)}
