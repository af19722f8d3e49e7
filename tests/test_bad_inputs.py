"""The bad-input corpus (issue 17): one generated case of each kind the probe found, through the command line.

Each case must end in exactly one of: exit 2 with ONE line on stderr naming the input (never a traceback, never
a hang), or a quarantine entry with its reason while the valid inputs build. HTTP cases live in test_serve.py
(they need the loopback server); recipe ranges in test_recipes.py; this file keeps one of each kind together so
that none comes back unnoticed. No large file is committed: the bombs are a few KB, generated here.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import rasterio
from affine import Affine

from fusar_gpt.__main__ import main

from .infer_helpers import YEAR, listener, make_aef, make_run, sparse_tif, utm_scene, write_scene


def bomb_png(path, side: int = 15000):
    """A 1-bit PNG of side x side pixels in ~30 KB (225 million pixels when decoded)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * side, 9)) + chunk(b"IEND", b""))
    return path


def vrt_tif(path, target):
    path.write_text(f'<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1">'
                    f'<SimpleSource><SourceFilename>{target}</SourceFilename><SourceBand>1</SourceBand>'
                    f'</SimpleSource></VRTRasterBand></VRTDataset>')
    return path


def one_line_exit_2(argv, capsys, *needles) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("bad")
    return make_run(root, tiny_dir), make_aef(root / "aef"), root


ASK = "How many ships are in this image?"


def test_ask_refuses_each_bad_image_in_one_line(run, tmp_path, capsys):
    model, aef, _ = run
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x07" * 300)
    one_line_exit_2(["ask", model, corrupt, ASK, "--aef", aef], capsys, "corrupt.tif")
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=32, height=32, count=1, dtype="float32") as ds:
        ds.write(np.random.default_rng(0).random((1, 32, 32), np.float32))
    one_line_exit_2(["ask", model, plain, ASK, "--aef", aef], capsys, "plain.tif", "georeference")
    one_line_exit_2(["ask", model, vrt_tif(tmp_path / "v.tif", "/etc/hostname"), ASK, "--no-aef"], capsys,
                    "not a GeoTIFF, PNG or JPEG")
    one_line_exit_2(["ask", model, bomb_png(tmp_path / "bomb.png"), ASK, "--no-aef"], capsys, "bomb.png")
    scene = utm_scene(tmp_path / "utm_20240501.tif")
    for year in ("-3", "99999999999999999999"):
        one_line_exit_2(["ask", model, scene, ASK, "--aef", aef, "--year", year], capsys, "year")
    one_line_exit_2(["ask", model, scene, "x" * 16_001, "--aef", aef], capsys, "16000")


def test_ask_refuses_a_scene_sized_image_from_its_header(run, tmp_path, capsys):
    """A 20000 x 20000 GeoTIFF is a scene, not a chip: refused in one line pointing to detect-scene, before any pixel
    is read (it took 46 s and 4.3 GB under the readers' 2**29 cap); --max-pixels raises the cap."""
    import time

    model, _, _ = run
    big = sparse_tif(tmp_path / "big_20240501.tif", 20_000)
    assert big.stat().st_size < 200_000  # the block offset table; 400 MB once read
    started = time.monotonic()
    one_line_exit_2(["ask", model, big, ASK, "--no-aef"], capsys, "big_20240501.tif", "20000x20000", "detect-scene")
    assert time.monotonic() - started < 5
    one_line_exit_2(["ask", model, sparse_tif(tmp_path / "small.tif", 64), ASK, "--no-aef", "--max-pixels", "1000"],
                    capsys, "64x64", "1000")


def test_detect_scene_refuses_a_scene_of_too_many_tiles_from_its_header(run, tmp_path, capsys):
    model, aef, _ = run
    huge = sparse_tif(tmp_path / "huge.tif", 100_000)
    one_line_exit_2(["detect-scene", model, huge, "--no-aef", "--out", tmp_path / "d.geojson"], capsys,
                    "huge.tif", "tiles", "--max-tiles")


def test_broken_run_directories_are_one_line_naming_the_file(run, tmp_path, capsys):
    import shutil

    model, aef, root = run
    scene = utm_scene(tmp_path / "utm_20240501.tif")
    cases = {"tlm.safetensors": b"", "tlm.json": b"{not json", "config.yaml": b"model: [unclosed",
             "adapter/adapter_config.json": b"\x00\x01garbage"}
    for name, data in cases.items():
        broken = tmp_path / f"run-{name.replace('/', '_')}"
        shutil.copytree(model, broken)
        (broken / name).write_bytes(data)
        one_line_exit_2(["ask", broken, scene, ASK, "--no-aef", "--json"], capsys, name.split("/")[-1])
    bare = tmp_path / "no-chip"
    shutil.copytree(model, bare)
    (bare / "chip.json").unlink()
    one_line_exit_2(["ask", bare, scene, ASK, "--no-aef", "--json"], capsys, "chip.json", "fusar-gpt chip-spec")


DEEP = "[" * 100_000 + "]" * 100_000  # nesting that exhausts a recursive parser's stack (RecursionError)


@pytest.mark.parametrize("name, text", [("config.yaml", "model: " + DEEP), ("chip.json", DEEP),
                                        ("adapter/adapter_config.json", DEEP), ("export.json", DEEP)])
def test_deeply_nested_model_files_are_one_line_naming_the_file(run, tmp_path, capsys, name, text):
    import shutil

    model, _, _ = run
    broken = tmp_path / "run"
    shutil.copytree(model, broken)
    (broken / name).write_text(text)
    scene = utm_scene(tmp_path / "utm_20240501.tif")
    one_line_exit_2(["ask", broken, scene, ASK, "--no-aef", "--json"], capsys, name.split("/")[-1], "nested")


def test_a_deeply_nested_chip_json_is_one_line_for_every_reader(run, tmp_path, capsys):
    """chip.json is read by the loader, ``chip-spec`` and ``export``: each says one line, none a RecursionError."""
    import shutil

    model, _, _ = run
    broken = tmp_path / "run"
    shutil.copytree(model, broken)
    (broken / "chip.json").write_text(DEEP)
    one_line_exit_2(["chip-spec", broken], capsys, "chip.json", "nested")
    one_line_exit_2(["export", broken, "--merge", tmp_path / "merged"], capsys, "chip.json", "nested")


def test_a_deeply_nested_detect_answer_is_one_line(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "a.png", "coordinate_size": 224, "task": "detect",
                                    "question": "Detect the ships.", "answer": DEEP}) + "\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "a", "answer": "None"}) + "\n")
    one_line_exit_2(["score", "--predictions", preds, "--manifest", manifest], capsys, "detect answer")


def _coco(path, images, anns):
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    return path


def test_build_quarantines_each_bad_image_and_keeps_the_valid_ones(tmp_path, capsys):
    aef = make_aef(tmp_path / "aef")
    images = tmp_path / "images"
    images.mkdir()
    good = utm_scene(images / "good_20240501.tif", size=64)
    t = Affine(10.0, 0.0, 500_600.0, 0.0, -10.0, 4_800_000.0)
    write_scene(images / "zero_20240501.tif", np.zeros((64, 64), np.float32), transform=t)
    write_scene(images / "nan_20240501.tif", np.full((64, 64), np.nan, np.float32), transform=t)
    write_scene(images / "tiny_20240501.tif", np.random.default_rng(1).random((1, 1), np.float32), transform=t)
    write_scene(images / "pacific_20240501.tif", np.random.default_rng(2).random((64, 64), np.float32),
                transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 1e8))
    vrt_tif(images / "vrt_20240501.tif", good)
    sparse_tif(images / "huge_20240501.tif", 30_000)  # 9e8 pixels in 250 KB: above the readers' cap
    sparse_tif(images / "scene_20240501.tif", 20_000)  # 4e8 pixels in ~100 KB: under the readers' cap, a scene
    names = ["good_20240501.tif", "zero_20240501.tif", "nan_20240501.tif", "tiny_20240501.tif",
             "pacific_20240501.tif", "vrt_20240501.tif", "typed_20240501.tif", "huge_20240501.tif",
             "scene_20240501.tif"]
    utm_scene(images / "typed_20240501.tif", size=64, seed=3)
    coco = _coco(tmp_path / "coco.json",
                 [{"id": i + 1, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(names)],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8]},
                  {"id": 2, "image_id": "7", "category_id": 1, "bbox": [10, 10, 8, 8]}])  # "7" for the int id 7
    out = tmp_path / "ds"
    assert main([str(a) for a in ["build", "--images", images, "--annotations", coco, "--aef", aef, "--out", out,
                                  "--frame", "224", "--tasks", "count", "--split", "1,0,0", "--json"]]) == 0
    capsys.readouterr()
    quarantine = {json.loads(ln)["image"]: json.loads(ln)["reason"]
                  for ln in (out / "quarantine.jsonl").read_text().splitlines()}
    built = {json.loads(ln)["meta"]["source"].rsplit("/", 1)[-1]
             for ln in (out / "manifest.jsonl").read_text().splitlines()}
    assert built == {"good_20240501.tif"}
    expect = {"zero_20240501.tif": "constant", "nan_20240501.tif": "no valid pixel", "tiny_20240501.tif": "1 x 1",
              "pacific_20240501.tif": "area of use", "vrt_20240501.tif": "not a readable raster",
              "typed_20240501.tif": "image_id", "huge_20240501.tif": "above the chip cap",
              "scene_20240501.tif": "20000x20000 pixels is above the chip cap of 100000000 (--max-pixels)"}
    for name, needle in expect.items():
        reasons = [r for img, r in quarantine.items() if name in img or (needle == "image_id" and "image_id" in r)]
        assert reasons and any(needle in r for r in reasons), (name, quarantine)


def test_build_and_score_refuse_malformed_files_in_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    images = tmp_path / "images"
    images.mkdir()
    utm_scene(images / "a_20240501.tif", size=32)
    one_line_exit_2(["build", "--images", images, "--annotations", deep, "--aef", make_aef(tmp_path / "aef"),
                     "--out", tmp_path / "ds"], capsys, "deep.json")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "a.png", "coordinate_size": 224, "question": "q\u2028x",
                                    "answer": "1", "task": "count"}, ensure_ascii=False) + "\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "nobody", "answer": "1"}) + "\n")
    one_line_exit_2(["score", "--predictions", preds, "--manifest", manifest], capsys, "p.jsonl")
    preds.write_text("")
    one_line_exit_2(["score", "--predictions", preds, "--manifest", manifest], capsys, "p.jsonl")


@pytest.mark.parametrize("text, key", [
    ("train: {max_grad_norm: -1}", "max_grad_norm"), ("train: {lr: .inf}", "lr"), ("lora: {alpha: -32}", "alpha"),
    ("tlm: {sigma: .inf}", "sigma"), ("lora: {r: 100000000}", "lora.r"), ("inherit: [a, b]", "inherit"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]", "alias"), ("x: " + "[" * 100_000 + "]" * 100_000, "r.yaml"),
])
def test_absurd_recipes_are_one_line_naming_the_key(text, key, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: bad\nstage: 1\nmodel: {preset: tiny}\n" + text + "\n")
    one_line_exit_2(["train", recipe, "--data", tmp_path / "none.jsonl", "--out", tmp_path / "run"], capsys, key)
    assert not (tmp_path / "run").exists()


def test_year_and_geo_values_out_of_range_are_refused(run, tmp_path, capsys):
    _, aef, _ = run
    one_line_exit_2(["aef", "sample", "--aef", aef, "--bbox", "2.0,45.0,2.1,45.1", "--year", "-3"], capsys,
                    "year")
    one_line_exit_2(["aef", "sample", "--aef", aef, "--bbox", "2.0,95.0,2.1,96.0", "--year", str(YEAR)], capsys,
                    "lat")


def test_non_finite_or_torn_weights_are_refused_naming_the_file(run, tmp_path, capsys):
    import shutil

    import torch

    from fusar_gpt.model.official import export_official
    from fusar_gpt.model.tlm import TLM

    tlm = TLM(24, sigma=2.0)
    with torch.no_grad():
        tlm.mlp[0].weight[0, 0] = float("nan")
    export_official(tlm, tmp_path / "official")
    one_line_exit_2(["import-official", tmp_path / "official", "--out", tmp_path / "imported"], capsys,
                    "vec64_film.pt", "non-finite")
    assert not (tmp_path / "imported").exists()
    model, _, _ = run
    torn = tmp_path / "torn-adapter"
    shutil.copytree(model, torn)
    weights = next((torn / "adapter").glob("adapter_model.*"))
    weights.write_bytes(weights.read_bytes()[:100])
    scene = utm_scene(tmp_path / "utm_20240501.tif")
    one_line_exit_2(["ask", torn, scene, ASK, "--no-aef", "--json"], capsys, "adapter")


def test_a_quarantined_no_tile_image_is_tried_again_once_its_tile_exists(tmp_path):
    """The cause of "no AEF tile covers its footprint" can go away under the same --aef (tiles pulled since):
    a re-run tries that image again; other parts are reused."""
    from fusar_gpt.data.build import BuildConfig, build
    from fusar_gpt.geo.aef_tiles import write_tile

    from .infer_helpers import AEF_PX, AEF_SIZE, EPSG, NORTH, WEST

    aef = make_aef(tmp_path / "aef")
    images = tmp_path / "images"
    images.mkdir()
    utm_scene(images / "near_20240501.tif", size=64)
    far = Affine(10.0, 0.0, WEST + 20_000.0, 0.0, -10.0, NORTH - 500.0)  # 20 km east: outside the one tile
    write_scene(images / "far_20240501.tif", np.random.default_rng(5).random((64, 64), np.float32) * 0.1,
                transform=far)
    coco = _coco(tmp_path / "coco.json", [{"id": 1, "file_name": "near_20240501.tif", "width": 64, "height": 64},
                                          {"id": 2, "file_name": "far_20240501.tif", "width": 64, "height": 64}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8]},
                  {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 8, 8]}])
    cfg = dict(images=str(images), annotations=str(coco), aef=str(aef), out=str(tmp_path / "ds"), frame=224,
               tasks=("count",), split=(1.0, 0.0, 0.0))
    first = build(BuildConfig(**cfg), progress=False)
    assert first["quarantined"] == 1 and "no AEF tile covers" in (tmp_path / "ds" / "quarantine.jsonl").read_text()
    near_part = (tmp_path / "ds" / "parts" / "near_20240501.json").stat().st_mtime_ns
    codes = np.random.default_rng(9).integers(-127, 128, size=(64, AEF_SIZE, AEF_SIZE)).astype(np.int8)
    write_tile(aef / str(YEAR) / "31N" / "east.tiff", codes, crs=f"EPSG:{EPSG}", west=WEST + 18_000.0, north=NORTH,
               pixel_size=AEF_PX, block_size=64, overviews=False)
    again = build(BuildConfig(**cfg), progress=False)
    assert again["quarantined"] == 0 and again["images"] == 2
    assert (tmp_path / "ds" / "parts" / "near_20240501.json").stat().st_mtime_ns == near_part  # reused


def test_report_examples_skip_a_decompression_bomb(tmp_path):
    """A 30 KB PNG declaring 225 million pixels among the detect records: skipped, the others still drawn."""
    from PIL import Image

    from fusar_gpt.report_examples import example_panels

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(good)
    box = json.dumps([{"bbox_2d": [1, 1, 9, 9], "label": "ship"}])
    records = [{"id": str(i), "task": "detect", "image": str(p), "answer": box, "coordinate_size": 32}
               for i, p in enumerate([bomb_png(tmp_path / "bomb.png"), good])]
    panels = example_panels(records, {"0": box, "1": box}, n=2)
    assert [r["id"] for r, *_ in panels] == ["1"]


def _count_records(tmp_path, images: dict, question: str = ASK):
    """A test-split manifest of count records, one per ``{name: path}``, images relative to the manifest."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": rid, "image": str(path.relative_to(tmp_path)), "coordinate_size": 224,
                                            "question": question, "answer": "1", "task": "count", "split": "test"})
                                + "\n" for rid, path in images.items()))
    return manifest


def test_eval_answers_the_other_records_beside_a_decompression_bomb(run, tmp_path, capsys):
    from PIL import Image

    model, _, _ = run
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224), dtype=np.uint8)).save(good)
    manifest = _count_records(tmp_path, {"bomb": bomb_png(tmp_path / "bomb.png"), "good": good})
    out = tmp_path / "eval"
    assert main(["eval", "--run", str(model), "--manifest", str(manifest), "--out", str(out), "--json"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "eval:" in line or "Traceback" in line]
    assert len(err) == 1 and "1 of 2 records" in err[0] and "bomb" in err[0], err
    rows = {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert "error" in rows["bomb"] and "answer" in rows["good"] and "error" not in rows["good"], rows


def test_eval_refuses_a_50_mb_question_in_one_line(run, tmp_path, capsys):
    """Refused while the manifest is read, before any tokenizer sees it (in process: a subprocess costs 12 s of
    imports here, and a native abort, SIGABRT from a tokenizer, would end the whole test run loudly anyway)."""
    model, _, _ = run
    good = tmp_path / "good.png"
    good.write_bytes(b"")  # never read: the record is refused before any image or weight
    manifest = _count_records(tmp_path, {"big": good}, question="ships " * 8_500_000)
    assert manifest.stat().st_size > 50_000_000
    one_line_exit_2(["eval", "--run", model, "--manifest", manifest, "--out", tmp_path / "eval"], capsys,
                    "m.jsonl", "16000")


def test_detect_scene_refuses_a_vrt_under_a_tif_name_and_fetches_nothing(run, tmp_path, capsys):
    model, _, _ = run
    with listener() as (port, hits):
        scene = vrt_tif(tmp_path / "scene.tif", f"/vsicurl/http://127.0.0.1:{port}/x.tif")
        one_line_exit_2(["detect-scene", model, scene, "--no-aef", "--out", tmp_path / "d.geojson"], capsys,
                        "scene.tif")
    assert hits == [] and not (tmp_path / "d.geojson").exists()
