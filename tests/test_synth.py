"""The synthetic world: real file formats, determinism, and the physics the later experiments rely on."""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fusar_gpt.data import synth
from fusar_gpt.data.synth import DW_CLASSES, PLANE_SUBTYPES, SHIP_SUBTYPES, load_samples, make_world
from fusar_gpt.geo.aef import NODATA, AEFStore, quantize, to_lonlat
from fusar_gpt.geo.raster import read_sar

from .conftest import SYNTH_WORLD

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aef_samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared real AEF samples not present")

SMALL = {k: v for k, v in SYNTH_WORLD.items() if k != "seed"}  # scenes=8, sites=4, tile_px=256, block_size=128
WATER, BARE, BUILT = DW_CLASSES.index("water"), DW_CLASSES.index("bare"), DW_CLASSES.index("built")


@pytest.fixture(scope="module")
def world(synth_world):
    """``make_world(out, seed=0, **SMALL)``: the session's shared world (conftest), read-only."""
    assert SYNTH_WORLD["seed"] == 0
    return synth_world


@pytest.fixture(scope="module")
def coco(world):
    return json.loads((world[0] / "annotations.json").read_text())


@pytest.fixture(scope="module")
def info(world):
    return json.loads((world[0] / "world.json").read_text())


@pytest.fixture(scope="module")
def store(world):
    with AEFStore(world[0] / "aef", cache_dir=False) as s:
        yield s


@pytest.fixture(scope="module")
def pool():
    return load_samples()


@pytest.fixture(scope="module")
def scenes(world, coco, store, pool):
    """Per image: the SarImage, its 8x8 anchors and the Dynamic World class of every node (nodata = -2)."""
    out = []
    for im in coco["images"]:
        img = read_sar(world[0] / "images" / im["file_name"])
        a = store.sample_raster(img.crs, img.transform, img.width, img.height, img.date.year, grid=8)
        labels = np.where(a.mask, pool.label_of(quantize(a.features)), -2)
        out.append((im, img, a, labels))
    return out


def _index_rows(root: Path) -> list[dict]:
    with open(root / "aef" / "aef_index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------ formats
def test_summary_and_world_json(world, coco, info):
    out, summary = world
    assert summary["scenes"] == 8 == len(coco["images"])
    assert len(summary["sites"]) == 4 and summary["years"] == [2019, 2023]
    counts = summary["objects"]
    assert set(counts) == {"ship", "plane"}
    assert set(counts["ship"]) == set(SHIP_SUBTYPES) and set(counts["plane"]) == set(PLANE_SUBTYPES)
    assert sum(sum(v.values()) for v in counts.values()) == len(coco["annotations"]) == summary["annotations"]
    assert info["seed"] == 0 and info["version"] == synth.VERSION
    assert info["parameters"]["acquisition_years"] == [2016, 2025]
    kinds = [s["kind"] for s in info["sites"]]
    assert kinds == list(synth.SITE_KINDS)
    zones = [s["zone"] for s in info["sites"]]
    assert len(set(zones)) == 4 and any(z.endswith("S") for z in zones)
    assert all(Path(p).exists() for p in summary["paths"].values())


def test_aef_tiles_real_layout(world, info):
    out, _ = world
    rows = _index_rows(out)
    assert len(rows) == 4 * 2
    expected = {(s["zone"], y) for s in info["sites"] for y in (2019, 2023)}
    assert {(r["utm_zone"], int(r["year"])) for r in rows} == expected
    for r in rows:
        path = out / "aef" / r["path"]
        assert re.fullmatch(r"\d{4}/\d{1,2}[NS]/[^/]+\.tiff", r["path"])
        with warnings.catch_warnings(), rasterio.open(path) as ds:
            warnings.simplefilter("ignore")
            assert ds.count == 64 and set(ds.dtypes) == {"int8"}
            assert ds.transform.e > 0  # bottom-up, as the bucket stores them
            assert ds.nodata == NODATA
            assert ds.width == ds.height == 256 and ds.block_shapes[0] == (128, 128)
            assert ds.crs.to_epsg() == (32600 if r["utm_zone"].endswith("N") else 32700) + int(r["utm_zone"][:-1])
            assert ds.compression.name.lower() == "zstd" and ds.overviews(1)


def test_images_are_georeferenced_amplitude_inside_their_tile(world, coco, info):
    out, _ = world
    sites = {s["name"]: s for s in info["sites"]}
    tiles = {(r["utm_zone"], int(r["year"])): r for r in _index_rows(out)}
    years = []
    for im in coco["images"]:
        path = out / "images" / im["file_name"]
        img = read_sar(path)
        site = sites[im["site"]]
        assert img.crs.to_epsg() == site["epsg"]
        assert img.transform.e < 0 and img.transform.b == img.transform.d == 0  # north-up
        assert 1.0 <= img.transform.a == -img.transform.e <= 3.0
        assert (img.width, img.height) == (im["width"], im["height"])
        assert 256 <= img.width <= 320 and 256 <= img.height <= 320
        assert img.scale == "amplitude" and img.data.dtype == np.float32
        assert np.isfinite(img.data).all() and (img.data > 0).all()
        assert str(img.date) == im["date"]
        years.append(img.date.year)
        tile = tiles[(site["zone"], 2019)]
        lon0, lat0, lon1, lat1 = img.footprint
        assert float(tile["wgs84_west"]) <= lon0 < lon1 <= float(tile["wgs84_east"])
        assert float(tile["wgs84_south"]) <= lat0 < lat1 <= float(tile["wgs84_north"])
        with rasterio.open(path) as ds:
            assert ds.compression.name.lower() in ("deflate", "lzw")
            tags = ds.tags()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", tags["ACQUISITION_START_TIME"])
        assert tags["ACQUISITION_START_TIME"].startswith(im["date"]) and tags["UNITS"] == "amplitude"
    assert all(2016 <= y <= 2025 for y in years)
    assert any(y < 2019 or y > 2023 for y in years)  # some need the AEF year clipped


def test_coco_structure(coco):
    assert coco["categories"] == [{"id": 1, "name": "ship"}, {"id": 2, "name": "plane"}]
    ids = [im["id"] for im in coco["images"]]
    assert len(set(ids)) == len(ids)
    for k, im in enumerate(coco["images"]):
        assert im["file_name"] == f"scene_{k:05d}.tif"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", im["date"])
        assert set(im["landcover"]) <= set(DW_CLASSES) and all(v > 0 for v in im["landcover"].values())
        assert abs(sum(im["landcover"].values()) - 1.0) < 0.01
        assert len(im["landcover_grid"]) == 9 and set(im["landcover_grid"]) <= set(im["landcover"])
        assert 0.0 <= im["open_sea"] <= im["landcover"].get("water", 0.0)
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids) and coco["annotations"]
    by_image: dict[int, list] = {}
    images = {im["id"]: im for im in coco["images"]}
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= im["width"] and y + h <= im["height"]
        assert a["area"] == pytest.approx(w * h, abs=0.05) and a["iscrowd"] == 0
        assert a["subtype"] in (SHIP_SUBTYPES if a["category_id"] == 1 else PLANE_SUBTYPES)
        by_image.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    for boxes in by_image.values():  # non-overlapping
        for i, p in enumerate(boxes):
            for q in boxes[i + 1:]:
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]
    counts = [len(v) for v in by_image.values()]
    assert max(counts) <= 10 and len(by_image) < len(coco["images"])  # up to 5 per class; some images hold none


# -------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_world_other_seed_other_world(world, tmp_path):
    out, _ = world
    again = tmp_path / "again"
    make_world(again, seed=0, **SMALL)
    for name in ("annotations.json", "world.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    for path in sorted((out / "images").glob("*.tif")):
        with rasterio.open(path) as a, rasterio.open(again / "images" / path.name) as b:
            assert np.array_equal(a.read(), b.read()) and a.transform == b.transform
    for path in sorted((out / "aef").rglob("*.tiff")):
        with warnings.catch_warnings(), rasterio.open(path) as a, rasterio.open(again / path.relative_to(out)) as b:
            warnings.simplefilter("ignore")
            assert np.array_equal(a.read(), b.read())

    one_site = dict(scenes=2, sites=1, tile_px=256, block_size=256)
    other = tmp_path / "other"
    make_world(other, seed=1, **one_site)
    with rasterio.open(out / "images" / "scene_00000.tif") as a, rasterio.open(other / "images/scene_00000.tif") as b:
        assert a.shape != b.shape or not np.array_equal(a.read(), b.read())
    # rewriting a synthetic world in place replaces it (no stale tiles or scenes); every site and scene has its
    # own random stream, so scene 0 of a one-site world is scene 0 of the four-site one
    summary = make_world(other, seed=0, **one_site)
    assert len(list((other / "images").glob("*.tif"))) == summary["scenes"] == 2
    assert len(_index_rows(other)) == 2
    with rasterio.open(out / "images" / "scene_00000.tif") as a, rasterio.open(other / "images/scene_00000.tif") as b:
        assert np.array_equal(a.read(), b.read())
    first = [a for a in json.loads((out / "annotations.json").read_text())["annotations"] if a["image_id"] == 1]
    assert first == [a for a in json.loads((other / "annotations.json").read_text())["annotations"]
                     if a["image_id"] == 1]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing"):
        make_world(foreign, scenes=1, sites=1, tile_px=256, block_size=256)


def test_missing_samples_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSAR_GPT_AEF_SAMPLES", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="aef_samples"):
        make_world(tmp_path / "w", scenes=1, sites=1, tile_px=256, block_size=256)


def test_min_targets_fills_every_scene_with_room(coco, tmp_path):
    """The demo's easier world: one ship wherever there is water and one plane wherever there is a runway (unless
    none fits), so per class and image there is 0 or 1, and no fewer images hold a target than in the realistic
    world."""
    summary = make_world(tmp_path / "one", seed=0, min_targets=1, max_targets=1, **dict(SMALL, scenes=4))
    ann = json.loads((tmp_path / "one" / "annotations.json").read_text())
    per = Counter((a["image_id"], a["category_id"]) for a in ann["annotations"])
    assert per and max(per.values()) == 1
    realistic = {(a["image_id"], a["category_id"]) for a in coco["annotations"] if a["image_id"] <= 4}
    assert len(per) >= len(realistic)  # no image/class pair can draw 0 any more where there is room
    assert json.loads((tmp_path / "one" / "world.json").read_text())["parameters"]["min_targets"] == 1
    assert summary["annotations"] == len(per)
    with pytest.raises(ValueError, match="min_targets"):
        make_world(tmp_path / "bad", scenes=1, sites=1, tile_px=256, block_size=256, min_targets=3, max_targets=2)


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        make_world(tmp_path / "w", scenes=1, sites=1, tile_px=64, block_size=64)
    with pytest.raises(ValueError, match="pixel_m"):
        make_world(tmp_path / "w", scenes=1, pixel_m=(3, 1))


# --------------------------------------------------------------------------------------------------- AEF
def test_anchors_hold_real_vectors_matching_the_landcover(scenes):
    tv = []
    for im, _img, a, labels in scenes:
        assert a.mask.any() or im["open_sea"] > 0.5
        assert (labels[a.mask] >= 0).all()  # every valid node is a real sample vector, code for code
        node = np.bincount(np.where(labels == -2, WATER, labels), minlength=len(DW_CLASSES)) / len(labels)
        cover = np.array([im["landcover"].get(c, 0.0) for c in DW_CLASSES])
        tv.append(0.5 * np.abs(node - cover).sum())
        if im["open_sea"] >= 0.3:
            assert (~a.mask).any()
        assert (~a.mask).mean() <= im["open_sea"] + 0.15
    assert max(tv) < 0.3 and np.mean(tv) < 0.12


def test_open_sea_is_nodata_and_coastal_water_is_covered(world, info, pool):
    out, _ = world
    port = next(s for s in info["sites"] if s["kind"] == "port")
    path = next((out / "aef" / "2019" / port["zone"]).glob("*.tiff"))
    with warnings.catch_warnings(), rasterio.open(path) as ds:
        warnings.simplefilter("ignore")
        codes = ds.read()
    nodata = (codes == NODATA).all(0)
    assert nodata.any() and ((codes == NODATA).any(0) == nodata).all()  # masked in all bands at once
    labels = np.full(nodata.shape, -2)
    labels[~nodata] = pool.label_of(np.moveaxis(codes, 0, -1)[~nodata])
    assert (labels[~nodata] >= 0).all()
    land = (labels >= 0) & (labels != WATER)
    near = land.copy()
    for _ in range(25):  # 250 m around the land
        grown = near.copy()
        grown[1:] |= near[:-1]
        grown[:-1] |= near[1:]
        grown[:, 1:] |= near[:, :-1]
        grown[:, :-1] |= near[:, 1:]
        near = grown
    assert not (nodata & near).any()  # open sea only far from land
    assert ((labels == WATER) & near).sum() > 100  # water near the coast has vectors
    assert (labels[~nodata] == WATER).any()


def test_aef_years_mostly_stable(world, info):
    out, _ = world
    site = info["sites"][2]
    a, b = (next((out / "aef" / str(y) / site["zone"]).glob("*.tiff")) for y in (2019, 2023))
    with warnings.catch_warnings(), rasterio.open(a) as da, rasterio.open(b) as db:
        warnings.simplefilter("ignore")
        same = (da.read() == db.read()).all(0).mean()
    assert 0.75 < same < 0.97


# ----------------------------------------------------------------------------------------------- targets
def test_targets_sit_on_their_land_cover(coco, scenes, store, pool):
    images = {im["id"]: (img, a) for im, img, a, _ in scenes}
    for ann in coco["annotations"]:
        img, _ = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        t = img.transform
        ex, ey = t.c + t.a * (x + w / 2), t.f + t.e * (y + h / 2)
        lon, lat = to_lonlat(f"EPSG:{img.crs.to_epsg()}", np.array([ex]), np.array([ey]))
        f = store.sample_points(lon, lat, img.date.year)
        label = int(pool.label_of(quantize(f))[0]) if np.isfinite(f).all() else WATER  # nodata: open sea
        assert label == (WATER if ann["category_id"] == 1 else BARE), ann


def test_targets_are_brighter_than_their_surroundings(coco, scenes):
    images = {im["id"]: img for im, img, _, _ in scenes}
    for ann in coco["annotations"]:
        data = images[ann["image_id"]].data
        x, y, w, h = ann["bbox"]
        x0, y0, x1, y1 = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
        m = 8
        X0, Y0, X1, Y1 = max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, data.shape[1]), min(y1 + m, data.shape[0])
        ring = data[Y0:Y1, X0:X1].copy()
        ring[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = np.nan
        assert data[y0:y1, x0:x1].mean() > 2.0 * np.nanmedian(ring), ann


def test_backscatter_order_follows_real_sentinel1(scenes, pool):
    by_class: dict[int, list] = {}
    for _im, img, a, labels in scenes:
        r = np.clip((a.positions[:, 0] * img.height).astype(int), 2, img.height - 3)
        c = np.clip((a.positions[:, 1] * img.width).astype(int), 2, img.width - 3)
        for k in np.flatnonzero(labels >= 0):
            win = img.data[r[k] - 2:r[k] + 3, c[k] - 2:c[k] + 3].astype(np.float64) ** 2
            by_class.setdefault(int(labels[k]), []).append(10 * np.log10(win.mean()))
    med = {k: float(np.median(v)) for k, v in by_class.items() if len(v) >= 10}
    real = pool.mean_vv()
    assert {WATER, BUILT} <= set(med)
    assert med[WATER] + 6 < med[BUILT]
    assert med[WATER] == min(med.values())
    for k, v in med.items():
        if k != BARE:  # bare mixes natural bare with dark tarmac on purpose
            assert abs(v - real[DW_CLASSES[k]]) < 2.5, (DW_CLASSES[k], v)
