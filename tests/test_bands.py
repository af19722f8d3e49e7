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
