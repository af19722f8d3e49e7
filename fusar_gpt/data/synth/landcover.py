"""Land-cover maps of the synthetic sites: smooth random fields and one generator per kind of site.

A generator ``(rng, n) -> uint8 [n, n]`` draws a north-up material map (ids from :mod:`.samples`) at 10 m.
"""

from __future__ import annotations

import math

import numpy as np

from .samples import BARE, BUILT, CROPS, FALLOW, FLOODED, GRASS, QUAY, RUNWAY, SHRUB, TREES, WATER


# ------------------------------------------------------------------------------------------ smooth random fields
def noise(rng, h: int, w: int, cell: float) -> np.ndarray:
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
    f = noise(rng, n, n, cell) + 0.5 * noise(rng, n, n, cell / 2) + 0.25 * noise(rng, n, n, cell / 4)
    return f / f.std()


def _frame(n: int, angle: float, cx: float | None = None, cy: float | None = None):
    """Rotated pixel coordinates (u along ``angle``, v across) about the tile centre."""
    r, c = np.mgrid[0:n, 0:n].astype(np.float32)
    x, y = c - (n / 2 if cx is None else cx), r - (n / 2 if cy is None else cy)
    cs, sn = math.cos(angle), math.sin(angle)
    return x * cs + y * sn, -x * sn + y * cs


def _blobs(rng, n: int, classes, weights, cell: float) -> np.ndarray:
    """Blobby patches: the class whose noise (plus a bias from its weight) is largest."""
    scores = np.stack([noise(rng, n, n, cell) + 0.4 * noise(rng, n, n, cell / 3) for _ in classes])
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


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
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
    town = ~sea & (u > c0 - town_depth) & (np.abs(v - vh) < hw * 1.3 + 0.05 * n * noise(rng, n, n, n / 8))
    mat[town] = BUILT
    parks = noise(rng, n, n, n / 12)
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
    mat[noise(rng, n, n, n / 10) > 1.3] = TREES
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
        pond = np.hypot(r - cy, c - cx) < rng.uniform(6, 16) * (1 + 0.25 * noise(rng, n, n, 6))
        mat[pond & (mat != RUNWAY)] = WATER
    return mat


def _farmland(rng, n: int) -> np.ndarray:
    mat = _fields(rng, n, (CROPS, GRASS, FALLOW, TREES, SHRUB), (0.6, 0.15, 0.1, 0.05, 0.1))
    mat[noise(rng, n, n, n / 8) > 1.4] = TREES
    u, v = _frame(n, rng.uniform(0, 2 * math.pi))
    coast = rng.uniform(0.05, 0.2) * n + _fbm(rng, n, n / 4) * 0.08 * n
    sea = u > coast
    mat[~sea & (u > coast - rng.uniform(6, 20) - 5 * noise(rng, n, n, n / 10))] = FLOODED  # salt marsh
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
              + 6 * noise(rng, n, n, n / 4))
    width = rng.uniform(8, 18)
    river = np.abs(dv) < width / 2
    ut, radius = rng.uniform(-0.15, 0.15) * n, rng.uniform(0.18, 0.28) * n
    town = np.hypot(u - ut, dv) + 0.05 * n * noise(rng, n, n, n / 8) < radius
    mat[town] = BUILT
    parks, lots = noise(rng, n, n, n / 14), noise(rng, n, n, n / 20)
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


GENERATORS = {"port": _port, "airfield": _airfield, "coastal_farmland": _farmland, "river_town": _river_town}
SITE_KINDS = tuple(GENERATORS)
