"""Whole-scene detection: a 2048 x 2048 scene through the full tiling, mapping and merging path, with a test
double that returns the true boxes visible in each tile; the GeoJSON must land on the true objects' lon/lat
(within one pixel) with no duplicates from tile overlaps. Also: merging rules, batching, the CLI end to end
with the tiny model, and no partial output on failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from fusar_gpt.__main__ import main
from fusar_gpt.chip import ChipSpec
from fusar_gpt.detect import Detection, detect_scene, merge
from fusar_gpt.geo.frame import chip_windows

from .infer_helpers import EPSG, NORTH, WEST, make_aef, make_run, write_scene

PIXEL = 2.0
SHIP_DB, PLANE_DB = 10.0, 0.0     # with the fixed -25..5 dB stretch: ships 255, planes 212, sea 25..110
SETTINGS = ChipSpec(frame=504, grid=4, stretch=(-25.0, 5.0))


def _rotated_transform(deg: float = 7.0) -> Affine:
    """North-up would hide mistakes in the b/d terms of the geotransform; a few degrees of rotation does not."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return Affine(PIXEL * c, PIXEL * s, WEST + 500.0, PIXEL * s, -PIXEL * c, NORTH - 300.0)


def _objects(size: int, seed: int = 0) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Targets as integer pixel-edge boxes: edge cases on every kind of tile seam, then random ones, never
    touching each other (so the double can tell them apart) and all smaller than the 64-px overlap."""
    fixed = [("ship", (490, 100, 530, 112)),     # across tile 0's right edge: cut in tile 0, whole in tile 1
             ("ship", (450, 300, 495, 314)),     # inside the overlap strip: whole in two tiles
             ("plane", (200, 480, 230, 520)),    # across a horizontal seam
             ("plane", (860, 860, 900, 900)),    # a four-tile corner
             ("ship", (1500, 1000, 1560, 1016)),  # in the wide overlap of the last two columns
             ("ship", (2010, 40, 2048, 52)),     # on the scene's right edge (not a tile seam)
             ("plane", (0, 2020, 30, 2048))]     # the scene's bottom-left corner
    rng = np.random.default_rng(seed)
    objs = list(fixed)
    while len(objs) < 40:
        label = "ship" if rng.random() < 0.6 else "plane"
        w, h = (int(rng.integers(20, 60)), int(rng.integers(8, 16))) if label == "ship" else (30, 30)
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        box = (x, y, x + w, y + h)
        if all(box[2] + 4 <= b[0] or b[2] + 4 <= box[0] or box[3] + 4 <= b[1] or b[3] + 4 <= box[1]
               for _, b in objs):
            objs.append((label, box))
    return objs


def _rectangles(mask: np.ndarray) -> list[list[int]]:
    """Boxes (pixel edges) of the separate axis-aligned rectangles in a mask: each starts at a pixel with no
    set neighbour above or to the left."""
    m = np.pad(mask, ((1, 0), (1, 0)))
    corners = np.argwhere(m[1:, 1:] & ~m[:-1, 1:] & ~m[1:, :-1])
    boxes = []
    for r, c in corners:
        w = int(np.argmin(np.append(mask[r, c:], False)))
        h = int(np.argmin(np.append(mask[r:, c], False)))
        boxes.append([int(c), int(r), int(c) + w, int(r) + h])
    return boxes


class TruthDouble:
    """Stands in for the model: answers each detect prompt with the boxes of that class visible in the tile
    it is shown, in the Qwen2.5-VL JSON the real model writes."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_after = fail_after

    def answer(self, images, questions, priors=None, max_new_tokens=64, **kw):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("model crashed")
        self.batches.append(len(images))
        out = []
        for im, q in zip(images, questions):
            gray = np.asarray(im)
            gray = gray if gray.ndim == 2 else gray[..., 0]
            label = "ship" if "ship" in q else "plane"
            mask = gray == 255 if label == "ship" else (gray >= 200) & (gray <= 225)
            boxes = _rectangles(mask)
            out.append(json.dumps([{"bbox_2d": b, "label": label} for b in boxes]) if boxes else "None")
        return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    size = 2048
    root = tmp_path_factory.mktemp("scene")
    db = np.random.default_rng(5).uniform(-22.0, -12.0, size=(size, size)).astype(np.float32)
    objs = _objects(size)
    for label, (x1, y1, x2, y2) in objs:
        db[y1:y2, x1:x2] = SHIP_DB if label == "ship" else PLANE_DB
    t = _rotated_transform()
    return {"path": write_scene(root / "S1A_IW_20240501T060000_scene.tif", db, transform=t), "objects": objs,
            "transform": t, "size": size}


def test_geojson_lands_on_every_object_once_within_a_pixel(scene, tmp_path):
    double = TruthDouble()
    summary = detect_scene(double, SETTINGS, scene["path"], tmp_path / "d.geojson", no_aef=True, tile=504,
                           overlap=64, batch_size=8, coco=tmp_path / "d.json")
    chips = chip_windows(scene["size"], scene["size"], 504, 64)
    assert summary["tiles"] == len(chips) == 25 and summary["prompts"] == 50
    assert double.batches == [8] * 6 + [2]  # tiles x classes in batches of 8
    assert summary["raw_detections"] > len(scene["objects"])  # the overlaps did see objects twice

    fc = json.loads((tmp_path / "d.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(scene["objects"]) == 40
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{EPSG}", always_xy=True)
    t = scene["transform"]
    unmatched = list(scene["objects"])
    for f in fc["features"]:
        ring = np.array(f["geometry"]["coordinates"][0])
        assert f["geometry"]["type"] == "Polygon" and ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        x, y = ring[:4, 0], ring[:4, 1]
        assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # counter-clockwise (RFC 7946)
        ex, ny = to_utm.transform(ring[:4, 0], ring[:4, 1])
        got = np.stack([ex, ny], 1)
        # the one true object of this label whose four corners are each within one pixel (2 m) of a vertex
        hits = []
        for label, (x1, y1, x2, y2) in unmatched:
            cols, rows = np.array([x1, x2, x2, x1], float), np.array([y1, y1, y2, y2], float)
            true = np.stack([t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f], 1)
            dist = np.linalg.norm(got[:, None] - true[None], axis=-1).min(axis=0)
            if label == f["properties"]["label"] and dist.max() <= PIXEL:
                hits.append((label, (x1, y1, x2, y2)))
        assert len(hits) == 1, (f["properties"], hits)
        unmatched.remove(hits[0])
        c0, r0, w, h = f["properties"]["tile_window"]  # the tile of origin saw the whole object
        box = hits[0][1]
        assert c0 <= box[0] and r0 <= box[1] and box[2] <= c0 + w and box[3] <= r0 + h
        assert f["properties"]["tile_window"] == [chips[f["properties"]["tile"]].col_off,
                                                  chips[f["properties"]["tile"]].row_off, 504, 504]
    assert not unmatched

    coco = json.loads((tmp_path / "d.json").read_text())
    assert coco["images"][0]["width"] == 2048 and len(coco["annotations"]) == 40
    names = {c["id"]: c["name"] for c in coco["categories"]}
    truth = sorted((lab, list(map(float, b))) for lab, b in scene["objects"])
    got = sorted((names[a["category_id"]], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                            a["bbox"][1] + a["bbox"][3]]) for a in coco["annotations"])
    assert got == truth  # exact scene pixels


def test_a_failure_leaves_no_output_file(scene, tmp_path):
    with pytest.raises(RuntimeError):
        detect_scene(TruthDouble(fail_after=2), SETTINGS, scene["path"], tmp_path / "d.geojson", no_aef=True)
    assert not list(tmp_path.iterdir())


def _det(box, label="ship", tile=0, cut=False):
    return Detection(np.array(box, float), label, tile, cut)


def test_merge_rules():
    whole, piece = _det([100, 10, 140, 22], tile=1), _det([100, 10, 104, 22], tile=0, cut=True)
    again = _det([100.5, 10, 140, 21.6], tile=2)            # the same ship seen by another tile
    neighbour = _det([145, 10, 185, 22], tile=1)           # a distinct ship beside it
    plane = _det([100, 10, 140, 22], label="plane")         # other class: never merged with a ship
    kept = merge([piece, again, whole, neighbour, plane])
    assert {(d.label, tuple(d.box)) for d in kept} == {("ship", (100, 10, 140, 22)), ("ship", (145, 10, 185, 22)),
                                                       ("plane", (100, 10, 140, 22))}
    # an uncut box mostly inside another is a separate object (a small boat beside a big ship), not a piece
    inner = _det([110, 12, 118, 20], tile=1)
    assert len(merge([whole, inner])) == 2
    assert len(merge([whole, _det([110, 12, 118, 20], tile=0, cut=True)])) == 1
    with pytest.raises(ValueError):
        merge([whole], iou=0)


def test_cli_with_the_tiny_model_and_aef(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    run = make_run(tmp_path, tiny_dir, frame=224, grid=4)
    aef = make_aef(tmp_path / "aef")
    t = Affine(10.0, 0.0, WEST + 600.0, 0.0, -10.0, NORTH - 500.0)
    db = np.random.default_rng(0).uniform(-22, -12, size=(300, 400)).astype(np.float32)
    path = write_scene(tmp_path / "small_20240501.tif", db, transform=t)
    out = tmp_path / "dets.geojson"
    argv = ["detect-scene", str(run), str(path), "--aef", str(aef), "--out", str(out), "--tile", "224",
            "--overlap", "32", "--batch-size", "4", "--max-new-tokens", "8", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] == 4 and summary["prompts"] == 8 and summary["skipped_tiles"] == 0
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection" and fc["year"] == 2024 and len(fc["features"]) == summary["detections"]
    for bad, needle in ((["--overlap", "224"], "overlap"), (["--classes", "ship,,plane"], "classes"),
                        (["--out", str(tmp_path / "no" / "d.geojson")], "does not exist")):
        assert main(argv[:-1] + bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fusar-gpt detect-scene: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "no").exists()
    assert main(["detect-scene", str(run), str(tmp_path / "nope.tif"), "--no-aef", "--out", str(out)]) == 2


def test_nodata_tiles_are_skipped_and_a_resized_tile_maps_back(tmp_path):
    db = np.random.default_rng(1).uniform(-22, -12, size=(300, 700)).astype(np.float32)
    db[:, 400:] = -9999.0                     # the east tile is all nodata: nothing to ask about there
    db[100:112, 50:90] = SHIP_DB
    path = write_scene(tmp_path / "half_20240501.tif", db, transform=_rotated_transform(0.0), nodata=-9999.0)
    double = TruthDouble()
    s = detect_scene(double, ChipSpec(frame=224, grid=4, stretch=(-25.0, 5.0)), path, tmp_path / "d.geojson",
                     classes="ship", no_aef=True, tile=300, overlap=0)
    assert s["tiles"] == 3 and s["skipped_tiles"] == 1 and s["prompts"] == 2 and sum(double.batches) == 2
    fc = json.loads((tmp_path / "d.geojson").read_text())
    assert [f["properties"]["label"] for f in fc["features"]] == ["ship"]
    x1, y1, x2, y2 = fc["features"][0]["properties"]["bbox_px"]
    assert abs(x1 - 50) <= 1.5 and abs(x2 - 90) <= 1.5 and abs(y1 - 100) <= 1.5 and abs(y2 - 112) <= 1.5


def test_a_scene_with_too_many_tiles_is_refused_from_its_header(tmp_path):
    """A small sparse file declaring 100000 x 100000 pixels (390k tiles) is refused before any pixel is read;
    the tile count is the one chip_windows makes."""
    import time

    import rasterio

    from fusar_gpt.detect import check_inputs, tile_count
    from fusar_gpt.geo.plain import InputTooLarge

    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="float32",
                       crs="EPSG:32631", transform=Affine(10, 0, 500000, 0, -10, 5000000), tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate"):
        pass
    assert path.stat().st_size < 5_000_000
    t = time.perf_counter()
    with pytest.raises(InputTooLarge, match=r"100000x100000 pixels is \d+ tiles of 224 px, above the cap") as err:
        check_inputs(path, tmp_path / "out.geojson", None, ["ship"], None, 64, 224)
    assert time.perf_counter() - t < 5 and "\n" not in str(err.value)
    for w, h, size, overlap in ((224, 224, 224, 64), (1000, 300, 224, 64), (5000, 4000, 504, 0), (100, 50, 224, 10)):
        assert tile_count(w, h, size, overlap) == len(chip_windows(w, h, size, overlap))
