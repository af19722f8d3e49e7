"""The triplet builder on the synthetic world and on the real Sentinel-1 GeoTIFF: records, anchors,
boxes, splits, quarantine, resumability after SIGKILL, shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusar_gpt.data.build import BuildConfig, assign_splits, build, merge
from fusar_gpt.data.dataset import ManifestDataset, load_manifest
from fusar_gpt.data.tasks import truth_boxes
from fusar_gpt.geo.aef import AEFStore, quantize
from fusar_gpt.geo.aef_tiles import write_tile
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.geo.raster import read_sar

from .conftest import SYNTH_WORLD

S1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "s1_geotiff" / (
    "S1A_IW_A_20150309T173017_VV_grd_mli_geo_norm_db.tif")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))


N = SYNTH_WORLD["scenes"]  # images of the world


@pytest.fixture(scope="module")
def world(synth_world):
    """The session's synthetic world (conftest): N scenes over 4 sites. Read-only: builds write elsewhere."""
    return synth_world[0]


def _cfg(world, out, **kw):
    kw = {"aef": str(world / "aef"), "frame": 224, **kw}
    return BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"), out=str(out), **kw)


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    os.environ.setdefault("FUSAR_GPT_CACHE", str(out / "cache"))
    summary = build(_cfg(world, out / "ds", split_by="scene"), progress=False)
    return out / "ds", summary


def test_synth_then_build_gives_loadable_records_and_counts(built):
    ds, summary = built
    records = load_manifest(ds / "manifest.jsonl")
    assert len(records) == summary["records"] > 0 and summary["quarantined"] == 0
    assert {r["task"] for r in records} == {"caption", "count", "locate", "classify", "detect"}
    data = ManifestDataset(ds / "manifest.jsonl")
    for i in range(len(data)):
        item = data[i]
        assert item["image"].size == (224, 224) and item["anchors"] is not None
    info = json.loads((ds / "build.json").read_text())
    counted = {}
    for r in records:
        counted.setdefault(r["task"], {}).setdefault(r["split"], 0)
        counted[r["task"]][r["split"]] += 1
    assert info["counts"] == counted and set().union(*[set(v) for v in counted.values()]) == {"train", "val", "test"}
    assert info["records"] == len(records) and info["images"] == N
    # every record's official fields are there, paths relative to the manifest
    first = json.loads((ds / "manifest.jsonl").read_text().splitlines()[0])
    assert {"id", "image", "aef", "coordinate_size", "question", "answer", "task", "split", "meta"} <= set(first)
    assert not os.path.isabs(first["image"]) and (ds / first["image"]).exists() and (ds / first["aef"]).exists()
    assert not list(ds.rglob(".*tmp*"))


def test_anchors_equal_a_direct_store_query(built, world):
    ds, _ = built
    store = AEFStore(world / "aef")
    seen = set()
    for r in load_manifest(ds / "manifest.jsonl"):
        if r["aef"] in seen:
            continue
        seen.add(r["aef"])
        img = read_sar(r["meta"]["source"])
        direct = store.sample_raster(img.crs, img.transform, img.width, img.height, img.date.year, grid=8)
        saved = Anchors.load(r["aef"])
        assert np.array_equal(saved.features, direct.features, equal_nan=True)
        assert np.array_equal(saved.positions, direct.positions) and saved.year == direct.year == r["meta"]["aef_year"]
    assert len(seen) == N


def test_boxes_on_saved_images_coincide_with_the_objects(built):
    ds, _ = built
    checked = 0
    for r in load_manifest(ds / "manifest.jsonl", tasks=["detect"]):
        if r["answer"] == "None":
            continue
        png = np.asarray(Image.open(r["image"]).convert("L"), np.float64)
        for obj in truth_boxes(r["answer"]):
            x1, y1, x2, y2 = obj["bbox_2d"]
            if (x2 - x1) * (y2 - y1) < 16:
                continue
            inside = png[y1:y2, x1:x2]
            ring = np.concatenate([png[max(y1 - 6, 0):y1, x1:x2].ravel(), png[y2:y2 + 6, x1:x2].ravel(),
                                   png[y1:y2, max(x1 - 6, 0):x1].ravel(), png[y1:y2, x2:x2 + 6].ravel()])
            # the target's brightest returns sit inside its box, not beside it
            assert inside.max() >= np.percentile(png, 99), (r["id"], obj)
            assert ring.size and np.percentile(inside, 90) > np.percentile(ring, 90), (r["id"], obj)
            checked += 1
    assert checked >= 5


def test_frame_boxes_are_the_source_boxes_scaled(built):
    ds, _ = built
    for r in load_manifest(ds / "manifest.jsonl", tasks=["detect"]):
        img = read_sar(r["meta"]["source"])
        sx, sy = 224 / img.width, 224 / img.height
        for src, fr in zip(r["meta"]["objects"], r["meta"]["frame_objects"]):
            want = np.rint(np.array(src["box"]) * [sx, sy, sx, sy])
            assert np.abs(np.array(fr["box"]) - want).max() <= 1
        # saved pixels are exactly the 8-bit frame of the source image
        from fusar_gpt.geo.frame import to_model_frame
        from fusar_gpt.geo.radiometry import to_uint8

        assert np.array_equal(np.asarray(Image.open(r["image"])), to_model_frame(to_uint8(img), 224)[0])
        break


def test_real_sentinel1_geotiff_builds_caption_and_detect(tmp_path):
    img = read_sar(S1)
    codes = quantize(np.random.default_rng(0).normal(size=(64, 512, 512)) * 0.12)
    for year in (2017, 2024):
        write_tile(tmp_path / "aef" / str(year) / "31N" / "t.tiff", codes, crs="EPSG:32631",
                   west=img.transform.c - 400, north=img.transform.f + 400, block_size=256, overviews=False)
    coco = {"images": [{"id": 1, "file_name": S1.name, "width": 268, "height": 217}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 80, 20, 10]}],
            "categories": [{"id": 1, "name": "ship"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    cfg = BuildConfig(images=[str(S1)], annotations=str(tmp_path / "coco.json"), aef=str(tmp_path / "aef"),
                      out=str(tmp_path / "ds"), tasks=("caption", "detect"), frame=224, sensor="Sentinel-1")
    summary = build(cfg, progress=False)
    assert summary["quarantined"] == 0
    records = load_manifest(tmp_path / "ds" / "manifest.jsonl")
    assert sorted({r["task"] for r in records}) == ["caption", "detect"]
    ship = next(r for r in records if r["task"] == "detect" and r["meta"]["class"] == "ship")
    sx, sy = 224 / 268, 224 / 217
    assert truth_boxes(ship["answer"]) == [{"bbox_2d": [round(100 * sx), round(80 * sy), round(120 * sx),
                                                        round(90 * sy)], "label": "ship"}]
    cap = next(r for r in records if r["task"] == "caption")
    assert "2015-03-09" in cap["answer"] and "ship" in cap["answer"]
    assert cap["meta"]["year"] == 2015 and cap["meta"]["aef_year"] == 2017
    assert Anchors.load(cap["aef"]).year == 2017


def _bad_inputs(world, tmp_path):
    """A copy of the world with one bad input of each kind next to the good ones."""
    bad = tmp_path / "bad"
    shutil.copytree(world / "images", bad / "images")
    coco = json.loads((world / "annotations.json").read_text())
    images = coco["images"]
    # an unreadable image: the file is cut in half
    data = (bad / "images" / images[0]["file_name"]).read_bytes()
    (bad / "images" / images[0]["file_name"]).write_bytes(data[: len(data) // 3])
    # a box outside the image
    coco["annotations"].append({"id": 9001, "image_id": images[1]["id"], "category_id": 1,
                                "bbox": [images[1]["width"] + 50, 10, 20, 20], "subtype": "cargo"})
    # an unknown category
    coco["annotations"].append({"id": 9002, "image_id": images[2]["id"], "category_id": 77, "bbox": [5, 5, 9, 9]})
    # a malformed entry (bad COCO JSON content): bbox with 3 numbers
    coco["annotations"].append({"id": 9003, "image_id": images[3]["id"], "category_id": 1, "bbox": [1, 2, 3]})
    # a place with no AEF tile: the same pixels georeferenced in the Pacific
    import rasterio
    from affine import Affine

    src = bad / "images" / images[4]["file_name"]
    with rasterio.open(src) as ds:
        profile, arr, tags = ds.profile, ds.read(), ds.tags()
    profile.update(crs="EPSG:32610", transform=Affine(2.0, 0, 300000, 0, -2.0, 2000000))
    nowhere = bad / "images" / "nowhere.tif"
    with rasterio.open(nowhere, "w", **profile) as ds:
        ds.write(arr)
        ds.update_tags(**tags)
    coco["images"].append({**images[4], "id": 999, "file_name": "nowhere.tif"})
    # degenerate images: one constant value (an all-zero export), and 8 x 8 px
    with rasterio.open(bad / "images" / images[5]["file_name"], "r+") as ds:
        ds.write(np.full((ds.count, ds.height, ds.width), 7, ds.dtypes[0]))
    with rasterio.open(src) as ds:
        profile, arr = ds.profile, ds.read(window=((0, 8), (0, 8)))
    profile.update(width=8, height=8, tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(bad / "images" / "tiny.tif", "w", **profile) as ds:
        ds.write(arr)
        ds.update_tags(**tags)
    coco["images"].append({**images[4], "id": 998, "file_name": "tiny.tif", "width": 8, "height": 8})
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 998]
    (bad / "annotations.json").write_text(json.dumps(coco))
    return bad, images


def test_bad_inputs_go_to_quarantine_and_valid_ones_are_kept(world, tmp_path):
    bad, images = _bad_inputs(world, tmp_path)
    summary = build(BuildConfig(images=str(bad / "images"), annotations=str(bad / "annotations.json"),
                                aef=str(world / "aef"), out=str(tmp_path / "ds"), frame=224), progress=False)
    quarantine = [json.loads(ln) for ln in (tmp_path / "ds" / "quarantine.jsonl").read_text().splitlines()]
    reasons = " | ".join(f"{q['image']}: {q['reason']}" for q in quarantine)
    expect = {images[0]["file_name"]: "read", images[1]["file_name"]: "outside",
              images[2]["file_name"]: "unknown category", images[3]["file_name"]: "bbox",
              "nowhere.tif": "no AEF tile", images[5]["file_name"]: "a constant image",
              "tiny.tif": "degenerate image: 8 x 8 px"}
    for name, why in expect.items():
        assert any(name in str(q["image"]) and why in q["reason"] for q in quarantine), (name, why, reasons)
    assert summary["images"] == N - 5 and len(quarantine) == 7  # every valid image is kept, each bad one once
    kept = {Path(r["meta"]["source"]).name for r in load_manifest(tmp_path / "ds" / "manifest.jsonl")}
    assert kept == {im["file_name"] for im in images[4:5] + images[6:N]}  # (images also holds the added ones)


def test_unparseable_annotation_file_is_a_one_line_error(world, tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError) as err:
        build(BuildConfig(images=str(world / "images"), annotations=str(tmp_path / "broken.json"),
                          aef=str(world / "aef"), out=str(tmp_path / "ds"), frame=224), progress=False)
    assert "\n" not in str(err.value) and "broken.json" in str(err.value)


def _snapshot(ds: Path) -> tuple[list[str], dict[str, bytes]]:
    lines = sorted((ds / "manifest.jsonl").read_text().splitlines())
    return lines, {p.name: p.read_bytes() for p in sorted((ds / "anchors").glob("*.npz"))}


def test_sigkill_mid_run_then_rerun_gives_the_same_dataset(world, built, tmp_path):
    ds, _ = built
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "fusar_gpt", "build", "--images", str(world / "images"), "--annotations",
           str(world / "annotations.json"), "--aef", str(world / "aef"), "--out", str(out), "--frame", "224",
           "--split-by", "scene", "--json"]
    env = {**os.environ, "FUSAR_GPT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "parts").glob("*.json"))) < 2:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "parts").glob("*.json")))
    assert 0 < done < N, f"kill landed after {done} of {N} images"
    assert not (out / "manifest.jsonl").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _snapshot(out) == _snapshot(ds)


def test_shards_then_merge_equal_one_build_and_workers_agree(world, built, tmp_path):
    ds, _ = built
    out = tmp_path / "ds"
    for i in range(2):
        r = build(_cfg(world, out, split_by="scene", shard=(i, 2)), progress=False)
        assert r["shard"] == f"{i}/2"
        if i == 0:
            with pytest.raises(ValueError, match="not built yet"):
                merge(out)
    merge(out)
    assert _snapshot(out) == _snapshot(ds)
    pooled = tmp_path / "pooled"
    build(_cfg(world, pooled, split_by="scene", workers=2), progress=False)
    assert _snapshot(pooled) == _snapshot(ds)


def test_split_by_site_keeps_sites_whole(world, tmp_path):
    build(_cfg(world, tmp_path / "ds", tasks=("count",)), progress=False)
    coco = json.loads((world / "annotations.json").read_text())
    site_of = {im["file_name"]: im["site"] for im in coco["images"]}
    split_of_site: dict[str, set] = {}
    for r in load_manifest(tmp_path / "ds" / "manifest.jsonl"):
        split_of_site.setdefault(site_of[Path(r["meta"]["source"]).name], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_site.values()) and len(split_of_site) == 4


def test_assign_splits_gives_every_split_a_group_and_is_stable():
    groups = [f"g{i}" for i in range(5)]
    a = assign_splits(groups, (0.8, 0.1, 0.1), seed=0)
    assert set(a.values()) == {"train", "val", "test"} and a == assign_splits(groups[::-1], (0.8, 0.1, 0.1), seed=0)
    big = assign_splits([f"s{i}" for i in range(1000)], (0.8, 0.1, 0.1), seed=1)
    assert abs(sum(v == "train" for v in big.values()) - 800) <= 1
    assert set(assign_splits(["only"], (0.8, 0.1, 0.1), seed=0).values()) == {"train"}


def test_workers_with_an_unusable_aef_root_end_at_once_with_the_one_worker_error(world, tmp_path):
    """A bad AEF root used to kill every pool worker in its initializer, and multiprocessing.Pool respawned them
    forever (a hang). Now --workers 2 exits 2 within seconds with the same one-line error as --workers 1."""
    (tmp_path / "empty-aef").mkdir()
    errors = []
    for workers in ("1", "2"):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fusar_gpt", "build", "--images", str(world / "images"),
                               "--annotations", str(world / "annotations.json"), "--aef", str(tmp_path / "empty-aef"),
                               "--out", str(tmp_path / f"ds{workers}"), "--workers", workers],
                              capture_output=True, text=True, timeout=60)
        assert time.perf_counter() - t < 10 and proc.returncode == 2
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
        assert len(lines) == 1
        errors.append(lines[0].replace(f"ds{workers}", "ds"))
    assert errors[0] == errors[1] and "no AEF tiles" in errors[0]


def _workers_alive(processes) -> list:
    """Those of ``processes`` that are running spawned (multiprocessing) workers, zombies excluded."""
    import psutil

    alive = []
    for c in processes:
        try:
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(c.cmdline()):
                alive.append(c)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_worker_that_dies_ends_the_build_with_a_one_line_error(world, tmp_path):
    """A worker killed mid-build (out of memory, say): the build stops with WorkerDied (a ValueError, so the CLI
    prints one line and exits 2) naming the signal, instead of waiting forever, and leaves no process behind."""
    import threading

    import psutil

    from fusar_gpt.data.build import WorkerDied

    outcome = {}

    def run():
        try:
            build(_cfg(world, tmp_path / "ds", split_by="scene", workers=2), progress=False)
            outcome["result"] = "finished"
        except BaseException as err:  # handed to the test thread
            outcome["result"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline, killed = time.monotonic() + 30, False
    while not killed and time.monotonic() < deadline and thread.is_alive():
        for child in psutil.Process().children(recursive=True):
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    child.kill()
                    killed = True
                    break
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.01)
    thread.join(timeout=30)
    assert killed and not thread.is_alive()
    assert isinstance(outcome["result"], WorkerDied) and "a build worker died" in str(outcome["result"])
    assert "SIGKILL" in str(outcome["result"]) or "as it started" in str(outcome["result"])
    # no worker outlives the build: one left waiting on its pipe made CI hang at exit (the stdlib executor
    # started a second worker while it tore the pool down after the first was killed)
    assert not _workers_alive(psutil.Process().children(recursive=True))


def test_ctrl_c_ends_a_pooled_build_in_one_line_with_exit_130_and_no_worker_left(world, tmp_path):
    """Ctrl-C reaches the whole process group. The parent says one line and exits 130; the workers, started with
    SIGINT ignored, print nothing of their own (before, each printed a KeyboardInterrupt traceback, and the
    parent its own) and are stopped by the parent."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "fusar_gpt", "build", "--images", str(world / "images"),
                             "--annotations", str(world / "annotations.json"), "--aef", str(world / "aef"),
                             "--out", str(tmp_path / "ds"), "--frame", "224", "--workers", "2"],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "FUSAR_GPT_CACHE": str(tmp_path / "cache")})
    workers, deadline = [], time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = _workers_alive(psutil.Process(proc.pid).children())
        time.sleep(0.01)
    time.sleep(0.1)  # both started (each is spawned with SIGINT ignored for that moment); they are still importing
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert len(workers) == 2 and proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    said = [ln for ln in err.replace("\r", "\n").splitlines() if "interrupted" in ln]
    assert said == ["fusar-gpt build: interrupted"]
    time.sleep(0.5)
    assert not _workers_alive(workers)


def test_a_build_where_every_image_is_quarantined_exits_2_naming_the_quarantine_file(world, tmp_path):
    """Only a truncated GeoTIFF where the images should be: the summary still prints, but a dataset of nothing is
    not a success (it used to exit 0): one error line pointing at the reasons, exit 2."""
    images = tmp_path / "images"
    images.mkdir()
    first = sorted((world / "images").iterdir())[0]
    (images / first.name).write_bytes(first.read_bytes()[: first.stat().st_size // 3])
    proc = subprocess.run([sys.executable, "-m", "fusar_gpt", "build", "--images", str(images), "--annotations",
                           str(world / "annotations.json"), "--aef", str(world / "aef"), "--out", str(tmp_path / "ds"),
                           "--frame", "224", "--json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FUSAR_GPT_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2 and json.loads(proc.stdout)["records"] == 0
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert errors[0].startswith("fusar-gpt build: error: no image could be built") and "quarantine.jsonl" in errors[0]
    reasons = [json.loads(ln) for ln in (tmp_path / "ds" / "quarantine.jsonl").read_text().splitlines()]
    mine = [r["reason"] for r in reasons if r["image"] == first.name]
    assert len(mine) == 1 and first.name in mine[0] and "not found" not in mine[0]  # read, and found unreadable


def test_png_chips_without_georeference_build_with_empty_priors_and_train(world, tmp_path):
    """The form of most public SAR detection sets: 8-bit PNG chips and a COCO file, no georeference. They build
    (pixels as they are, every anchor invalid, meta.geo null; build.json counts them), --require-geo quarantines
    them, and a model trains and is evaluated on the result."""
    from fusar_gpt.evaluate import evaluate_run
    from fusar_gpt.geo.radiometry import to_uint8
    from fusar_gpt.train import resolve_paths, train

    chips = tmp_path / "chips"
    chips.mkdir()
    coco = json.loads((world / "annotations.json").read_text())
    for im in coco["images"]:
        png = Path(im["file_name"]).with_suffix(".png").name
        Image.fromarray(to_uint8(read_sar(world / "images" / im["file_name"]))).save(chips / png)
        im["file_name"] = png
        for k in ("landcover", "landcover_grid", "date"):  # a public set carries none of the synthetic truths
            im.pop(k, None)
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    cfg = dict(images=str(chips), annotations=str(tmp_path / "coco.json"), aef=str(world / "aef"), frame=224,
               split=(0.5, 0.0, 0.5), split_by="scene", tasks=("count", "detect", "caption", "landcover"))
    summary = build(BuildConfig(out=str(tmp_path / "ds"), **cfg), progress=False)
    records = load_manifest(tmp_path / "ds" / "manifest.jsonl")
    assert summary["images"] == N and summary["quarantined"] == 0
    assert summary["priors"] == {"full": 0, "partial": 0, "none": len(records)}
    assert {r["task"] for r in records} == {"count", "detect", "caption"}  # no landcover truth without anchors
    assert all(r["meta"]["geo"] is None and r["meta"]["footprint"] is None for r in records)
    assert all(Anchors.load(r["aef"]).n_valid == 0 for r in records)
    first = records[0]
    src = np.asarray(Image.open(chips / Path(first["meta"]["source"]).name))
    built = np.asarray(Image.open(first["image"]).convert("L"))
    from fusar_gpt.geo.frame import to_model_frame

    assert np.array_equal(built, to_model_frame(src, 224, np.zeros((0, 4)))[0])  # the chip's own pixels, framed
    strict = build(BuildConfig(out=str(tmp_path / "strict"), require_geo=True, **cfg), progress=False)
    assert strict["quarantined"] == N and strict["records"] == 0
    # no AEF root at all: PNG chips alone still build, with the same records
    bare = build(BuildConfig(out=str(tmp_path / "bare"), **{**cfg, "aef": None}), progress=False)
    assert bare["records"] == summary["records"] and bare["quarantined"] == 0
    # a --geo sidecar (CSV: file, lon/lat box, date; one row as centre + pixel size) places them: real anchors
    truth = json.loads((world / "annotations.json").read_text())["images"]
    rows = ["file,lon_min,lat_min,lon_max,lat_max,lon,lat,pixel_m,date"]
    for k, im in enumerate(truth):
        g = read_sar(world / "images" / im["file_name"])
        lon0, lat0, lon1, lat1 = g.footprint
        png = Path(im["file_name"]).with_suffix(".png").name
        date = im.get("date") or g.date.isoformat()
        if k == 0:  # the centre form: the box follows from the chip's size and pixel size
            metres = abs(g.transform.a) if abs(g.transform.a) > 1e-3 else 10.0
            rows.append(f"{png},,,,,{(lon0 + lon1) / 2},{(lat0 + lat1) / 2},{metres},{date}")
        else:
            rows.append(f"{png},{lon0},{lat0},{lon1},{lat1},,,,{date}")
    (tmp_path / "places.csv").write_text("\n".join(rows) + "\n")
    placed = build(BuildConfig(out=str(tmp_path / "placed"), geo=str(tmp_path / "places.csv"), **cfg), progress=False)
    placed_records = load_manifest(tmp_path / "placed" / "manifest.jsonl")
    assert placed["images"] == N and placed["priors"]["none"] < len(placed_records)
    assert "landcover" in {r["task"] for r in placed_records}  # the anchors now tell the terrain
    assert all(r["meta"]["footprint"] is not None and r["meta"]["year"] for r in placed_records)
    assert sum(Anchors.load(r["aef"]).n_valid > 0 for r in placed_records) > len(placed_records) // 2
    (tmp_path / "bad.csv").write_text("file,lon,lat,date\nx.png,4.5,43.6,2024-05-01\n")  # no pixel_m, no box
    with pytest.raises(ValueError, match=r"bad.csv line 2: .*lon, lat and pixel_m"):
        build(BuildConfig(out=str(tmp_path / "bad"), geo=str(tmp_path / "bad.csv"), **cfg), progress=False)
    # a model trains on it and is evaluated on it
    from fusar_gpt.config import load_recipe

    configs = Path(__file__).resolve().parents[1] / "configs"
    recipe = load_recipe(configs / "tiny-cpu" / "stage1.yaml",
                         {"model.preset": "tiny", "train.max_steps": 2, "train.batch_size": 2, "data.tasks": ["count"],
                          "data.val_split": None, "train.save_every": 0})
    run = tmp_path / "run"
    train(resolve_paths(recipe, out=str(run), data=str(tmp_path / "ds")), progress=False)
    result = evaluate_run(run, tmp_path / "ds" / "manifest.jsonl", split="test", tasks=["count"], out=tmp_path / "ev",
                          progress=False, n_boot=20)
    assert result["n"] > 0 and result["unreadable"] == 0 and result["metrics"]["count"]["missing"] == 0


def _all_files(ds: Path) -> dict[str, bytes]:
    return {p.relative_to(ds).as_posix(): p.read_bytes() for p in sorted(ds.rglob("*"))
            if p.is_file() and p.parent.name in ("images", "anchors")}


def test_a_rerun_with_changed_settings_gives_what_a_fresh_build_gives(world, tmp_path):
    """Re-running into the same --out after fixing --aef, or with another --frame or --tasks, used to reuse the
    old parts (0 records, the old frame) while build.json claimed the new settings."""
    from fusar_gpt.geo.aef_tiles import tile_origin, write_tile

    zone, epsg, west, north = tile_origin(-60.0, -30.0, 64)  # tiles, but far from the world's sites
    write_tile(tmp_path / "empty-aef" / "2019" / zone / "t.tiff", np.zeros((64, 64, 64), np.int8),
               crs=f"EPSG:{epsg}", west=west, north=north, block_size=64)
    out = tmp_path / "ds"
    first = build(_cfg(world, out, aef=str(tmp_path / "empty-aef"), split_by="scene"), progress=False)
    assert first["records"] == 0 and first["quarantined"] == N
    steps = [dict(split_by="scene"), dict(split_by="scene", frame=112), dict(split_by="scene", frame=112,
                                                                          tasks=("count", "caption"))]
    for k, kw in enumerate(steps):
        again = build(_cfg(world, out, **kw), progress=False)
        fresh = build(_cfg(world, tmp_path / f"fresh{k}", **kw), progress=False)
        assert again["records"] == fresh["records"] > 0 and again["config"] == {**fresh["config"], "out": str(out)}
        assert _snapshot(out) == _snapshot(tmp_path / f"fresh{k}")
        assert _all_files(out) == _all_files(tmp_path / f"fresh{k}")
    # --fresh starts over (same result), and an untouched re-run reuses every part
    assert build(_cfg(world, out, fresh=True, **steps[-1]), progress=False)["records"] == fresh["records"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.json")}
    build(_cfg(world, out, **steps[-1]), progress=False)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.json")}
    # an image dropped from --images: its part, chip and anchors go too (they used to stay behind)
    kept = sorted(str(p) for p in (world / "images").glob("*.tif"))[1:]
    dropped = Path(sorted((world / "images").glob("*.tif"))[0]).stem
    for folder in (out, tmp_path / "fresh-drop"):
        build(BuildConfig(**{**vars(_cfg(world, folder, **steps[-1])), "images": kept, "subtypes": None}),
              progress=False)
    assert not list(out.rglob(f"{dropped}.*"))
    assert _tree(out) == _tree(tmp_path / "fresh-drop")


def _tree(ds: Path) -> dict[str, bytes | None]:
    """Every file of a dataset folder; the bytes of those that do not name the folder itself."""
    return {p.relative_to(ds).as_posix(): None if p.name in ("plan.json", "build.json") else p.read_bytes()
            for p in sorted(ds.rglob("*")) if p.is_file()}


def test_replacing_the_aef_index_in_place_remakes_the_parts(world, tmp_path):
    """The index file is fingerprinted by content (size, time), not by its path only: one tile fewer in the same
    file used to leave the old parts (and their records) in place."""
    index = tmp_path / "aef_index.csv"
    header, *rows = (world / "aef" / "aef_index.csv").read_text().splitlines()
    index.write_text("\n".join([header, *rows]) + "\n")
    kw = dict(aef_index=str(index), tasks=("count",), split_by="scene")
    first = build(_cfg(world, tmp_path / "ds", **kw), progress=False)
    index.write_text("\n".join([header, *rows[1:]]) + "\n")  # in place: the same path, one tile fewer
    again = build(_cfg(world, tmp_path / "ds", **kw), progress=False)
    fresh = build(_cfg(world, tmp_path / "fresh", **kw), progress=False)
    assert again["records"] == fresh["records"] < first["records"]
    assert _snapshot(tmp_path / "ds") == _snapshot(tmp_path / "fresh")


def test_an_environment_error_in_a_worker_is_one_line_exit_2_keeping_finished_parts(world, tmp_path):
    """A folder where the third image's anchors file goes (an OSError, not a problem of that image's inputs): the
    build used to print a traceback and exit 1. Now: one line naming the image and the cause, the same for
    --workers 1 and 2, exit 2 within seconds, and the parts of the images finished before it kept."""
    from fusar_gpt.data.build import plan

    jobs, _ = plan(_cfg(world, tmp_path / "probe"))
    stems = [j.stem for j in jobs]
    lines = []
    for workers in ("1", "2"):
        out = tmp_path / f"ds{workers}"
        (out / "anchors" / f"{stems[2]}.npz").mkdir(parents=True)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fusar_gpt", "build", "--images", str(world / "images"),
                               "--annotations", str(world / "annotations.json"), "--aef", str(world / "aef"),
                               "--out", str(out), "--frame", "224", "--tasks", "count", "--workers", workers,
                               "--json"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "FUSAR_GPT_CACHE": str(tmp_path / "cache")})
        assert time.perf_counter() - t < 10 and proc.returncode == 2, proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in proc.stderr and not proc.stdout
        lines.append(err[0].replace(f"ds{workers}", "ds"))
        assert all((out / "parts" / f"{s}.json").is_file() for s in stems[:2])
        assert not (out / "parts" / f"{stems[2]}.json").exists()
    assert lines[0] == lines[1]
    assert f"error: {Path(jobs[2].path).name}: IsADirectoryError: Is a directory:" in lines[0]
