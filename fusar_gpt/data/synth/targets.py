"""Annotated targets (ships on water, planes on runways) and the unannotated look-alikes placed around them."""

from __future__ import annotations

import math

import numpy as np

from .canvas import Canvas, draw_buildings, draw_tanks
from .samples import BUILT, OPEN_SEA, QUAY, RUNWAY, WATER
from .sites import View

CATEGORIES = ({"id": 1, "name": "ship"}, {"id": 2, "name": "plane"})
SHIP_SUBTYPES = ("cargo", "tanker", "fishing")
PLANE_SUBTYPES = ("fighter", "airliner", "cargo_plane")


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


def _free(box, occupied, margin: float) -> bool:
    if not occupied:
        return True
    o = np.asarray(occupied)
    return not np.any((box[0] - margin < o[:, 2]) & (o[:, 0] < box[2] + margin)
                      & (box[1] - margin < o[:, 3]) & (o[:, 1] < box[3] + margin))


def place_targets(rng, cv: Canvas, view: View, site_mat: np.ndarray, mat: np.ndarray, occupied: list,
                  max_targets: int = 5, min_targets: int = 0) -> list:
    """Ships on water, planes on runways/aprons: fully inside the image, not overlapping;
    ``min_targets``..``max_targets`` of each class wherever it has room (fewer when the room runs out).
    Returns annotations."""
    out = []
    flat = site_mat.ravel()
    for cat_id, label, subtypes, weights, allowed in (
            (1, "ship", SHIP_SUBTYPES, (0.3, 0.25, 0.45), (WATER, OPEN_SEA)),
            (2, "plane", PLANE_SUBTYPES, (0.35, 0.35, 0.3), (RUNWAY,))):
        ok = np.isin(mat, allowed)
        want = int(rng.integers(min_targets, max_targets + 1))
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


def place_distractors(rng, cv: Canvas, view: View, mat: np.ndarray, kind: str, occupied: list,
                      clutter: float = 1.0) -> None:
    """Unannotated bright look-alikes: buildings on built land, sheds and (at ports) oil tanks on quays;
    ``clutter`` scales how many (1 = realistic density, 0 = none)."""
    p = view.p
    town_angle = rng.uniform(0, math.pi / 2)
    kinds = ((BUILT, 1 / 900, (8, 35), (5, 25), 80), (QUAY, 1 / 4000, (10, 30), (4, 9), 12))
    for where, per_m2, size, height, cap in kinds:
        pix = np.flatnonzero(mat.ravel() == where)
        k = min(round(cap * clutter), int(len(pix) * p * p * per_m2 * rng.uniform(0.6, 1.0) * clutter))
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
            draw_buildings(rng, cv, cx[keep], cy[keep], a[keep], b[keep], town_angle + rng.normal(0, 0.05, kk),
                           shadow[keep], rng.uniform(0.08, 0.3, kk), rng.uniform(2, 8, kk))
    if kind != "port":
        return
    quay = mat.ravel() == QUAY
    pix = np.flatnonzero(quay)
    want = min(round(12 * clutter), int(len(pix) * p * p / 2500 * clutter))
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
        draw_tanks(rng, cv, t[:, 0], t[:, 1], t[:, 2], rng.uniform(10, 20, k) * 0.8 / p, rng.uniform(3, 10, k))

