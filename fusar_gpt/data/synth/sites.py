"""The sites of the synthetic world: where each sits, its land cover, backscatter and AEF codes per AEF year."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geo.aef import DIM, NODATA
from ...geo.aef_tiles import tile_origin, utm_epsg
from ...geo.transforms import lonlat_to, to_lonlat
from .landcover import GENERATORS, dilate, noise
from .samples import CROPS, DW_CLASSES, FALLOW, MAT_DW, OPEN_SEA, QUAY, RUNWAY, WATER, Samples

AEF_RES = 10.0
_OFFSET_SD = np.array([0.8, 0.6, 1.0, 1.0, 1.0, 1.2, 1.0, 1.2, 1.0, 1.0, 0.4, 0.4])  # dB, per parcel

# The sites of the first cycle sit in four UTM zones, one of them southern; later cycles are shifted north.
_TEMPLATES = (("port", "31N", 4.50, 43.60), ("airfield", "32N", 9.50, 54.00),
              ("coastal_farmland", "10N", -122.30, 37.80), ("river_town", "56S", 151.20, -33.90))


@dataclass
class Site:
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
        crs = f"EPSG:{utm_epsg(zone)}"
        x, y = lonlat_to(crs, np.array([lon]), np.array([lat]))
        lon2, lat2 = to_lonlat(crs, x, y + cycle * tile_px * AEF_RES * 1.5)
        lon, lat = float(lon2[0]), float(lat2[0])
    return kind, zone, lon, lat


def build_site(i: int, seed: int, n: int, years: list[int], samples: Samples, db_table: np.ndarray) -> Site:
    kind, zone, lon, lat = _site_place(i, n)
    zone, epsg, west, north = tile_origin(lon, lat, n, AEF_RES, zone=zone)
    rng = np.random.default_rng([seed, 0, i])
    base = GENERATORS[kind](rng, n).astype(np.uint8)
    water = base == WATER
    far = ~dilate(~water, int(rng.integers(30, 51)))  # more than ~300-500 m from any land: open sea, no AEF
    base[water & far] = OPEN_SEA

    # parcels: a warped grid of 3-8 px cells, split along material boundaries; one AEF vector per parcel
    cell = rng.uniform(3.5, 7.0)
    r, c = np.mgrid[0:n, 0:n].astype(np.float32)
    pr = np.floor((r + cell * 0.7 * noise(rng, n, n, 12)) / cell).astype(np.int64) + 64
    pc = np.floor((c + cell * 0.7 * noise(rng, n, n, 12)) / cell).astype(np.int64) + 64
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
    near_water = ~land & dilate(land, 25)
    hot = np.flatnonzero((near_water | (base == RUNWAY) | (base == QUAY)).ravel())
    clon, clat = to_lonlat(f"EPSG:{epsg}", np.array([west + n * AEF_RES / 2]), np.array([north - n * AEF_RES / 2]))
    return Site(f"{kind}_{i}", kind, zone, epsg, west, north, round(float(clon[0]), 6), round(float(clat[0]), 6),
                mats, dbs, codes, hot)


@dataclass
class View:
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
