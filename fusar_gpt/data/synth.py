"""A synthetic but physically plausible SAR world, written in the REAL file formats.

``make_world(out)`` writes what a user of the real pipeline brings, so tests, the demo and new users run the
real data path offline:

- ``OUT/aef/{year}/{zone}/*.tiff`` + ``OUT/aef/aef_index.csv``: AEF tiles in the bucket layout (int8, 64 bands,
  bottom-up, nodata -128 over open sea), holding REAL AlphaEarth vectors drawn from ``shared/data/aef_samples``
  by land-cover class, one vector per small parcel, mostly stable between years;
- ``OUT/images/scene_NNNNN.tif``: float32 linear-amplitude GeoTIFFs (UTM, north-up, 1-3 m pixels) with
  ``ACQUISITION_START_TIME`` and ``UNITS`` tags; backscatter per land-cover class is the mean real Sentinel-1
  VV of that class in the samples, with L-look gamma speckle; ships and planes are bright point-scatterer
  structures with sinc sidelobes; buildings and oil tanks are unannotated look-alikes;
- ``OUT/annotations.json`` (COCO, boxes in pixels, with ``subtype`` and land-cover extras) and ``OUT/world.json``.

SAR alone is made partly ambiguous on purpose: runways, aprons and quays are as dark as calm water, and oil tanks
and sheds stand on dark quays next to water, so a small bright blob on a dark background may be a fishing boat or
a tank; the land cover (hence AEF) tells them apart. Every random draw comes from
``np.random.default_rng([seed, stream, index, ...])``: the same seed gives the same world, byte for byte in the
JSON files and pixel for pixel in the rasters.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..geo import GeoError
from ..geo.aef import DIM, NODATA, dequantize, lonlat_to, quantize, to_lonlat
from ..geo.aef_tiles import tile_origin, write_index, write_tile

VERSION = 1
DW_CLASSES = ("water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built", "bare",
              "snow_and_ice")
CATEGORIES = ({"id": 1, "name": "ship"}, {"id": 2, "name": "plane"})
SHIP_SUBTYPES = ("cargo", "tanker", "fishing")
PLANE_SUBTYPES = ("fighter", "airliner", "cargo_plane")
SITE_KINDS = ("port", "airfield", "coastal_farmland", "river_town")
LOOKS = 4              # speckle: intensity = mean * Gamma(L, 1/L)
TARMAC_DB = -18.0      # runways, aprons and quays: as dark as calm water on purpose
NOISE_FLOOR = 10 ** (-25 / 10)  # thermal noise equivalent sigma0
AEF_RES = 10.0
ATTRIBUTION = ("The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind. "
               "Backscatter statistics contain modified Copernicus Sentinel data 2024. Dynamic World CC-BY 4.0.")

# Materials of the synthetic land-cover map: finer than Dynamic World where SAR or AEF coverage differs.
MATERIALS = ("open_sea", "water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built",
             "bare", "fallow", "runway", "quay")
OPEN_SEA, WATER, TREES, GRASS, FLOODED, CROPS, SHRUB, BUILT, BARE, FALLOW, RUNWAY, QUAY = range(len(MATERIALS))
MAT_DW = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7], np.int64)  # material -> Dynamic World class
_OFFSET_SD = np.array([0.8, 0.6, 1.0, 1.0, 1.0, 1.2, 1.0, 1.2, 1.0, 1.0, 0.4, 0.4])  # dB, per parcel

# The sites of the first cycle sit in four UTM zones, one of them southern; later cycles are shifted north.
_TEMPLATES = (("port", "31N", 4.50, 43.60), ("airfield", "32N", 9.50, 54.00),
              ("coastal_farmland", "10N", -122.30, 37.80), ("river_town", "56S", 151.20, -33.90))


# ------------------------------------------------------------------------------------------------ real samples
def samples_dir() -> Path:
    """``$FUSAR_GPT_AEF_SAMPLES``, else ``shared/data/aef_samples`` beside the repository root."""
    env = os.environ.get("FUSAR_GPT_AEF_SAMPLES")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aef_samples"


@dataclass(frozen=True)
class Samples:
    """The real AEF vectors (as stored int8 codes) with their Dynamic World class and Sentinel-1 backscatter."""

    codes: np.ndarray   # int8 [N, 64]
    labels: np.ndarray  # int64 [N], Dynamic World class id
    s1_vv: np.ndarray   # float64 [N], dB
    s1_vh: np.ndarray   # float64 [N], dB

    def mean_vv(self) -> dict[str, float]:
        """Mean S1 VV (dB) of each class present."""
        return {DW_CLASSES[c]: float(self.s1_vv[self.labels == c].mean()) for c in np.unique(self.labels)}

    def label_of(self, codes) -> np.ndarray:
        """Dynamic World class of each vector [..., 64] (int8 codes, or floats that are quantised first) found in
        the pool; -1 where it is not a pool vector (nodata included)."""
        table = _code_table(self.codes.tobytes(), self.labels.tobytes())
        codes = np.asarray(codes)
        codes = np.ascontiguousarray(quantize(codes) if codes.dtype.kind == "f" else codes.astype(np.int8))
        flat = codes.reshape(-1, DIM)
        return np.array([table.get(row.tobytes(), -1) for row in flat], np.int64).reshape(codes.shape[:-1])


@lru_cache(maxsize=4)
def _code_table(codes: bytes, labels: bytes) -> dict[bytes, int]:
    c = np.frombuffer(codes, np.int8).reshape(-1, DIM)
    lab = np.frombuffer(labels, np.int64)
    return {row.tobytes(): int(k) for row, k in zip(c, lab)}


def load_samples(path=None) -> Samples:
    """Read the labelled AEF sample CSVs (``A00``..``A63``, ``S1_VV``, ``S1_VH``, ``dw_label``)."""
    return _load_samples(str(Path(path) if path is not None else samples_dir()))


@lru_cache(maxsize=4)
def _load_samples(path: str) -> Samples:
    src = Path(path)
    files = sorted(src.glob("*.csv")) if src.is_dir() else [src] if src.is_file() else []
    if not files:
        raise GeoError(f"AEF reference samples not found at {src}: the synthetic world draws real AEF vectors and "
                       f"backscatter from shared/data/aef_samples beside the repository (or set "
                       f"FUSAR_GPT_AEF_SAMPLES to a folder of such CSVs)")
    vecs, labels, vv, vh = [], [], [], []
    bands = [f"A{i:02d}" for i in range(DIM)]
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (*bands, "S1_VV", "S1_VH", "dw_label") if c not in (reader.fieldnames or ())]
            if missing:
                raise GeoError(f"{f}: AEF sample CSV lacks columns {missing[:4]}")
            for row in reader:
                try:
                    vecs.append([float(row[b]) for b in bands])
                    labels.append(int(float(row["dw_label"])))
                    vv.append(float(row["S1_VV"]))
                    vh.append(float(row["S1_VH"]))
                except ValueError:
                    continue  # a row with a blank value is skipped, not guessed
    v = np.array(vecs, np.float64)
    codes = quantize(v)
    if not len(v) or np.abs(dequantize(codes) - v).max() > 1e-6:
        raise GeoError(f"{src}: sample vectors are empty or not on the int8 AEF lattice")
    return Samples(codes, np.array(labels, np.int64), np.array(vv), np.array(vh))


def material_db(samples: Samples) -> np.ndarray:
    """Mean sigma0 (dB) of each material: the real mean S1 VV of its Dynamic World class; tarmac is special."""
    means = samples.mean_vv()
    missing = [DW_CLASSES[c] for c in set(MAT_DW.tolist()) if DW_CLASSES[c] not in means]
    if missing:
        raise GeoError(f"AEF samples hold no vectors of class(es) {missing}")
    db = np.array([means[DW_CLASSES[c]] for c in MAT_DW])
    db[[RUNWAY, QUAY]] = TARMAC_DB
    return db


# ------------------------------------------------------------------------------------------ smooth random fields
def _noise(rng, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise of unit std: a normal lattice every ``cell`` pixels, smoothstep-interpolated."""
    cell = max(float(cell), 1.0)
    g = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3))

    def axis(n):
        f = (np.arange(n) + 0.5) / cell
        i = f.astype(np.int64)
        t = f - i
        return i, t * t * (3 - 2 * t)

    ri, rt = axis(h)
    ci, ct = axis(w)
    a = g[ri] * (1 - rt)[:, None] + g[ri + 1] * rt[:, None]
    out = a[:, ci] * (1 - ct) + a[:, ci + 1] * ct
    return (out / max(out.std(), 1e-9)).astype(np.float32)


def _fbm(rng, n: int, cell: float) -> np.ndarray:
    f = _noise(rng, n, n, cell) + 0.5 * _noise(rng, n, n, cell / 2) + 0.25 * _noise(rng, n, n, cell / 4)
    return f / f.std()


def _frame(n: int, angle: float, cx: float | None = None, cy: float | None = None):
    """Rotated pixel coordinates (u along ``angle``, v across) about the tile centre."""
    r, c = np.mgrid[0:n, 0:n].astype(np.float32)
    x, y = c - (n / 2 if cx is None else cx), r - (n / 2 if cy is None else cy)
    cs, sn = math.cos(angle), math.sin(angle)
    return x * cs + y * sn, -x * sn + y * cs


def _blobs(rng, n: int, classes, weights, cell: float) -> np.ndarray:
    """Blobby patches: the class whose noise (plus a bias from its weight) is largest."""
    scores = np.stack([_noise(rng, n, n, cell) + 0.4 * _noise(rng, n, n, cell / 3) for _ in classes])
    bias = 0.9 * np.log(np.asarray(weights, np.float64))
    return np.asarray(classes, np.uint8)[np.argmax(scores + bias[:, None, None].astype(np.float32), 0)]


def _fields(rng, n: int, classes, weights, size=(10.0, 35.0), hedges: float = 0.3) -> np.ndarray:
    """A rotated grid of field parcels, each of one class; some field edges are hedgerows (trees)."""
    u, v = _frame(n, rng.uniform(0, math.pi))
    fu, fv = rng.uniform(*size), rng.uniform(*size)
    iu, iv = np.floor(u / fu).astype(np.int64), np.floor(v / fv).astype(np.int64)
    iu -= iu.min()
    iv -= iv.min()
    fid = iu * (iv.max() + 1) + iv
    p = np.asarray(weights, np.float64)
    cls = np.asarray(classes, np.uint8)[rng.choice(len(classes), size=int(fid.max()) + 1, p=p / p.sum())]
    out = cls[fid]
    hedge_field = rng.random(int(fid.max()) + 1) < hedges
    edge = ((u % fu) < 1.0) | ((v % fv) < 1.0)
    out[edge & hedge_field[fid]] = TREES
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow a mask by ``steps`` pixels (alternating 4- and 8-neighbourhoods: an octagonal distance)."""
    m = mask.copy()
    for k in range(steps):
        g = m.copy()
        g[1:] |= m[:-1]
        g[:-1] |= m[1:]
        g[:, 1:] |= m[:, :-1]
        g[:, :-1] |= m[:, 1:]
        if k % 2:
            g[1:, 1:] |= m[:-1, :-1]
            g[:-1, :-1] |= m[1:, 1:]
            g[1:, :-1] |= m[:-1, 1:]
            g[:-1, 1:] |= m[1:, :-1]
        m = g
    return m


# ------------------------------------------------------------------------------------------- land-cover maps
def _port(rng, n: int) -> np.ndarray:
    mat = _blobs(rng, n, (TREES, GRASS, SHRUB, CROPS, BARE), (0.3, 0.3, 0.2, 0.15, 0.05), n / 6)
    u, v = _frame(n, rng.uniform(0, 2 * math.pi))  # u grows seaward
    c0 = rng.uniform(-0.05, 0.12) * n
    vh, hw = rng.uniform(-0.12, 0.12) * n, rng.uniform(0.2, 0.3) * n
    away = np.clip((np.abs(v - vh) - hw) / (0.06 * n), 0, 1)
    coast = c0 + _fbm(rng, n, n / 5) * 0.07 * n * away
    sea = u > coast
    harbour = np.abs(v - vh) < hw
    town_depth = rng.uniform(0.25, 0.4) * n
    town = ~sea & (u > c0 - town_depth) & (np.abs(v - vh) < hw * 1.3 + 0.05 * n * _noise(rng, n, n, n / 8))
    mat[town] = BUILT
    parks = _noise(rng, n, n, n / 12)
    mat[town & (parks > 1.1)] = TREES
    mat[town & (parks < -1.4)] = GRASS
    depth = rng.uniform(0.08, 0.16) * n
    quay = harbour & ~sea & (u > c0 - depth - rng.uniform(0.03, 0.06) * n)
    mat[quay] = QUAY
    vpos = vh - hw + rng.uniform(4, 10)
    while True:  # basins cut into the quay, separated by piers
        wb = rng.uniform(6, 14)
        if vpos + wb > vh + hw - 4:
            break
        mat[(v >= vpos) & (v < vpos + wb) & (u > c0 - depth * rng.uniform(0.6, 1.0)) & ~sea] = WATER
        vpos += wb + rng.uniform(5, 10)
    mat[~sea & ~harbour & (u > coast - rng.uniform(1, 3))] = BARE  # beach
    mat[sea] = WATER
    return mat


def _airfield(rng, n: int) -> np.ndarray:
    mat = _fields(rng, n, (CROPS, GRASS, FALLOW, TREES), (0.55, 0.2, 0.1, 0.15))
    mat[_noise(rng, n, n, n / 10) > 1.3] = TREES
    u, v = _frame(n, rng.uniform(0, math.pi))
    length, width = min(0.8 * n, rng.uniform(220, 320)), rng.uniform(4, 6)
    side = 1.0 if rng.random() < 0.5 else -1.0
    sv = v * side
    vt, ad = rng.uniform(13, 18), rng.uniform(10, 22)
    mat[(np.abs(u) < length / 2 + 12) & (sv > -22) & (sv < vt + ad + 14)] = GRASS
    mat[(np.abs(u) < length / 2) & (np.abs(v) < width / 2)] = RUNWAY
    mat[(np.abs(u) < length / 2 - 4) & (np.abs(sv - vt) < 1.6)] = RUNWAY  # parallel taxiway
    for uc in (-length / 2 + 3, length / 2 - 3, rng.uniform(-length / 4, length / 4)):
        mat[(np.abs(u - uc) < 1.6) & (sv > 0) & (sv < vt)] = RUNWAY
    for _ in range(int(rng.integers(1, 4))):  # aprons with terminals / hangars behind them
        ua, la = rng.uniform(-length / 2 + 20, length / 2 - 20), rng.uniform(14, 40)
        near = np.abs(u - ua) < la / 2
        mat[near & (sv >= vt) & (sv < vt + ad)] = RUNWAY
        mat[near & (sv >= vt + ad + 1) & (sv < vt + ad + 1 + rng.uniform(3, 8))] = BUILT
    if rng.random() < 0.5:  # a pond somewhere
        cy, cx = rng.uniform(0.1, 0.9, 2) * n
        r, c = np.mgrid[0:n, 0:n]
        pond = np.hypot(r - cy, c - cx) < rng.uniform(6, 16) * (1 + 0.25 * _noise(rng, n, n, 6))
        mat[pond & (mat != RUNWAY)] = WATER
    return mat


def _farmland(rng, n: int) -> np.ndarray:
    mat = _fields(rng, n, (CROPS, GRASS, FALLOW, TREES, SHRUB), (0.6, 0.15, 0.1, 0.05, 0.1))
    mat[_noise(rng, n, n, n / 8) > 1.4] = TREES
    u, v = _frame(n, rng.uniform(0, 2 * math.pi))
    coast = rng.uniform(0.05, 0.2) * n + _fbm(rng, n, n / 4) * 0.08 * n
    sea = u > coast
    mat[~sea & (u > coast - rng.uniform(6, 20) - 5 * _noise(rng, n, n, n / 10))] = FLOODED  # salt marsh
    mat[~sea & (u > coast - rng.uniform(1.0, 2.5))] = BARE  # beach
    creek = np.abs(v - rng.uniform(-0.3, 0.3) * n - 12 * np.sin(u / rng.uniform(15, 30))) < 1.3
    mat[creek & ~sea & (u > coast - 0.5 * n)] = WATER
    for _ in range(int(rng.integers(3, 9))):  # farmsteads
        r0, c0 = rng.integers(0, n - 5, 2)
        s = int(rng.integers(2, 5))
        block = mat[r0:r0 + s, c0:c0 + s]
        block[(block != WATER) & (block != FLOODED)] = BUILT
    mat[sea] = WATER
    return mat


def _river_town(rng, n: int) -> np.ndarray:
    mat = _fields(rng, n, (CROPS, GRASS, FALLOW, TREES, SHRUB), (0.5, 0.2, 0.1, 0.1, 0.1))
    u, v = _frame(n, rng.uniform(0, math.pi))
    dv = v - (rng.uniform(0.04, 0.1) * n * np.sin(2 * math.pi * u / rng.uniform(0.5, 1.0) / n + rng.uniform(0, 6))
              + 6 * _noise(rng, n, n, n / 4))
    width = rng.uniform(8, 18)
    river = np.abs(dv) < width / 2
    ut, radius = rng.uniform(-0.15, 0.15) * n, rng.uniform(0.18, 0.28) * n
    town = np.hypot(u - ut, dv) + 0.05 * n * _noise(rng, n, n, n / 8) < radius
    mat[town] = BUILT
    parks, lots = _noise(rng, n, n, n / 14), _noise(rng, n, n, n / 20)
    mat[town & (parks > 1.0)] = TREES
    mat[town & (parks < -1.5)] = GRASS
    mat[town & (lots > 1.7)] = BARE
    mat[town & (np.abs(dv) < width / 2 + rng.uniform(2, 4)) & (np.abs(u - ut) < 0.6 * radius)] = QUAY
    if rng.random() < 0.6:  # a small airstrip out of town
        sign = 1.0 if rng.random() < 0.5 else -1.0
        ua = -sign * rng.uniform(0.1, 0.25) * n
        u2, v2 = _frame(n, rng.uniform(0, math.pi), n / 2 + ua, n / 2 + sign * 0.3 * n)
        length = min(rng.uniform(70, 110), 0.4 * n)
        mat[(np.abs(v2) < 14) & (np.abs(u2) < length / 2 + 6)] = GRASS
        mat[(np.abs(v2) < 1.6) & (np.abs(u2) < length / 2)] = RUNWAY
        la = rng.uniform(10, 20)
        mat[(v2 >= 1.6) & (v2 < 1.6 + rng.uniform(6, 10)) & (np.abs(u2 - rng.uniform(-0.2, 0.2) * length) < la / 2)] \
            = RUNWAY
    mat[river] = WATER
    return mat


_GENERATORS = {"port": _port, "airfield": _airfield, "coastal_farmland": _farmland, "river_town": _river_town}


# ----------------------------------------------------------------------------------------------------- sites
@dataclass
class _Site:
    index: int
    name: str
    kind: str
    zone: str
    epsg: int
    west: float
    north: float
    lon: float
    lat: float
    mats: list      # per AEF year: uint8 [N, N] material map, north-up
    db: list        # per AEF year: float32 [N, N] mean sigma0 in dB
    codes: list     # per AEF year: int8 [N, N, 64]
    hot: np.ndarray  # flat indices of pixels worth centring a scene on


def _site_place(i: int, tile_px: int):
    kind, zone, lon, lat = _TEMPLATES[i % len(_TEMPLATES)]
    cycle = i // len(_TEMPLATES)
    if cycle:  # a later cycle: the same kind of place, tiles apart to the north, same zone
        from ..geo.aef_tiles import utm_epsg

        crs = f"EPSG:{utm_epsg(zone)}"
        x, y = lonlat_to(crs, np.array([lon]), np.array([lat]))
        lon2, lat2 = to_lonlat(crs, x, y + cycle * tile_px * AEF_RES * 1.5)
        lon, lat = float(lon2[0]), float(lat2[0])
    return kind, zone, lon, lat


def _build_site(i: int, seed: int, n: int, years: list[int], samples: Samples, db_table: np.ndarray) -> _Site:
    kind, zone, lon, lat = _site_place(i, n)
    zone, epsg, west, north = tile_origin(lon, lat, n, AEF_RES, zone=zone)
    rng = np.random.default_rng([seed, 0, i])
    base = _GENERATORS[kind](rng, n).astype(np.uint8)
    water = base == WATER
    far = ~_dilate(~water, int(rng.integers(30, 51)))  # more than ~300-500 m from any land: open sea, no AEF
    base[water & far] = OPEN_SEA

    # parcels: a warped grid of 3-8 px cells, split along material boundaries; one AEF vector per parcel
    cell = rng.uniform(3.5, 7.0)
    r, c = np.mgrid[0:n, 0:n].astype(np.float32)
    pr = np.floor((r + cell * 0.7 * _noise(rng, n, n, 12)) / cell).astype(np.int64) + 64
    pc = np.floor((c + cell * 0.7 * _noise(rng, n, n, 12)) / cell).astype(np.int64) + 64
    key = (pr * (n + 256) + pc) * 16 + base
    uniq, inv = np.unique(key.ravel(), return_inverse=True)
    mat_u = (uniq % 16).astype(np.int64)
    pools = [np.flatnonzero(samples.labels == k) for k in range(len(DW_CLASSES))]

    def draw(mats: np.ndarray, rng_) -> np.ndarray:
        out = np.full(len(mats), -1, np.int64)
        for m in np.unique(mats):
            if m == OPEN_SEA:
                continue
            sel = mats == m
            pool = pools[MAT_DW[m]]
            out[sel] = pool[rng_.integers(0, len(pool), int(sel.sum()))]
        return out

    offsets = rng.normal(0.0, _OFFSET_SD[mat_u])
    vec = draw(mat_u, rng)
    mats, dbs, codes = [], [], []
    for t in range(len(years)):
        if t:  # most parcels keep their vector; ~12% get another of the same class; some fields change class
            yrng = np.random.default_rng([seed, 0, i, years[t]])
            mat_u = mat_u.copy()
            swap = yrng.random(len(mat_u)) < 0.06
            to_fallow, to_crops = swap & (mat_u == CROPS), swap & (mat_u == FALLOW)
            mat_u[to_fallow], mat_u[to_crops] = FALLOW, CROPS
            redraw = (yrng.random(len(mat_u)) < 0.12) | to_fallow | to_crops
            vec = np.where(redraw, draw(mat_u, yrng), vec)
        mat = mat_u[inv].reshape(n, n).astype(np.uint8)
        q = np.concatenate([samples.codes, np.full((1, DIM), NODATA, np.int8)])[vec[inv]]  # -1 -> nodata row
        mats.append(mat)
        dbs.append((db_table[mat_u] + offsets)[inv].reshape(n, n).astype(np.float32))
        codes.append(q.reshape(n, n, DIM))
    land = (base != WATER) & (base != OPEN_SEA)
    near_water = ~land & _dilate(land, 25)
    hot = np.flatnonzero((near_water | (base == RUNWAY) | (base == QUAY)).ravel())
    clon, clat = to_lonlat(f"EPSG:{epsg}", np.array([west + n * AEF_RES / 2]), np.array([north - n * AEF_RES / 2]))
    return _Site(i, f"{kind}_{i}", kind, zone, epsg, west, north, round(float(clon[0]), 6), round(float(clat[0]), 6),
                 mats, dbs, codes, hot)


# --------------------------------------------------------------------------------------------- target shapes
def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _ship(rng, sub: str):
    """(convex body polygons, scatterers (u, v, rcs m^2), body sigma0, deck scatterer median rcs) in metres;
    u runs along the hull to the bow, v across."""
    if sub == "cargo":
        L = _u(rng, 120, 200)
        B = L / _u(rng, 6.0, 7.5)
        hull = [(-L / 2, -B / 2), (0.34 * L, -B / 2), (L / 2, 0), (0.34 * L, B / 2), (-L / 2, B / 2)]
        rows = np.arange(-0.32 * L, 0.3 * L, _u(rng, 6, 12))  # container stacks
        k = int(rng.integers(3, 6))
        uu = np.repeat(rows, k)
        vv = np.tile(np.linspace(-0.38 * B, 0.38 * B, k), len(rows))
        su, sv = [uu, -0.4 * L + rng.normal(0, 3, 6)], [vv, rng.uniform(-0.4, 0.4, 6) * B]
        rcs = [rng.lognormal(math.log(60), 0.6, len(uu)), rng.uniform(500, 3000, 6)]
        return [np.array(hull)], (np.concatenate(su), np.concatenate(sv), np.concatenate(rcs)), 0.12, 10.0
    if sub == "tanker":
        L = _u(rng, 150, 250)
        B = L / _u(rng, 4.6, 5.6)
        half = [(-L / 2, 0.44 * B), (-0.48 * L, B / 2), (0.4 * L, B / 2), (0.47 * L, 0.38 * B), (L / 2, 0.12 * B)]
        hull = [(a, -b) for a, b in half] + [(a, b) for a, b in reversed(half)]
        pipe = np.arange(-0.3 * L, 0.4 * L, 4.0)
        man = np.linspace(-0.4 * B, 0.4 * B, 7)
        su = [pipe, np.full(7, _u(rng, -0.05, 0.05) * L), -0.42 * L + rng.normal(0, 3, 8)]
        sv = [rng.normal(0, 0.5, len(pipe)), man, rng.uniform(-0.4, 0.4, 8) * B]
        rcs = [rng.uniform(20, 60, len(pipe)), rng.uniform(100, 300, 7), rng.uniform(1000, 4000, 8)]
        return [np.array(hull)], (np.concatenate(su), np.concatenate(sv), np.concatenate(rcs)), 0.08, 3.0
    L = _u(rng, 15, 35)  # fishing
    B = L / _u(rng, 2.8, 3.6)
    half = [(-L / 2, 0.42 * B), (-0.45 * L, B / 2), (0.2 * L, B / 2), (L / 2, 0)]
    hull = [(a, -b) for a, b in half] + [(a, b) for a, b in reversed(half[:-1])]
    su = np.array([0.05 * L, 0.05 * L, 0.1 * L, 0.25 * L, -0.42 * L, -0.42 * L])
    sv = np.array([-0.2 * B, 0.2 * B, 0.0, 0.0, -0.25 * B, 0.25 * B])
    rcs = np.array([_u(rng, 100, 400), _u(rng, 100, 400), _u(rng, 200, 800), 60.0, _u(rng, 40, 150), 60.0])
    return [np.array(hull)], (su, sv, rcs), 0.15, 5.0


def _plane(rng, sub: str):
    """As :func:`_ship`; u along the fuselage to the nose. Subtypes differ in size AND planform."""
    if sub == "fighter":  # 14-20 m, delta-swept wings, twin fins, bright nozzle
        L = _u(rng, 14, 20)
        b, fw = L * _u(rng, 0.6, 0.72), 0.065 * L
        polys = [[(L / 2, 0), (0.3 * L, -fw), (-L / 2, -fw), (-L / 2, fw), (0.3 * L, fw)]]
        for s in (-1, 1):
            polys.append([(0.15 * L, s * fw), (-0.28 * L, s * b / 2), (-0.36 * L, s * b / 2), (-0.33 * L, s * fw)])
            polys.append([(-0.36 * L, s * fw), (-0.46 * L, s * 0.2 * L), (-0.5 * L, s * 0.2 * L), (-0.5 * L, s * fw)])
        su = np.array([0.45 * L, 0.2 * L, -0.32 * L, -0.32 * L, -0.5 * L, -0.4 * L, -0.4 * L])
        sv = np.array([0.0, 0.0, -b / 2, b / 2, 0.0, -1.5 * fw, 1.5 * fw])
        rcs = np.array([30.0, 80.0, 40.0, 40.0, _u(rng, 100, 300), _u(rng, 100, 300), _u(rng, 100, 300)])
        return [np.array(p) for p in polys], (su, sv, rcs), 0.08, 5.0
    if sub == "airliner":  # 38-70 m, long fuselage, swept wings with engines, swept tailplane
        L = _u(rng, 38, 70)
        b, fw, sweep = L * _u(rng, 0.92, 1.05), 0.05 * L, math.tan(math.radians(_u(rng, 25, 35)))
        polys = [[(L / 2, 0), (0.42 * L, -fw), (-0.42 * L, -fw), (-L / 2, -0.4 * fw), (-L / 2, 0.4 * fw),
                  (-0.42 * L, fw), (0.42 * L, fw)]]
        tip = 0.12 * L - sweep * (b / 2 - fw)
        for s in (-1, 1):
            polys.append([(0.12 * L, s * fw), (tip, s * b / 2), (tip - 0.04 * L, s * b / 2), (-0.08 * L, s * fw)])
            t2 = -0.36 * L - sweep * 0.17 * L
            polys.append([(-0.36 * L, s * fw), (t2, s * 0.17 * L), (t2 - 0.03 * L, s * 0.17 * L), (-0.47 * L, s * fw)])
        ev = 0.33 * b / 2
        eu = 0.12 * L - sweep * (ev - fw) + 0.03 * L
        win = np.linspace(-0.4 * L, 0.4 * L, 9)
        su = np.concatenate([[eu, eu, 0.05 * L, 0.05 * L, -0.44 * L], win])
        sv = np.concatenate([[-ev, ev, -fw, fw, 0.0], np.zeros(9)])
        rcs = np.concatenate([rng.uniform(300, 1500, 2), rng.uniform(200, 800, 2), [_u(rng, 200, 600)],
                              rng.uniform(10, 40, 9)])
        return [np.array(p) for p in polys], (su, sv, rcs), 0.08, 8.0
    L = _u(rng, 24, 34)  # cargo_plane: straight high wing wider than the plane is long, four engines, T-tail
    b, fw = L * _u(rng, 1.2, 1.35), 0.075 * L
    polys = [[(L / 2, 0), (0.42 * L, -fw), (-0.3 * L, -fw), (-L / 2, -0.35 * fw), (-L / 2, 0.35 * fw),
              (-0.3 * L, fw), (0.42 * L, fw)],
             [(0.2 * L, -b / 2), (0.05 * L, -b / 2), (0.05 * L, b / 2), (0.2 * L, b / 2)],
             [(-0.42 * L, -0.22 * L), (-0.5 * L, -0.22 * L), (-0.5 * L, 0.22 * L), (-0.42 * L, 0.22 * L)]]
    su = np.array([0.24 * L] * 4 + [-0.46 * L, 0.45 * L])
    sv = np.array([-0.36 * b, -0.2 * b, 0.2 * b, 0.36 * b, 0.0, 0.0])
    rcs = np.concatenate([rng.uniform(200, 800, 4), [_u(rng, 200, 600), 50.0]])
    return [np.array(p, float) for p in polys], (su, sv, rcs), 0.08, 6.0


def _sample_polys(rng, polys, n: int):
    """``n`` points uniform over a union of convex polygons (fan triangles; overlaps get denser)."""
    tri = np.array([[p[0], p[k], p[k + 1]] for p in polys for k in range(1, len(p) - 1)], np.float64)  # [T,3,2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    t = rng.choice(len(tri), size=n, p=area / area.sum())
    a, b = rng.random(n), rng.random(n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    pts = tri[t, 0] + a[:, None] * e1[t] + b[:, None] * e2[t]
    return pts[:, 0], pts[:, 1], float(area.sum())


# ------------------------------------------------------------------------------------------------- rendering
class _Canvas:
    """Layers of one scene, accumulated as point lists and rasterised once (bilinear splat + 3-tap blur)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.fill, self.points, self.shadow = [], [], []
        self.streaks = np.zeros((h, w), np.float64)

    def raster(self, parts, blur: bool) -> np.ndarray:
        if not parts:
            return np.zeros((self.h, self.w))
        x = np.concatenate([p[0] for p in parts]) - 0.5
        y = np.concatenate([p[1] for p in parts]) - 0.5
        wt = np.concatenate([p[2] for p in parts])
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        fx, fy = x - x0, y - y0
        idx, wts = [], []
        for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xx, yy = x0 + dx, y0 + dy
            ok = (xx >= 0) & (xx < self.w) & (yy >= 0) & (yy < self.h)
            idx.append((yy * self.w + xx)[ok])
            wts.append((wt * ww)[ok])
        img = np.bincount(np.concatenate(idx), np.concatenate(wts), minlength=self.h * self.w).reshape(self.h, self.w)
        if blur:
            for axis in (0, 1):
                a = img
                img = 0.5 * a
                if axis == 0:
                    img[1:] += 0.25 * a[:-1]
                    img[:-1] += 0.25 * a[1:]
                else:
                    img[:, 1:] += 0.25 * a[:, :-1]
                    img[:, :-1] += 0.25 * a[:, 1:]
        return img

    def streak(self, x: float, y: float, peak: float, half: int = 48) -> None:
        """Range and azimuth sidelobes of a point at (x, y): sinc^2 along its row and its column."""
        for along, across, on_row in ((x, y, True), (y, x, False)):
            i, size = int(across), (self.w if on_row else self.h)
            if not 0 <= i < (self.h if on_row else self.w):
                continue
            c = int(math.floor(along))
            lo, hi = max(c - half, 0), min(c + half + 1, size)
            if lo >= hi:
                continue
            d = np.arange(lo, hi) + 0.5 - along
            val = peak * np.sinc(d) ** 2
            val[np.abs(d) < 1.0] = 0.0  # the main lobe is the point itself
            if on_row:
                self.streaks[i, lo:hi] += val
            else:
                self.streaks[lo:hi, i] += val


def _rects(rng, cv: _Canvas, cx, cy, a, b, ang, shadow_len, roof, line):
    """Buildings: rotated rectangles (half sizes a, b px) with a sigma0 ``roof``, double-bounce lines of strength
    ``line`` along the walls facing the sensor (which looks from the left, -x), and a shadow to the right."""
    k = len(cx)
    if not k:
        return
    cs, sn = np.cos(ang), np.sin(ang)
    n = np.ceil(4 * a * b * 1.2).astype(np.int64) + 4
    idx = np.repeat(np.arange(k), n)
    lu, lv = rng.uniform(-1, 1, len(idx)) * a[idx], rng.uniform(-1, 1, len(idx)) * b[idx]
    x, y = cx[idx] + lu * cs[idx] - lv * sn[idx], cy[idx] + lu * sn[idx] + lv * cs[idx]
    cv.fill.append((x, y, roof[idx] * 4 * a[idx] * b[idx] / n[idx]))
    t = rng.random(len(idx))
    swept = 4 * a * b + shadow_len * 2 * (a * np.abs(sn) + b * np.abs(cs))
    cv.shadow.append((x + t * shadow_len[idx], y, (swept / n)[idx]))
    for nu, nv, half, off in ((1, 0, b, a), (-1, 0, b, a), (0, 1, a, b), (0, -1, a, b)):
        nx = nu * cs - nv * sn  # outward normal, x component
        facing = np.clip(-nx, 0, None)
        m = np.ceil(2 * half / 0.5).astype(np.int64) + 1
        j = np.repeat(np.arange(k), m)
        s = rng.uniform(-1, 1, len(j)) * half[j]
        eu = np.where(nu != 0, nu * off[j], s)
        ev = np.where(nv != 0, nv * off[j], s)
        ex, ey = cx[j] + eu * cs[j] - ev * sn[j], cy[j] + eu * sn[j] + ev * cs[j]
        cv.points.append((ex, ey, (line * facing ** 1.5 * 2 * half / m)[j]))


def _tanks(rng, cv: _Canvas, cx, cy, r, shadow_len, line):
    """Oil tanks: a bright rim brightest on the sensor side, a dark floating roof, a crescent shadow, sidelobes."""
    k = len(cx)
    if not k:
        return
    m = np.ceil(2 * math.pi * r / 0.5).astype(np.int64) + 8
    j = np.repeat(np.arange(k), m)
    al = rng.uniform(0, 2 * math.pi, len(j))
    w = line[j] * (0.1 + 2.0 * np.clip(-np.cos(al), 0, None) ** 2) * (2 * math.pi * r[j] / m[j])
    cv.points.append((cx[j] + r[j] * np.cos(al), cy[j] + r[j] * np.sin(al), w))
    n = np.ceil(math.pi * r * r * 1.2).astype(np.int64) + 4
    i = np.repeat(np.arange(k), n)
    rr, aa = r[i] * np.sqrt(rng.random(len(i))), rng.uniform(0, 2 * math.pi, len(i))
    x, y = cx[i] + rr * np.cos(aa), cy[i] + rr * np.sin(aa)
    cv.fill.append((x, y, np.full(len(i), 0.06) * math.pi * r[i] ** 2 / n[i]))
    swept = math.pi * r * r + 2 * r * shadow_len
    cv.shadow.append((x + rng.random(len(i)) * shadow_len[i], y, (swept / n)[i]))
    for q in range(k):
        cv.streak(cx[q] - r[q], cy[q], 3.0 * line[q])


def _free(box, occupied, margin: float) -> bool:
    if not occupied:
        return True
    o = np.asarray(occupied)
    return not np.any((box[0] - margin < o[:, 2]) & (o[:, 0] < box[2] + margin)
                      & (box[1] - margin < o[:, 3]) & (o[:, 1] < box[3] + margin))


@dataclass
class _View:
    """Where a scene sits in its site: pixel size (m) and its top-left corner in metres from the tile's NW corner."""

    p: float
    x0: float
    y0: float
    w: int
    h: int
    n: int

    def tile_index(self, x, y) -> np.ndarray:
        """Flat index into the site's 10 m maps of image pixel coordinates (x, y) (continuous, 0 = left edge)."""
        c = np.clip(((self.x0 + np.asarray(x) * self.p) / AEF_RES).astype(np.int64), 0, self.n - 1)
        r = np.clip(((self.y0 + np.asarray(y) * self.p) / AEF_RES).astype(np.int64), 0, self.n - 1)
        return r * self.n + c


def _place_targets(rng, cv: _Canvas, view: _View, site_mat: np.ndarray, mat: np.ndarray, occupied: list) -> list:
    """Ships on water, planes on runways/aprons: fully inside the image, not overlapping. Returns annotations."""
    out = []
    flat = site_mat.ravel()
    for cat_id, label, subtypes, weights, allowed in (
            (1, "ship", SHIP_SUBTYPES, (0.3, 0.25, 0.45), (WATER, OPEN_SEA)),
            (2, "plane", PLANE_SUBTYPES, (0.35, 0.35, 0.3), (RUNWAY,))):
        ok = np.isin(mat, allowed)
        want = int(rng.integers(0, 6))
        if ok.mean() < 0.02 or not want:
            continue
        cand = np.flatnonzero(ok.ravel())
        for _ in range(want):
            sub = subtypes[int(rng.choice(len(subtypes), p=weights))]
            polys, (su, sv, rcs), body_sigma, deck_rcs = (_ship if label == "ship" else _plane)(rng, sub)
            verts = np.concatenate(polys)
            cu, cvv, area = _sample_polys(rng, polys, 24)
            for _attempt in range(25):
                f = cand[rng.integers(len(cand))]
                cy, cx = f // view.w + rng.random(), f % view.w + rng.random()
                th = rng.uniform(0, 2 * math.pi)
                cs, sn = math.cos(th) / view.p, math.sin(th) / view.p
                vx, vy = cx + verts[:, 0] * cs - verts[:, 1] * sn, cy + verts[:, 0] * sn + verts[:, 1] * cs
                box = (vx.min(), vy.min(), vx.max(), vy.max())
                if box[0] < 1 or box[1] < 1 or box[2] > view.w - 1 or box[3] > view.h - 1:
                    continue
                if not _free(box, occupied, 4.0):
                    continue
                px = np.concatenate([cx + 1.1 * (vx - cx), cx + cu * cs - cvv * sn, [(box[0] + box[2]) / 2]])
                py = np.concatenate([cy + 1.1 * (vy - cy), cy + cu * sn + cvv * cs, [(box[1] + box[3]) / 2]])
                if not np.isin(flat[view.tile_index(px, py)], allowed).all():
                    continue
                _draw_target(rng, cv, polys, su, sv, rcs, body_sigma, deck_rcs, area, cx, cy, cs, sn, view.p)
                occupied.append(box)
                x, y, w, h = (round(float(v), 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1]))
                out.append({"category_id": cat_id, "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
                            "subtype": sub})
                break
    return out


def _draw_target(rng, cv, polys, su, sv, rcs, body_sigma, deck_rcs, area, cx, cy, cs, sn, p):
    area_px = area / p ** 2
    n_fill = int(area_px * 1.5) + 16
    fu, fv, _ = _sample_polys(rng, polys, n_fill)
    cv.fill.append((cx + fu * cs - fv * sn, cy + fu * sn + fv * cs, np.full(n_fill, body_sigma * area_px / n_fill)))
    n_deck = int(np.clip(area / 30, 6, 300))
    du, dv, _ = _sample_polys(rng, polys, n_deck)
    u = np.concatenate([su, du])
    v = np.concatenate([sv, dv])
    s = np.concatenate([rcs, rng.lognormal(math.log(deck_rcs), 1.0, n_deck)]) / p ** 2  # sigma0 units per pixel
    x, y = cx + u * cs - v * sn, cy + u * sn + v * cs
    cv.points.append((x, y, s))
    for k in np.argsort(s)[-3:]:
        cv.streak(x[k], y[k], s[k] * 0.5)


def _distractors(rng, cv: _Canvas, view: _View, mat: np.ndarray, kind: str, occupied: list) -> None:
    """Unannotated bright look-alikes: buildings on built land, sheds and (at ports) oil tanks on quays."""
    p = view.p
    town_angle = rng.uniform(0, math.pi / 2)
    kinds = ((BUILT, 1 / 900, (8, 35), (5, 25), 80), (QUAY, 1 / 4000, (10, 30), (4, 9), 12))
    for where, per_m2, size, height, cap in kinds:
        pix = np.flatnonzero(mat.ravel() == where)
        k = min(cap, int(len(pix) * p * p * per_m2 * rng.uniform(0.6, 1.0)))
        if not k:
            continue
        f = pix[rng.integers(0, len(pix), k)]
        cy, cx = f // view.w + 0.5, f % view.w + 0.5
        a, b = rng.uniform(*size, k) / 2 / p, rng.uniform(*size, k) / 2 / p
        shadow = rng.uniform(*height, k) * 0.8 / p  # 40-degree incidence: shadow ~ 0.8 x height, in range
        keep = np.array([_free((x - r, y - r, x + r + s, y + r), occupied, 3.0)
                         for x, y, r, s in zip(cx, cy, np.hypot(a, b), shadow)])
        if keep.any():
            kk = int(keep.sum())
            _rects(rng, cv, cx[keep], cy[keep], a[keep], b[keep], town_angle + rng.normal(0, 0.05, kk),
                   shadow[keep], rng.uniform(0.08, 0.3, kk), rng.uniform(2, 8, kk))
    if kind != "port":
        return
    quay = mat.ravel() == QUAY
    pix = np.flatnonzero(quay)
    want = min(12, int(len(pix) * p * p / 2500))
    tanks = []
    for _ in range(want * 3):
        if len(tanks) >= want:
            break
        f = pix[rng.integers(len(pix))]
        cy, cx, r = f // view.w + 0.5, f % view.w + 0.5, rng.uniform(10, 20) / p
        box = (cx - r, cy - r, cx + r, cy + r)
        if box[0] < 0 or box[1] < 0 or box[2] > view.w or box[3] > view.h or not _free(box, occupied, 2.0):
            continue
        al = np.linspace(0, 2 * math.pi, 9)[:-1]
        ring = np.stack([cx + (r + 0.2 / p) * np.cos(al), cy + (r + 0.2 / p) * np.sin(al)])
        if not quay[(np.clip(ring[1], 0, view.h - 1).astype(int) * view.w + np.clip(ring[0], 0, view.w - 1)
                     .astype(int))].all():
            continue
        occupied.append(box)
        tanks.append((cx, cy, r))
    if tanks:
        t = np.array(tanks)
        k = len(t)
        _tanks(rng, cv, t[:, 0], t[:, 1], t[:, 2], rng.uniform(10, 20, k) * 0.8 / p, rng.uniform(3, 10, k))


def _resolve_year(year: int, years: list[int]) -> int:
    """Index of the nearest AEF year (the earlier on a tie), the rule the AEF store applies."""
    y = np.array(years)
    return int(np.argmin(np.abs(y - year) * 2 + (y > year)))


def _scene(k: int, seed: int, site: _Site, years: list[int], acq: tuple[int, int], image_px, pixel_m,
           db_floor: float):
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
    view = _View(p, x0, y0, w, h, n)

    # land cover at the image's pixels, with edges roughened by a few metres (no 10 m staircase)
    jit = max(2.0, 8.0 / p)
    gx = (np.arange(w) + 0.5)[None, :] + 3.0 / p * _noise(rng, h, w, jit)
    gy = (np.arange(h) + 0.5)[:, None] + 3.0 / p * _noise(rng, h, w, jit)
    idx = view.tile_index(gx, gy)
    mat = site.mats[t].ravel()[idx]
    sigma0 = np.exp(site.db[t].ravel()[idx].astype(np.float64) * (math.log(10) / 10))

    cv = _Canvas(h, w)
    occupied: list = []
    anns = _place_targets(rng, cv, view, site.mats[t], mat, occupied)
    _distractors(rng, cv, view, mat, site.kind, occupied)
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
    from affine import Affine

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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def make_world(out, scenes: int = 40, seed: int = 0, *, sites: int = 4, years=(2019, 2023), image_px=(256, 320),
               pixel_m=(1.0, 3.0), tile_px: int = 512, block_size: int = 512, progress: bool = False) -> dict:
    """Write a synthetic SAR + AEF world under ``out`` (see the module docstring) and return a summary.

    ``years`` are the AEF years written; acquisition years run from 3 years before the first to 2 after the
    last, so the AEF year has to be clipped for some scenes. Scene ``k`` lies at site ``k % sites``.
    """
    t_start = time.perf_counter()
    scenes, sites, years, image_px, pixel_m = _check(scenes, sites, years, image_px, pixel_m, tile_px, block_size)
    seed = int(seed)
    samples = load_samples()
    db_table = material_db(samples)
    out = Path(out)
    _prepare_out(out)

    site_objs = []
    for i in range(sites):
        site = _build_site(i, seed, tile_px, years, samples, db_table)
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
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=scenes, desc="synthetic scenes", unit="scene")
    for k in range(scenes):
        site = site_objs[k % sites]
        amp, meta, anns, transform, when = _scene(k, seed, site, years, acq, image_px, pixel_m, NOISE_FLOOR)
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
                            "block_size": block_size, "looks": LOOKS},
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
