"""Band layouts of real SAR exports: SLC as one complex band or as I and Q real bands, dual-pol GRD, and files
whose layout cannot be told (refused with the --bands advice, never read as band 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from fusar_gpt.geo import GeoError
from fusar_gpt.geo.bands import choose_bands
from fusar_gpt.geo.radiometry import to_uint8
from fusar_gpt.geo.raster import read_sar

T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # EPSG:32631, southern France


def _tif(path, bands, descriptions=None, dtype=None):
    arr = np.stack(bands)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=len(arr),
                       dtype=dtype or arr.dtype.name, crs="EPSG:32631", transform=T) as ds:
        ds.write(arr)
        for k, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(k, d)
        ds.update_tags(ACQUISITION_DATE="2021-06-01")
    return path


@pytest.fixture(scope="module")
def slc():
    """Complex speckle with a bright ship: I and Q are zero-mean, so half of I is negative."""
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(64, 64)) + 1j * rng.normal(size=(64, 64))).astype(np.complex64)
    z[30:34, 20:30] *= 20
    return z


def test_iq_bands_give_the_amplitude_of_the_same_data_as_one_complex_band(slc, tmp_path):
    complex_tif = _tif(tmp_path / "c.tif", [slc])
    iq_tif = _tif(tmp_path / "iq.tif", [slc.real, slc.imag], ["i_IW1_VV", "q_IW1_VV"])
    a, b = read_sar(complex_tif), read_sar(iq_tif)
    assert np.array_equal(a.data, b.data) and a.scale == b.scale
    assert np.array_equal(to_uint8(a), to_uint8(b))  # the bit-identical 8-bit chip
    assert (slc.real < 0).mean() > 0.4 and np.isfinite(b.data).all()  # band 1 alone would lose these
    # no descriptions: refused with the advice, and right once told
    bare = _tif(tmp_path / "bare.tif", [slc.real, slc.imag])
    with pytest.raises(GeoError, match="--bands") as err:
        read_sar(bare)
    assert "\n" not in str(err.value)
    assert np.array_equal(read_sar(bare, bands="i,q").data, a.data)
    assert np.array_equal(read_sar(bare, bands="1,2").data, a.data)


def test_dual_pol_picks_the_asked_polarisation_by_description(tmp_path):
    vh, vv = np.full((32, 32), 0.01, np.float32), np.full((32, 32), 0.2, np.float32)
    vh[0, 0] = vv[0, 0] = 0.5  # not constant
    path = _tif(tmp_path / "grd.tif", [vh, vv], ["Amplitude_VH", "Amplitude_VV"])
    assert read_sar(path).data[5, 5] == pytest.approx(0.2)  # default: the co-pol, though it is band 2
    assert read_sar(path, pol="VH").data[5, 5] == pytest.approx(0.01)
    with pytest.raises(GeoError, match="no HH band; the file holds VH, VV"):
        read_sar(path, pol="HH")
    assert read_sar(path, bands="1").data[5, 5] == pytest.approx(0.01)  # a band number wins


def test_pol_never_falls_back_to_band_order(slc, tmp_path):
    """Two undescribed bands may be VV,VH or VH,VV (SNAP and Earth Engine order them differently) or I and Q:
    --pol cannot pick one, so the file is refused with the --bands advice; a one-band file whose description
    names another polarisation is refused too, instead of being read as the asked one."""
    bare = _tif(tmp_path / "bare.tif", [np.abs(slc), np.abs(slc) * 0.2])
    with pytest.raises(GeoError, match=r"--pol VH finds a band by its description.*--bands N") as err:
        read_sar(bare, pol="VH")
    assert "\n" not in str(err.value)
    assert read_sar(bare, bands="2").band == "band 2"
    vv = _tif(tmp_path / "vv.tif", [np.abs(slc)], ["Sigma0_VV"])
    with pytest.raises(GeoError, match="no VH band; the file holds VV"):
        read_sar(vv, pol="VH")
    assert read_sar(vv, pol="VV").band == "band 1, VV" and read_sar(vv).band == "band 1, VV"


def test_choose_bands_rules():
    assert choose_bands([None], 1).index == 1
    c = choose_bands(["i_VH", "q_VH", "i_VV", "q_VV"], 4)
    assert (c.kind, c.index, c.q_index, c.pol) == ("iq", 3, 4, "VV")
    assert choose_bands(["i_VH", "q_VH", "i_VV", "q_VV"], 4, pol="vh").index == 1
    assert choose_bands(["Sigma0_HH_db", "Sigma0_HV_db"], 2).pol == "HH"
    for bad in ({"bands": "x"}, {"bands": "3"}, {"bands": "1,2,3"}, {"pol": "XX"}):
        with pytest.raises(GeoError):
            choose_bands([None, None], 2, **bad)
    with pytest.raises(GeoError, match="3 bands and no band descriptions"):
        choose_bands([None] * 3, 3)


def test_an_undecidable_two_band_file_is_quarantined_with_the_bands_reason(slc, tmp_path):
    from fusar_gpt.data.build import BuildConfig, build

    images = tmp_path / "images"
    images.mkdir()
    _tif(images / "bare.tif", [slc.real, slc.imag])
    coco = {"images": [{"id": 1, "file_name": "bare.tif", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 30, 10, 4]}],
            "categories": [{"id": 1, "name": "ship"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "aef").mkdir()
    from fusar_gpt.geo.aef_tiles import tile_origin, write_tile

    zone, epsg, west, north = tile_origin(3.0, 45.1, 64)
    write_tile(tmp_path / "aef" / "2021" / zone / "t.tiff", np.zeros((64, 64, 64), np.int8), crs=f"EPSG:{epsg}",
               west=west, north=north, block_size=64)
    summary = build(BuildConfig(images=str(images), annotations=str(tmp_path / "coco.json"),
                                aef=str(tmp_path / "aef"), out=str(tmp_path / "ds"), frame=224), progress=False)
    (q,) = [json.loads(ln) for ln in (tmp_path / "ds" / "quarantine.jsonl").read_text().splitlines()]
    assert summary["quarantined"] == 1 and "--bands" in q["reason"] and "bare.tif" in q["image"]


def test_dual_pol_composite_puts_co_cross_and_ratio_in_three_channels(tmp_path):
    from fusar_gpt.chip import ChipSpec, load_chip
    from fusar_gpt.geo.radiometry import stretch_to_uint8, to_db

    rng = np.random.default_rng(3)
    vv = rng.gamma(1.0, 0.1, (64, 64)).astype(np.float32)
    vh = rng.gamma(1.0, 0.02, (64, 64)).astype(np.float32)
    vh[10:20, 10:20] *= 8  # vegetation: the cross-pol lifts, the ratio drops
    path = _tif(tmp_path / "grd.tif", [vh, vv], ["Intensity_VH", "Intensity_VV"])
    spec = ChipSpec(frame=56, grid=4, bands="dual", scale="intensity")
    rgb = load_chip(path, spec, no_aef=True).image
    assert rgb.shape == (56, 56, 3) and rgb.dtype == np.uint8
    single = {p: load_chip(path, ChipSpec(frame=56, grid=4, pol=p, scale="intensity"), no_aef=True).image
              for p in ("VV", "VH")}
    assert np.array_equal(rgb[..., 0], single["VV"]) and np.array_equal(rgb[..., 1], single["VH"])
    ratio = stretch_to_uint8(to_db(vv, "intensity") - to_db(vh, "intensity"))
    from fusar_gpt.geo.frame import to_model_frame

    assert np.array_equal(rgb[..., 2], to_model_frame(ratio, 56)[0])
    assert rgb[12:18, 12:18, 2].mean() < rgb[40:50, 40:50, 2].mean()  # the lifted cross-pol shows as low ratio
    bare = _tif(tmp_path / "bare.tif", [vh, vv])
    with pytest.raises(GeoError, match="bare.tif: --bands dual needs a co- and a cross-polarised band"):
        load_chip(bare, spec, no_aef=True)


def test_a_dual_pol_build_writes_colour_chips_and_records_what_it_read(tmp_path):
    from fusar_gpt.data.build import BuildConfig, build
    from fusar_gpt.data.dataset import load_manifest

    from .infer_helpers import make_aef, utm_scene

    aef = make_aef(tmp_path / "aef")
    single = read_sar(utm_scene(tmp_path / "ref_20240501.tif", size=64))
    images = tmp_path / "images"
    images.mkdir()
    vv = np.power(10.0, single.data / 10).astype(np.float32)
    with rasterio.open(images / "dp_20240501.tif", "w", driver="GTiff", width=64, height=64, count=2,
                       dtype="float32", crs=single.crs, transform=single.transform) as ds:
        ds.write(np.stack([vv, vv * 0.2]))
        ds.descriptions = ("Sigma0_VV", "Sigma0_VH")
        ds.update_tags(ACQUISITION_DATE="2024-05-01")
    (tmp_path / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "dp_20240501.tif", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8]}],
        "categories": [{"id": 1, "name": "ship"}]}))
    build(BuildConfig(images=str(images), annotations=str(tmp_path / "coco.json"), aef=str(aef),
                      out=str(tmp_path / "ds"), frame=56, grid=4, tasks=("count",), split=(1.0, 0.0, 0.0),
                      bands="dual", scale="intensity"), progress=False)
    rec = load_manifest(tmp_path / "ds" / "manifest.jsonl")[0]
    from PIL import Image

    assert Image.open(rec["image"]).mode == "RGB"
    assert rec["meta"]["band"].startswith("dual-pol composite") and "VV" in rec["meta"]["band"]
    assert json.loads((tmp_path / "ds" / "build.json").read_text())["chip"]["bands"] == "dual"
