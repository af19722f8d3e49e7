"""The chip spec travels with the model, and every path into the model makes the same chip from the same file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fusar_gpt.__main__ import main
from fusar_gpt.chip import CHIP_FILE, ChipSpec, MissingChipSpec, load_chip, read_spec
from fusar_gpt.data.build import BuildConfig, build
from fusar_gpt.data.dataset import ManifestDataset, load_manifest
from fusar_gpt.geo.aef import AEFStore
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.infer import load_one
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.serve import ServeConfig
from fusar_gpt.serve_api import prepare_request

from .infer_helpers import YEAR, make_aef, make_run, utm_scene

SPEC = ChipSpec(frame=224, grid=5, stretch=(-22.0, -2.0))  # neither the default frame, grid nor stretch


def test_spec_round_trips_and_refuses_bad_values(tmp_path):
    assert ChipSpec.from_dict(SPEC.to_dict()) == SPEC
    SPEC.save(tmp_path)
    assert read_spec(tmp_path) == SPEC and not list(tmp_path.glob(".*"))
    for bad in ({"frame": 500}, {"grid": 0}, {"stretch": [5, -5]}, {"sampling": "nearest"}, {"eight_bit": "16"},
                {"stretch": "wide"}, {"frame": True}, {"scale": "linear"}):
        with pytest.raises(ValueError, match="chip"):
            ChipSpec.from_dict({**SPEC.to_dict(), **bad})
    assert ChipSpec(frame=224).differences(ChipSpec(frame=504, grid=4)) == ["frame: 224 != 504", "grid: 8 != 4"]
    with pytest.raises(MissingChipSpec, match="fusar-gpt chip-spec .* --frame 504"):
        read_spec(tmp_path / "nothing")


def test_one_geotiff_gives_identical_pixels_and_anchors_through_build_dataset_ask_and_serve(tmp_path):
    aef = make_aef(tmp_path / "aef")
    images = tmp_path / "images"
    images.mkdir()
    tif = utm_scene(images / "scene_20240501.tif", size=300)
    coco = {"images": [{"id": 1, "file_name": tif.name, "width": 300, "height": 300}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 120, 30, 20]}],
            "categories": [{"id": 1, "name": "ship"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    ds = tmp_path / "ds"
    build(BuildConfig(images=str(images), annotations=str(tmp_path / "coco.json"), aef=str(aef), out=str(ds),
                      frame=SPEC.frame, grid=SPEC.grid, stretch=SPEC.stretch, tasks=("count",),
                      split=(1.0, 0.0, 0.0)), progress=False)
    built = json.loads((ds / "build.json").read_text())
    assert ChipSpec.from_dict(built["chip"]) == SPEC
    record = load_manifest(ds / "manifest.jsonl")[0]
    pixels = np.asarray(Image.open(record["image"]))
    anchors = Anchors.load(record["aef"])
    assert pixels.shape == (224, 224) and len(anchors.positions) == 25
    assert record["meta"]["band"] == "band 1" and record["meta"]["scale"] == "db"  # what was read, recorded

    store = AEFStore(aef, cache_dir=False)
    asked = load_one(tif, SPEC, store=store)  # what `ask` (one image and the folder mode) reads images with
    config = ServeConfig(model_name="m", no_auth=True, image_root=str(images), chip=SPEC, store=store)
    served = prepare_request({"image": {"path": tif.name}, "geo": {"no_aef": False}}, config)
    geotiff_record = {**record, "image": str(tif)}  # a manifest that names the GeoTIFF itself
    from_dataset = np.asarray(ManifestDataset([geotiff_record], spec=SPEC)[0]["image"])[..., 0]
    for chip in (asked, served):
        assert np.array_equal(chip.image, pixels)
        assert np.array_equal(chip.anchors.features, anchors.features, equal_nan=True)
        assert np.array_equal(chip.anchors.positions, anchors.positions)
        assert np.array_equal(chip.anchors.mask, anchors.mask)
        assert chip.anchors.year == anchors.year == YEAR
    assert np.array_equal(from_dataset, pixels)
    # and the spec is what made them: another stretch gives other pixels on every path
    other = ChipSpec(frame=224, grid=5)
    # the scale is explicit in the spec: the same file read as linear intensity is another chip
    assert not np.array_equal(load_chip(tif, ChipSpec(frame=224, grid=5, stretch=SPEC.stretch, scale="intensity"),
                                        no_aef=True).image, pixels)
    assert not np.array_equal(load_chip(tif, other, no_aef=True).image, pixels)
    assert not np.array_equal(np.asarray(ManifestDataset([geotiff_record], spec=other)[0]["image"])[..., 0], pixels)


@pytest.fixture(scope="module")
def run_224(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("chip")
    run = make_run(root, tiny_dir, frame=224, grid=4, stretch=(-25.0, 5.0))
    scene = utm_scene(root / "scene_20240501.tif")
    return run, scene, make_aef(root / "aef")


def _ask(run, scene, aef, capsys) -> dict:
    assert main(["ask", str(run), str(scene), "How many ships are in this image?", "--aef", str(aef),
                 "--max-new-tokens", "8", "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _trained_copy(quick_demo, root):
    """A copy of the quick demo's FUSAR-GPT run (``train`` made it, at frame 224) and of its dataset, the copy's
    config.yaml naming the dataset copy: the shared fixture stays untouched whatever the test deletes."""
    out, _ = quick_demo
    run, ds = root / "run", root / "dataset"
    shutil.copytree(out / "fusar-gpt" / "stage2", run)
    shutil.copytree(out / "dataset", ds)
    config = (run / "config.yaml").read_text()
    assert str((out / "dataset").resolve()) in config  # train recorded where its data came from
    (run / "config.yaml").write_text(config.replace(str((out / "dataset").resolve()), str(ds.resolve())))
    return run, ds, out / "world"


def test_a_trained_run_answers_the_same_from_any_directory_after_its_dataset_is_deleted(quick_demo, tmp_path,
                                                                                       monkeypatch, capsys):
    run, ds, world = _trained_copy(quick_demo, tmp_path)
    spec = read_spec(run)
    assert spec.frame == 224 and spec == ChipSpec.from_dict(json.loads((ds / "build.json").read_text())["chip"])
    scene = sorted((world / "images").glob("*.tif"))[0].resolve()
    aef = (world / "aef").resolve()
    sizes = []
    answer = FusarGPT.answer

    def spy(self, images, *args, **kwargs):
        sizes.extend(np.asarray(im).shape[:2] for im in images)
        return answer(self, images, *args, **kwargs)

    monkeypatch.setattr(FusarGPT, "answer", spy)
    before = _ask(run, scene, aef, capsys)
    shutil.rmtree(ds)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    after = _ask(run, scene, aef, capsys)
    assert not ds.exists() and after == before and "answer" in before
    assert sizes == [(224, 224)] * 2  # the image went in at the run's frame, both times


def test_a_model_without_chip_json_is_refused_in_one_line_before_any_weight_loads(quick_demo, tmp_path, capsys):
    run, ds, world = _trained_copy(quick_demo, tmp_path)
    scene = sorted((world / "images").glob("*.tif"))[0]
    (run / CHIP_FILE).unlink()
    (run / "tlm.safetensors").unlink()  # loading any weight first would fail on this instead
    for command in (["ask", str(run), str(scene), "How many ships?", "--aef", str(world / "aef")],
                    ["eval", "--run", str(run), "--manifest", str(ds), "--out", str(tmp_path / "ev")],
                    ["detect-scene", str(run), str(scene), "--out", str(tmp_path / "d.geojson"), "--no-aef"],
                    ["export", str(run), "--merge", str(tmp_path / "exp")]):
        assert main(command) == 2, command[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no chip.json" in err[0] and "fusar-gpt chip-spec" in err[0], (command[0], err)
        assert "tlm" not in err[0], command[0]
    assert not (tmp_path / "d.geojson").exists() and not (tmp_path / "exp").exists()


def test_chip_spec_command_shows_adds_and_guards_the_spec(run_224, tmp_path, capsys):
    run, scene, aef = run_224
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / CHIP_FILE).unlink()
    assert main(["chip-spec", str(copy), "--dataset", str(run.parent / "ds"), "--json"]) == 0
    assert read_spec(copy) == read_spec(run)
    capsys.readouterr()
    assert _ask(copy, scene, aef, capsys) == _ask(run, scene, aef, capsys)
    assert main(["chip-spec", str(copy), "--frame", "504"]) == 2  # never replaced silently
    assert "--force" in capsys.readouterr().err
    assert main(["chip-spec", str(copy), "--frame", "504", "--eight-bit", "rgb", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {**ChipSpec().to_dict(), "frame": 504, "eight_bit": "rgb"}
    assert main(["chip-spec", str(copy), "--frame", "500", "--force"]) == 2
    assert "multiple of 28" in capsys.readouterr().err


def test_eval_names_the_fields_in_which_the_dataset_spec_differs(run_224, tmp_path):
    from fusar_gpt.evaluate import spec_differences

    run, _, _ = run_224
    assert spec_differences(read_spec(run), run.parent / "ds" / "manifest.jsonl") == []  # built as trained
    (tmp_path / "build.json").write_text(json.dumps({"chip": {**SPEC.to_dict(), "frame": 504}}))
    (tmp_path / "manifest.jsonl").write_text("")
    assert spec_differences(read_spec(run), tmp_path / "manifest.jsonl") == [
        "frame: 224 != 504", "grid: 4 != 5", "stretch: [-25.0, 5.0] != [-22.0, -2.0]"]
    (tmp_path / "build.json").unlink()  # an official manifest: nothing to compare with
    assert spec_differences(read_spec(run), tmp_path / "manifest.jsonl") == []
