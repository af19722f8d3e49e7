"""Real inputs that are not single-band georeferenced GeoTIFFs, through build: TIFFs without georeference (the
chip path: an empty prior, or anchors where a --geo row places them), a quad-pol GRD, a JPEG chip, and bad
--bands / --pol values (one line, exit 2, before any image is read)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from fusar_gpt.chip import ChipSpec, load_chip
from fusar_gpt.data.build import BuildConfig, build
from fusar_gpt.data.dataset import load_manifest
from fusar_gpt.geo.aef import AEFStore
from fusar_gpt.geo.aef_tiles import tile_origin, write_tile
from fusar_gpt.geo.anchors import Anchors
from fusar_gpt.geo.frame import to_model_frame
from fusar_gpt.geo.raster import read_sar

ZONE, EPSG, WEST, NORTH = tile_origin(4.6, 43.6, 128)
T = Affine(10.0, 0.0, WEST + 300.0, 0.0, -10.0, NORTH - 300.0)  # a 64 x 64 px scene well inside the tile
FRAME, GRID = 56, 4


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def aef(tmp_path_factory):
    """One 128 px AEF tile (bucket layout, no nodata) holding the scene."""
    root = tmp_path_factory.mktemp("aef")
    codes = np.random.default_rng(0).integers(-127, 128, (64, 128, 128)).astype(np.int8)
    write_tile(root / "2024" / ZONE / "t.tiff", codes, crs=f"EPSG:{EPSG}", west=WEST, north=NORTH, block_size=128,
               overviews=False)
    return root


def _speckle(seed: int) -> np.ndarray:
    db = np.random.default_rng(seed).uniform(-22.0, -12.0, (64, 64)).astype(np.float32)
    db[24:30, 20:30] = 3.0  # the ship the annotation boxes
    return db


def _tif(path: Path, bands, descriptions=(), *, georef: bool = True) -> Path:
    arr = np.stack(bands).astype(np.float32)
    place = {"crs": f"EPSG:{EPSG}", "transform": T} if georef else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=len(arr), dtype="float32",
                           **place) as ds:
            ds.write(arr)
            for k, d in enumerate(descriptions, start=1):
                ds.set_band_description(k, d)
            ds.update_tags(ACQUISITION_DATE="2024-05-01")
    return path


def _coco(path: Path, files) -> Path:
    path.write_text(json.dumps({
        "images": [{"id": k, "file_name": f, "width": 64, "height": 64} for k, f in enumerate(files, start=1)],
        "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [20, 24, 10, 6]}
                        for k in range(1, len(files) + 1)],
        "categories": [{"id": 1, "name": "ship"}]}))
    return path


def _build(tmp_path: Path, out: str, **kw) -> tuple[dict, dict[str, dict]]:
    summary = build(BuildConfig(images=str(tmp_path / "images"), annotations=str(tmp_path / "coco.json"),
                                out=str(tmp_path / out), frame=FRAME, grid=GRID, tasks=("count",),
                                split=(1.0, 0.0, 0.0), **{"aef": None, **kw}), progress=False)
    records = load_manifest(tmp_path / out / "manifest.jsonl")
    return summary, {Path(r["meta"]["source"]).name: r for r in records}


def _quarantine(ds: Path) -> list[dict]:
    return [json.loads(ln) for ln in (ds / "quarantine.jsonl").read_text().splitlines()]


def test_a_tiff_without_georeference_takes_the_chip_path(aef, tmp_path):
    """No CRS, no GCPs: an empty prior and meta.geo null like a PNG chip (it used to be quarantined asking for a
    'footprint' option build does not have); placed by a --geo row it gets the anchors of that box; under
    --require-geo the unplaced one is quarantined naming --geo."""
    images = tmp_path / "images"
    images.mkdir()
    db = _speckle(1)
    _tif(images / "bare.tif", [db], georef=False)
    _tif(images / "placed.tif", [db], georef=False)
    box = read_sar(_tif(tmp_path / "twin.tif", [db])).footprint  # where the placed one lies
    (tmp_path / "places.csv").write_text("file,lon_min,lat_min,lon_max,lat_max,date\n"
                                         f"placed.tif,{','.join(map(str, box))},2024-05-01\n")
    _coco(tmp_path / "coco.json", ["bare.tif", "placed.tif"])
    summary, recs = _build(tmp_path, "ds", aef=str(aef), geo=str(tmp_path / "places.csv"))
    priors = summary["priors"]  # records (one image gives several) by prior: the placed one's full, the other's none
    assert summary["quarantined"] == 0 and priors["partial"] == 0 and priors["full"] == priors["none"] > 0
    bare, placed = recs["bare.tif"]["meta"], recs["placed.tif"]["meta"]
    assert bare["geo"] is None and bare["footprint"] is None and bare["valid_anchors"] == 0
    assert Anchors.load(recs["bare.tif"]["aef"]).n_valid == 0
    assert bare["band"] == "band 1" and bare["date"] == "2024-05-01"  # read as a SAR raster: its tags, its band
    assert placed["footprint"] == pytest.approx(box, abs=1e-6) and placed["year"] == 2024
    expected = AEFStore(str(aef)).sample(box, 2024, grid=GRID)
    got = Anchors.load(recs["placed.tif"]["aef"])
    assert got.n_valid == GRID * GRID and np.array_equal(got.features, expected.features)
    same = [Path(recs[f]["image"]).read_bytes() for f in ("bare.tif", "placed.tif")]
    assert same[0] == same[1]  # the same pixels, stretched as any SAR raster's
    # --require-geo: the unplaced TIFF is refused naming --geo, the placed one still builds
    strict, kept = _build(tmp_path, "strict", aef=str(aef), geo=str(tmp_path / "places.csv"), require_geo=True)
    (q,) = _quarantine(tmp_path / "strict")
    assert set(kept) == {"placed.tif"} and strict["quarantined"] == 1 and q["image"] == "bare.tif"
    assert "--geo" in q["reason"] and "footprint" not in q["reason"]
    # neither --aef nor --geo: it still builds, with the same empty prior
    bare_only, recs = _build(tmp_path, "noaef")
    assert recs["bare.tif"]["meta"]["geo"] is None and bare_only["priors"]["none"] > 0


def test_a_quad_pol_grd_builds_its_co_pol_or_the_asked_polarisation(aef, tmp_path):
    """HH, HV, VH, VV bands by description: the default reads the co-pol (VV), --pol HV reads band 2; each chip
    equals the chip of a single-band file holding that band, and meta names the band read."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    order = ("HH", "HV", "VH", "VV")
    bands = {}
    for k, (p, level) in enumerate(zip(order, (0.3, 0.02, 0.025, 0.2))):
        a = rng.gamma(1.0, level, (64, 64)).astype(np.float32)
        a[8 + 12 * k:14 + 12 * k, 10:20] *= 30  # each band its own bright spot: a wrong band shows
        bands[p] = a
    _tif(images / "quad.tif", [bands[p] for p in order], [f"Sigma0_{p}" for p in order])
    _coco(tmp_path / "coco.json", ["quad.tif"])
    spec = ChipSpec(frame=FRAME, grid=GRID, scale="intensity")
    for pol, band in ((None, "band 4, VV"), ("HV", "band 2, HV")):
        _, recs = _build(tmp_path, f"ds-{pol}", aef=str(aef), pol=pol, scale="intensity")
        rec = recs["quad.tif"]
        assert rec["meta"]["band"] == band and rec["meta"]["scale"] == "intensity"
        single = load_chip(_tif(tmp_path / f"{band[-2:]}.tif", [bands[band[-2:]]]), spec, no_aef=True).image
        assert np.array_equal(np.asarray(Image.open(rec["image"])), single)


def test_a_jpeg_chip_builds_with_its_own_pixels_and_an_empty_prior(tmp_path, capsys):
    """Through the CLI: the printed summary counts records by prior, and --help says chips build."""
    from fusar_gpt.__main__ import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(4)
    pixels = (np.add.outer(np.arange(64), np.arange(64)) + rng.integers(0, 40, (64, 64))).astype(np.uint8)
    pixels[24:30, 20:30] = 250
    Image.fromarray(pixels).save(images / "chip.jpg", quality=90)
    _coco(tmp_path / "coco.json", ["chip.jpg"])
    assert main(["build", "--images", str(images), "--annotations", str(tmp_path / "coco.json"), "--out",
                 str(tmp_path / "ds"), "--frame", str(FRAME), "--grid", str(GRID), "--tasks", "count"]) == 0
    records = load_manifest(tmp_path / "ds" / "manifest.jsonl")
    assert capsys.readouterr().out.strip().endswith(
        f"records (count {len(records)}); priors: full 0, partial 0, none {len(records)}; 0 quarantined")
    rec = next(r for r in records if r["meta"]["frame_objects"])
    assert rec["meta"]["geo"] is None and rec["meta"]["valid_anchors"] == 0
    decoded = np.asarray(Image.open(images / "chip.jpg"))
    framed, boxes, _ = to_model_frame(decoded, FRAME, np.array([[20.0, 24.0, 30.0, 30.0]]))
    assert np.array_equal(np.asarray(Image.open(rec["image"])), framed)
    assert rec["meta"]["frame_objects"][0]["box"] == [int(v) for v in boxes[0]]
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "PNG/JPEG chips or TIFFs without georeference" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("flag", "value"), [("--bands", "foo"), ("--bands", "0"), ("--bands", "1,2,3"),
                                             ("--bands", "2,2"), ("--pol", "XX")])
def test_a_bad_bands_or_pol_value_is_one_line_exit_2_before_any_image_is_read(tmp_path, capsys, flag, value):
    """--bands foo used to quarantine every image and exit 0."""
    from fusar_gpt.__main__ import main

    out = tmp_path / "ds"
    code = main(["build", "--images", str(tmp_path / "nowhere"), "--annotations", str(tmp_path / "coco.json"),
                 "--out", str(out), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0] and repr(value) in err[0]
    assert not out.exists()


def test_chip_spec_checks_and_normalises_bands_and_pol():
    spec = ChipSpec(bands=" I, Q ", pol="vh")
    assert (spec.bands, spec.pol) == ("i,q", "VH")
    assert ChipSpec(bands="2,1").bands == "2,1" and ChipSpec(bands="DUAL").bands == "dual"
    for bad in ({"bands": "iq"}, {"bands": "-1"}, {"bands": ""}, {"pol": "V"}):
        with pytest.raises(ValueError, match=f"chip {next(iter(bad))} must be"):
            ChipSpec(**bad)
