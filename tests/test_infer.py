"""``ask`` and batch inference: the same answer as calling the model directly, from a GeoTIFF or from the same
image as PNG + bbox + year; batches; every way of giving the prior; one-line errors, no partial files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fusar_gpt.__main__ import main
from fusar_gpt.chip import ChipSpec, load_chip, read_spec
from fusar_gpt.geo.aef import AEFStore
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.geo.frame import to_model_frame
from fusar_gpt.geo.radiometry import to_uint8
from fusar_gpt.geo.raster import read_sar
from fusar_gpt.infer import ask, ask_folder
from fusar_gpt.model.fusar import Priors
from fusar_gpt.model.loader import load_model

from .infer_helpers import YEAR, Spy, lonlat_scene, make_aef, make_run, utm_scene

Q = "How many ships are in this image?"
N = 12  # new tokens: enough to tell answers apart, cheap on the tiny model


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("infer")
    run = make_run(root, tiny_dir, frame=224, grid=4)
    aef = make_aef(root / "aef")
    utm = utm_scene(root / "utm_20240501.tif")
    geo, bbox = lonlat_scene(root / "geo.tif")
    return {"root": root, "run": run, "aef": aef, "utm": utm, "geo": geo, "bbox": bbox}


@pytest.fixture(scope="module")
def loaded(world):
    model, settings = load_model(world["run"])
    return model, settings, AEFStore(world["aef"], cache_dir=False)


def _direct(model, pixels, anchors) -> str:
    priors = Priors.stack([None if anchors is None else (anchors.features, anchors.positions, anchors.mask)])
    return model.answer([pixels], [Q], priors, max_new_tokens=N, do_sample=False)[0]


@torch.no_grad()
def _logits(model, pixels, anchors) -> torch.Tensor:
    from fusar_gpt.inputs import build_inputs

    priors = Priors.stack([None if anchors is None else (anchors.features, anchors.positions, anchors.mask)])
    return model(**build_inputs(model.processor, [pixels], [Q]), priors=priors).logits[0, -1]


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_settings_come_from_the_runs_dataset(world):
    assert read_spec(world["run"]) == ChipSpec(frame=224, grid=4, stretch=None)


def test_geotiff_answer_equals_the_direct_model_call(world, loaded):
    model, settings, store = loaded
    img = read_sar(world["utm"])
    pixels = to_model_frame(to_uint8(img), 224)[0]
    anchors = store.sample_raster(img.crs, img.transform, img.width, img.height, YEAR, grid=4)
    assert 0 < anchors.n_valid == 16
    spy = Spy(model)
    try:
        got = ask(model, settings, world["utm"], Q, store=store, max_new_tokens=N)
    finally:
        spy.restore()
    assert got["answer"] == _direct(model, pixels, anchors)
    assert got["year"] == YEAR and got["aef_year"] == YEAR and got["valid_anchors"] == 16
    fed = spy.calls[0]["priors"]  # the model was given exactly these anchors, not just a lucky same answer
    assert torch.equal(fed.features[0], torch.from_numpy(anchors.features)) and fed.mask.all()
    # the prior matters to this model (so equal answers are not an accident of a model that ignores it)
    assert not torch.allclose(_logits(model, pixels, anchors), _logits(model, pixels, None), atol=1e-3)


def test_png_plus_bbox_and_year_equals_the_geotiff_and_the_direct_call(world, loaded, tmp_path):
    model, settings, store = loaded
    img = read_sar(world["geo"])
    eight_bit = to_uint8(img)
    png = _png(tmp_path / "same.png", eight_bit)
    from_tif = ask(model, settings, world["geo"], Q, store=store, max_new_tokens=N)
    spy = Spy(model)
    try:
        from_png = ask(model, settings, png, Q, store=store, bbox=world["bbox"], year=YEAR, max_new_tokens=N)
    finally:
        spy.restore()
    direct = _direct(model, to_model_frame(eight_bit, 224)[0], store.sample(world["bbox"], YEAR, grid=4))
    assert from_png["answer"] == from_tif["answer"] == direct
    assert from_png["aef_year"] == from_tif["aef_year"] == YEAR
    # north-up lon/lat GeoTIFF: its pixel-grid anchors are the bbox anchors, to float precision
    a_tif = load_chip(world["geo"], settings, store=store).anchors
    np.testing.assert_allclose(spy.calls[0]["priors"].features[0].numpy(), a_tif.features, atol=1e-6)


def test_anchors_file_and_no_aef(world, loaded, tmp_path):
    model, settings, store = loaded
    png = _png(tmp_path / "chip.png", (np.random.default_rng(0).random((200, 300)) * 255).astype(np.uint8))
    anchors = store.sample(world["bbox"], YEAR, grid=4)
    anchors.save(tmp_path / "chip.npz")
    pixels = to_model_frame(np.asarray(Image.open(png)), 224)[0]
    assert ask(model, settings, png, Q, anchors=tmp_path / "chip.npz", max_new_tokens=N)["answer"] == \
        _direct(model, pixels, anchors)
    spy = Spy(model)
    try:
        got = ask(model, settings, png, Q, no_aef=True, max_new_tokens=N)
    finally:
        spy.restore()
    assert got["answer"] == _direct(model, pixels, None) and got["valid_anchors"] == 0
    assert not spy.calls[0]["priors"].mask.any()
    # multi-year anchor files give the asked year
    two = Anchors(np.stack([anchors.features, -anchors.features]), anchors.positions,
                  np.stack([anchors.mask, anchors.mask]), years=np.array([2023, 2024]))
    assert load_chip(png, settings, anchors=two, year=2023).anchors.year == 2023


@pytest.mark.parametrize("geo, needle", [
    ({}, "no AEF prior"),
    ({"store": "STORE"}, "has no georeference"),
    ({"store": "STORE", "bbox": (4.6, 43.6, 4.62, 43.61)}, "give the year"),
    ({"no_aef": True, "anchors": "x.npz"}, "contradict"),
])
def test_missing_geo_is_one_clear_error(loaded, tmp_path, geo, needle):
    _, settings, store = loaded
    png = _png(tmp_path / "p.png", np.zeros((64, 64), np.uint8))
    geo = {k: (store if v == "STORE" else v) for k, v in geo.items()}
    with pytest.raises(ValueError, match=needle):
        load_chip(png, settings, **geo)


def test_folder_is_answered_in_batches_with_per_image_errors(world, loaded, tmp_path):
    model, settings, store = loaded
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for k in range(4):
        _png(folder / f"c{k}.png", (rng.random((100, 120)) * 255).astype(np.uint8))
        store.sample(world["bbox"], YEAR, grid=4).save(folder / f"c{k}.npz")
    (folder / "broken.png").write_bytes(b"not an image")
    _png(folder / "nogeo.jpg", np.zeros((50, 50), np.uint8))   # no anchors beside it, no store -> refused
    spy = Spy(model)
    try:
        summary = ask_folder(model, settings, folder, Q, tmp_path / "out.jsonl", batch_size=3, max_new_tokens=N)
    finally:
        spy.restore()
    rows = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary == {"images": 6, "answered": 4, "errors": 2, "out": str(tmp_path / "out.jsonl")}
    assert [r["image"] for r in rows] == ["broken.png", "c0.png", "c1.png", "c2.png", "c3.png", "nogeo.jpg"]
    assert "broken.png: not a GeoTIFF, PNG or JPEG image" in rows[0]["error"] and "no AEF prior" in rows[-1]["error"]
    assert [len(c["input_ids"]) for c in spy.calls] == [3, 1]  # 4 usable images, batches of 3
    for r in rows[1:5]:  # each equals its own single ask (batching changes nothing)
        single = ask(model, settings, folder / r["image"], Q, anchors=folder / r["image"].replace(".png", ".npz"),
                     max_new_tokens=N)
        assert r["answer"] == single["answer"] and r["valid_anchors"] == single["valid_anchors"]


def test_cli_ask_geotiff_json_and_bad_input(world, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    run = str(world["run"])
    assert main(["ask", run, str(world["utm"]), Q, "--aef", str(world["aef"]), "--max-new-tokens", str(N),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model, settings = load_model(world["run"])
    want = ask(model, settings, world["utm"], Q, store=AEFStore(world["aef"], cache_dir=False), max_new_tokens=N)
    assert out["answer"] == want["answer"] and out["aef_year"] == YEAR
    capsys.readouterr()
    bad = [
        ["ask", run, str(tmp_path / "missing.tif"), Q, "--no-aef"],
        ["ask", run, str(world["utm"]), Q],                                            # no prior source
        ["ask", run, str(world["utm"]), Q, "--no-aef", "--aef", str(world["aef"])],
        ["ask", run, str(world["utm"]), Q, "--no-aef", "--bbox", "1,2,3"],
        ["ask", str(tmp_path), str(world["utm"]), Q, "--no-aef"],                      # not a run
        ["ask", run, str(world["root"]), Q, "--no-aef"],                               # a folder needs --out
    ]
    for argv in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fusar-gpt ask: error:") and "\n" not in err, err


def test_cli_manifest_and_folder_write_complete_files_only(world, capsys, tmp_path):
    from fusar_gpt.scoring import read_predictions

    img = tmp_path / "m.png"
    _png(img, np.full((224, 224), 90, np.uint8))
    recs = [{"id": f"r{k}", "image": "m.png", "aef": None, "coordinate_size": 224, "question": Q, "answer": str(k),
             "task": "count", "split": "test"} for k in range(3)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["ask", str(world["run"]), str(tmp_path / "manifest.jsonl"), "--out", str(tmp_path / "p.jsonl"),
                 "--batch-size", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answered"] == 3
    assert set(read_predictions(tmp_path / "p.jsonl")) == {"r0", "r1", "r2"}
    # an empty folder is bad input: exit 2 and no output file at all
    (tmp_path / "empty").mkdir()
    assert main(["ask", str(world["run"]), str(tmp_path / "empty"), Q, "--no-aef", "--out",
                 str(tmp_path / "none.jsonl")]) == 2
    assert not (tmp_path / "none.jsonl").exists() and not list(tmp_path.glob(".none.jsonl*"))


def test_cli_ask_says_so_on_stderr_when_the_answer_is_empty(world, capsys, tmp_path, tiny_dir):
    """A model that generates no text (here: its LM head zeroed, so greedy decoding picks token 0, the special
    <|endoftext|>, which decoding drops) prints a blank answer, exit 0, and a one-line note on stderr that the image
    was read; with --json, stdout stays one JSON object and stderr stays empty."""
    from fusar_gpt.model.backbone import load_backbone

    mute = tmp_path / "mute-base"
    shutil.copytree(tiny_dir, mute)
    backbone, _ = load_backbone(mute)
    with torch.no_grad():
        backbone.lm_head.weight.zero_()
    backbone.save_pretrained(str(mute))
    run = make_run(tmp_path / "mute", mute, frame=224, grid=4)
    capsys.readouterr()
    assert main(["ask", str(run), str(world["utm"]), Q, "--no-aef", "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out == "\n"
    notes = [ln for ln in err.splitlines() if "note:" in ln]  # beside the weight-loading progress bar
    assert len(notes) == 1 and notes[0].startswith("fusar-gpt ask: note: the model gave an empty answer for "
                                                   "utm_20240501.tif"), err
    assert main(["ask", str(run), str(world["utm"]), Q, "--no-aef", "--max-new-tokens", "4", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"] == "" and err == ""
    # a model that does answer gets no note
    assert main(["ask", str(world["run"]), str(world["utm"]), Q, "--no-aef", "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "note" not in err
