"""The canvas a scene's bright structures are drawn on: point lists splatted once, sinc sidelobes, and the
building and oil-tank primitives."""

from __future__ import annotations

import math

import numpy as np


class Canvas:
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


def draw_buildings(rng, cv: Canvas, cx, cy, a, b, ang, shadow_len, roof, line):
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


def draw_tanks(rng, cv: Canvas, cx, cy, r, shadow_len, line):
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

