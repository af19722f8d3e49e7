"""SAR raster IO, footprint, dates, radiometry, model frame and chipping, on GeoTIFFs written by rasterio."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning

from fusar_gpt.geo import GeoError
from fusar_gpt.geo.frame import Chip, FrameMap, chip_windows, read_chip, to_model_frame
from fusar_gpt.geo.radiometry import lee_filter, stretch_to_uint8, to_db, to_uint8
from fusar_gpt.geo.raster import acquisition_date, footprint, guess_scale, read_sar

S1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s1_geotiff" / (
    "S1A_IW_A_20150309T173017_VV_grd_mli_geo_norm_db.tif")
S1_EXACT = (4.486771, 43.574389, 4.554135, 43.614336)
S1_README = (4.487, 43.574, 4.554, 43.614)


def from_origin(west: float, north: float, xres: float, yres: float) -> Affine:
    # rasterio's from_origin warns under affine 3; spelled out here
    return Affine(xres, 0.0, west, 0.0, -yres, north)


UTM_T = from_origin(500000.0, 5000000.0, 10.0, 10.0)
needs_s1 = pytest.mark.skipif(not S1.exists(), reason="shared real data not present")


def write_tif(path, arr, *, crs="EPSG:32631", transform=UTM_T, nodata=None, tags=None, dtype=None, **kw):
    arr = np.asarray(arr)
    arr3 = arr[None] if arr.ndim == 2 else arr
    profile = dict(driver="GTiff", width=arr3.shape[2], height=arr3.shape[1], count=arr3.shape[0],
                   dtype=dtype or arr3.dtype.name, nodata=nodata, **kw)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(arr3)
            if tags:
                ds.update_tags(**tags)
    return Path(path)


def shifted(t: Affine, col: float, row: float) -> Affine:
    """The geotransform of a window starting at (col, row): same pixel size, origin moved."""
    return Affine(t.a, t.b, t.c + col * t.a + row * t.b, t.d, t.e, t.f + col * t.d + row * t.e)


def one_line_error(fn, *needles):
    with pytest.raises(GeoError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle.lower() in msg.lower(), (needle, msg)
    return msg


# ------------------------------------------------------------------------------------------- the real S1 file
@needs_s1
def test_real_s1_footprint_values_date_scale():
    img = read_sar(S1)
    fp = img.footprint
    for got, exact, readme in zip(fp, S1_EXACT, S1_README):
        assert abs(got - exact) < 1e-4
        assert abs(got - readme) < 5e-4
    with rasterio.open(S1) as ds:
        raw = ds.read(1)
        assert img.transform == ds.transform and img.crs == ds.crs
    assert img.data.dtype == np.float32 and img.data.shape == (217, 268) == (img.height, img.width)
    assert np.array_equal(img.data[img.mask], raw[img.mask]) and img.mask.all()
    assert img.scale == "db" and img.date == dt.date(2015, 3, 9) and img.nodata == -99.0
    assert -27.0 < np.nanmin(img.data) < -26.0 and 1.0 < np.nanmax(img.data) < 1.5


@needs_s1
def test_real_s1_nodata_pixels_masked_others_untouched(tmp_path):
    dst = tmp_path / S1.name
    shutil.copy(S1, dst)
    hole = np.zeros((217, 268), bool)
    hole[10:20, 30:60] = True
    hole[200, 5] = True
    with rasterio.open(dst, "r+") as ds:
        raw = ds.read(1)
        ds.write(np.where(hole, np.float32(-99), raw), 1)
    img = read_sar(dst)
    assert np.array_equal(~img.mask, hole)
    assert np.isnan(img.data[hole]).all()
    assert np.array_equal(img.data[~hole], raw[~hole])


# --------------------------------------------------------------------------------------------- dtypes, masking
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_real_dtypes_preserved(tmp_path, dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype != "float32" else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=(20, 30), endpoint=True).astype(dtype)
        arr[0, 0], arr[0, 1] = info.min, info.max
    else:
        arr = rng.normal(-12, 5, size=(20, 30)).astype(dtype)
    img = read_sar(write_tif(tmp_path / f"{dtype}.tif", arr))
    assert img.data.dtype == np.float32 and img.mask.all()
    assert np.array_equal(img.data, arr.astype(np.float32))


@pytest.mark.parametrize("dtype", ["complex64", "complex_int16"])
def test_complex_gives_amplitude(tmp_path, dtype):
    rng = np.random.default_rng(1)
    z = (rng.integers(-300, 300, (16, 24)) + 1j * rng.integers(-300, 300, (16, 24))).astype(np.complex64)
    img = read_sar(write_tif(tmp_path / "slc.tif", z, dtype=dtype))
    assert np.allclose(img.data, np.abs(z), rtol=1e-6)
    assert img.scale == "amplitude"


def test_band_selection(tmp_path):
    arr = np.stack([np.full((8, 9), v, np.float32) for v in (1.0, 2.0, 3.0)])
    path = write_tif(tmp_path / "three.tif", arr)
    for band in (1, 2, 3):
        assert (read_sar(path, band).data == band).all()


def test_nodata_nan_and_inf_masked(tmp_path):
    arr = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    arr[1, 1] = -9999
    arr[2, 2] = np.nan
    arr[3, 3] = np.inf
    arr[4, 4] = -np.inf
    img = read_sar(write_tif(tmp_path / "f.tif", arr, nodata=-9999))
    bad = np.zeros((10, 10), bool)
    bad[[1, 2, 3, 4], [1, 2, 3, 4]] = True
    assert np.array_equal(~img.mask, bad) and np.isnan(img.data[bad]).all()
    assert np.array_equal(img.data[~bad], arr[~bad])

    u = np.arange(100, dtype=np.uint16).reshape(10, 10)  # nodata 0 on an integer raster
    img = read_sar(write_tif(tmp_path / "u.tif", u, nodata=0))
    assert not img.mask[0, 0] and img.mask.sum() == 99 and img.nodata == 0.0


def test_window_read_and_its_transform(tmp_path):
    arr = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    path = write_tif(tmp_path / "w.tif", arr)
    img = read_sar(path, window=(10, 5, 20, 15))
    assert img.data.shape == (15, 20) and np.array_equal(img.data, arr[5:20, 10:30])
    assert img.transform == shifted(UTM_T, 10, 5)
    whole = read_sar(path).footprint
    part = img.footprint
    assert whole[0] < part[0] < part[2] < whole[2] and whole[1] < part[1] < part[3] < whole[3]
    one_line_error(lambda: read_sar(path, window=(40, 0, 20, 10)), "w.tif", "window")


# ------------------------------------------------------------------------------------------------- footprints
def test_footprint_southern_utm(tmp_path):
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32723", always_xy=True)  # UTM 23S, central meridian -45
    x0, y0 = to_utm.transform(-45.0, -23.0)
    path = write_tif(tmp_path / "s.tif", np.ones((100, 100), np.float32), crs="EPSG:32723",
                     transform=from_origin(x0, y0, 10.0, 10.0))
    lon0, lat0, lon1, lat1 = read_sar(path).footprint
    # west edge on the central meridian; the top edge's latitude is -23 there (grid lines bow very slightly)
    assert abs(lon0 - -45.0) < 1e-9 and abs(lat1 - -23.0) < 1e-6 and lat1 < 0
    # 1 km square: ~1000 / (111320 cos 23) deg of longitude and ~1000 / 110760 deg of latitude
    assert math.isclose(lon1 - lon0, 1000 / (111320 * math.cos(math.radians(23))), rel_tol=0.01)
    assert math.isclose(lat1 - lat0, 1000 / 110760, rel_tol=0.01)


def test_footprint_geographic_and_rotated():
    t = from_origin(10.0, 50.0, 0.01, 0.01)
    assert np.allclose(footprint("EPSG:4326", t, 200, 100), (10.0, 49.0, 12.0, 50.0), atol=1e-12)
    cos, sin = math.cos(math.radians(30)), math.sin(math.radians(30))
    rot = Affine(0.01 * cos, 0.01 * sin, 10.0, 0.01 * sin, -0.01 * cos, 50.0)  # 30 deg rotated, north-up-ish
    corners = np.array([(rot.a * c + rot.b * r + rot.c, rot.d * c + rot.e * r + rot.f)
                        for c, r in ((0, 0), (200, 0), (200, 100), (0, 100))])
    want = (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())
    assert np.allclose(footprint("EPSG:4326", rot, 200, 100), want, atol=1e-12)


def test_footprint_densified_edges_catch_curved_grid_lines():
    # 600 km UTM scene: lines of constant northing bow in latitude, highest at the central meridian mid-edge.
    t = from_origin(200000.0, 5600000.0, 1000.0, 1000.0)
    fp = footprint("EPSG:32631", t, 600, 600)
    tr = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    xs = np.concatenate([np.linspace(2e5, 8e5, 2001), np.full(2001, 8e5), np.linspace(2e5, 8e5, 2001),
                         np.full(2001, 2e5)])
    ys = np.concatenate([np.full(2001, 5.6e6), np.linspace(5.0e6, 5.6e6, 2001), np.full(2001, 5.0e6),
                         np.linspace(5.0e6, 5.6e6, 2001)])
    lon, lat = tr.transform(xs, ys)
    brute = (lon.min(), lat.min(), lon.max(), lat.max())
    assert np.allclose(fp, brute, atol=1e-6)
    clon, clat = tr.transform([2e5, 8e5, 8e5, 2e5], [5.6e6, 5.6e6, 5.0e6, 5.0e6])
    assert fp[3] > max(clat) + 0.01  # corners alone would miss the bow by more than a kilometre


def test_antimeridian_scene_refused(tmp_path):
    # UTM zone 1 (central meridian -177): 150-300 km easting is west of -180, i.e. across the antimeridian
    path = write_tif(tmp_path / "dateline.tif", np.ones((100, 150), np.float32), crs="EPSG:32601",
                     transform=from_origin(150000.0, 5600000.0, 1000.0, 1000.0))
    one_line_error(lambda: read_sar(path), "dateline.tif", "antimeridian")


def test_gcp_only_raster_footprint_from_gcps(tmp_path):
    w, h = 120, 80
    gcps = [GroundControlPoint(row=r, col=c, x=5.0 + 0.01 * c, y=45.0 - 0.005 * r)
            for r in (0, h / 2, h) for c in (0, w / 2, w)]
    path = write_tif(tmp_path / "gcp.tif", np.ones((h, w), np.uint8), crs="EPSG:4326", transform=None,
                     gcps=gcps)
    with rasterio.open(path) as ds:
        assert ds.transform.is_identity and len(ds.gcps[0]) == 9
    img = read_sar(path)
    assert np.allclose(img.footprint, (5.0, 44.6, 6.2, 45.0), atol=1e-7)
    assert img.crs == rasterio.crs.CRS.from_epsg(4326)
    assert np.allclose(tuple(img.transform)[:6], (0.01, 0, 5.0, 0, -0.005, 45.0), atol=1e-9)

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)  # GCPs in a projected CRS
    ugcps = [GroundControlPoint(row=g.row, col=g.col, x=to_utm.transform(g.x, g.y)[0],
                                y=to_utm.transform(g.x, g.y)[1]) for g in gcps]
    upath = write_tif(tmp_path / "gcp_utm.tif", np.ones((h, w), np.uint8), crs="EPSG:32631",
                      transform=None, gcps=ugcps)
    assert np.allclose(read_sar(upath).footprint, (5.0, 44.6, 6.2, 45.0), atol=2e-3)


def test_latlon_out_of_range(tmp_path):
    # metre coordinates labelled EPSG:4326: latitude 5,000,000 does not exist
    path = write_tif(tmp_path / "liar.tif", np.ones((10, 10), np.float32), crs="EPSG:4326")
    one_line_error(lambda: read_sar(path), "liar.tif", "outside the", "range")


# ------------------------------------------------------------------------------------------------------ dates
def test_date_from_tags_case_insensitive_and_priority():
    assert acquisition_date({"acquisition_start_time": "2019-07-04T10:00:00.123Z"}, "a.tif") == dt.date(2019, 7, 4)
    assert acquisition_date({"FIRST_LINE_TIME": "09-MAR-2015 17:30:17.000"}, "a.tif") == dt.date(2015, 3, 9)
    tags = {"DATE_ACQUIRED": "2016-01-02", "TIFFTAG_DATETIME": "2022:05:06 12:00:00"}
    assert acquisition_date(tags, "S1A_IW_20150309T173017_x.tif") == dt.date(2016, 1, 2)


@pytest.mark.parametrize(("name", "want"), [
    ("S1B_IW_GRDH_1SDV_20200102T050607_20200102T050632_x.tif", dt.date(2020, 1, 2)),
    ("s1a-iw-grd-vv-20150309t173017-20150309t173042-004940-006202-001.tiff", dt.date(2015, 3, 9)),
    ("scene_2018-11-30_vv.tif", dt.date(2018, 11, 30)),
    ("scene_2018_11_30.tif", dt.date(2018, 11, 30)),
    ("img19991231.tif", dt.date(1999, 12, 31)),
    ("run_12345678.tif", None),
    ("x_20201340.tif", None),
    ("orbit_004940.tif", None),
])
def test_date_from_file_name(name, want):
    assert acquisition_date({}, f"/data/2001-01-01/{name}") == want


def test_tifftag_datetime_only_last():
    tag = {"TIFFTAG_DATETIME": "2021:05:06 12:00:00"}
    assert acquisition_date(tag, "scene.tif") == dt.date(2021, 5, 6)
    assert acquisition_date(tag, "scene_20150309.tif") == dt.date(2015, 3, 9)
    assert acquisition_date({}, "scene.tif") is None


def test_read_sar_date_tags_and_override(tmp_path):
    path = write_tif(tmp_path / "plain.tif", np.ones((5, 5), np.float32),
                     tags={"ACQUISITION_DATE": "2017-08-09", "TIFFTAG_DATETIME": "2023:01:01 00:00:00"})
    assert read_sar(path).date == dt.date(2017, 8, 9)
    assert read_sar(path, date="2020-02-29").date == dt.date(2020, 2, 29)
    assert read_sar(path, date=dt.datetime(2011, 3, 4, 5, 6)).date == dt.date(2011, 3, 4)
    assert read_sar(path, date=dt.date(2012, 1, 1)).date == dt.date(2012, 1, 1)
    one_line_error(lambda: read_sar(path, date="yesterday"), "plain.tif", "date")


# -------------------------------------------------------------------------------------------------- radiometry
def test_guess_scale():
    rng = np.random.default_rng(2)
    db = rng.normal(-14, 4, (50, 50)).astype(np.float32)
    lin = rng.gamma(4, 0.05 / 4, (50, 50)).astype(np.float32)
    lin_noisy = lin - 0.002  # noise-subtracted linear data dips slightly below zero
    ok = np.ones((50, 50), bool)
    assert guess_scale(db, ok, "float32", {}) == "db"
    assert guess_scale(lin, ok, "float32", {}) == "amplitude"
    assert guess_scale(lin_noisy, ok, "float32", {}) == "amplitude"
    assert guess_scale(lin, ok, "float32", {"UNITS": "dB"}) == "db"
    assert guess_scale(db, ok, "float32", {"scale": "linear intensity"}) == "intensity"
    assert guess_scale(db, ok, "float32", {"UNITS": "amplitude"}) == "amplitude"
    assert guess_scale(lin, ok, "complex64", {}) == "amplitude"
    assert guess_scale(lin, ok, "complex_int16", {}) == "amplitude"
    assert guess_scale(db, ok, "int16", {}) == "amplitude"
    assert guess_scale(lin, ok, "uint16", {}) == "amplitude"


def test_read_sar_scale_from_units_and_override(tmp_path):
    path = write_tif(tmp_path / "i.tif", np.full((6, 6), 0.1, np.float32))
    assert read_sar(path).scale == "amplitude"
    assert read_sar(path, scale="intensity").scale == "intensity"
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(1, UNITS="dB")
    assert read_sar(path).scale == "db"
    one_line_error(lambda: read_sar(path, scale="log"), "i.tif", "scale")


def test_to_db():
    x = np.array([10.0, 100.0, 0.0, -1.0, np.nan], np.float32)
    assert np.allclose(to_db(x, "amplitude")[:2], [20.0, 40.0])
    assert np.allclose(to_db(x, "intensity")[:2], [10.0, 20.0])
    assert np.isnan(to_db(x, "intensity")[2:]).all() and np.isnan(to_db(x, "amplitude")[2:]).all()
    db = np.array([-25.0, 3.0], np.float32)
    assert np.array_equal(to_db(db, "db"), db)
    with pytest.raises(GeoError):
        to_db(x, "linear")


def test_stretch_percentile_and_masked_pixels():
    x = np.linspace(-30, 0, 101, dtype=np.float32)
    mask = np.ones(101, bool)
    x_out = x.copy()
    x_out[50] = 1e6  # a masked outlier must not move the percentiles
    mask[50] = False
    ref = stretch_to_uint8(np.delete(x, 50))
    got = stretch_to_uint8(x_out, mask)
    assert got[50] == 0
    assert np.array_equal(np.delete(got, 50), ref)
    p2, p98 = np.percentile(np.delete(x, 50), [2, 98])
    assert (ref[np.delete(x, 50) <= p2] == 0).all() and (ref[np.delete(x, 50) >= p98] == 255).all()
    assert (np.diff(ref.astype(int)) >= 0).all() and ref.dtype == np.uint8


def test_stretch_fixed_and_constant():
    x = np.array([-40.0, -25.0, -13.0, 5.0, 9.0, np.nan], np.float32)
    assert stretch_to_uint8(x, fixed=(-25, 5)).tolist() == [0, 0, 102, 255, 255, 0]
    const = np.full((4, 4), -7.0, np.float32)
    m = np.ones((4, 4), bool)
    m[0, 0] = False
    out = stretch_to_uint8(const, m)
    assert out[0, 0] == 0 and (out[m] == 128).all()
    assert (stretch_to_uint8(np.full(3, np.nan, np.float32)) == 0).all()
    with pytest.raises(GeoError):
        stretch_to_uint8(x, fixed=(5, -25))


def _speckle(shape, looks, mean, seed):
    return np.random.default_rng(seed).gamma(looks, mean / looks, shape)


def test_lee_reduces_variance_and_keeps_mean():
    z = _speckle((200, 200), 4, 100.0, 3)
    for looks in (4, None):
        f = lee_filter(z, 5, looks)
        inner, zin = f[10:-10, 10:-10], z[10:-10, 10:-10]
        assert inner.var() < 0.4 * zin.var()
        assert abs(inner.mean() - zin.mean()) / zin.mean() < 0.01


def test_lee_keeps_point_target_better_than_box_mean():
    z = _speckle((41, 41), 4, 1.0, 4)
    z[20, 20] = 1000.0
    f = lee_filter(z, 5, looks=4)
    box = z[18:23, 18:23].mean()
    assert f[20, 20] > 0.6 * 1000.0 and f[20, 20] > 10 * box


def test_lee_nan_aware_matches_brute_force():
    z = _speckle((23, 17), 3, 5.0, 5)
    z[4:7, 3:9] = np.nan
    z[0, 0] = np.nan
    f = lee_filter(z, 5, looks=3)
    cu2 = 1.0 / 3
    want = np.full(z.shape, np.nan)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if np.isnan(z[i, j]):
                continue
            win = z[max(0, i - 2):i + 3, max(0, j - 2):j + 3]
            win = win[np.isfinite(win)]
            m, v = win.mean(), win.var()
            k = np.clip((1 - cu2 / (v / m**2)) / (1 + cu2), 0, 1) if v > 0 else 0.0
            want[i, j] = m + k * (z[i, j] - m)
    assert np.array_equal(np.isnan(f), np.isnan(z))
    assert np.allclose(f, want, rtol=1e-5, equal_nan=True)
    with pytest.raises(GeoError):
        lee_filter(z, 4)


def test_to_uint8_pipeline(tmp_path):
    db = np.random.default_rng(6).normal(-15, 3, (30, 40)).astype(np.float32)
    db[0, :5] = -99
    img = read_sar(write_tif(tmp_path / "db.tif", db, nodata=-99))
    out = to_uint8(img, fixed=(-25, 5))
    assert out.dtype == np.uint8 and (out[0, :5] == 0).all()
    assert np.array_equal(out, stretch_to_uint8(db, img.mask, fixed=(-25, 5)))
    smooth = to_uint8(img, fixed=(-25, 5), lee=5, looks=1)
    assert (smooth[0, :5] == 0).all() and smooth[5:-5, 5:-5].std() < out[5:-5, 5:-5].std()


# ------------------------------------------------------------------------------------------------ model frame
def test_model_frame_stretch_mode_boxes_and_image_agree():
    img = np.zeros((200, 300), np.uint8)
    img[40:100, 60:180] = 255
    out, boxes, fmap = to_model_frame(img, 224, [[60, 40, 180, 100], [-10, 190, 310, 230]])
    assert out.shape == (224, 224)
    assert boxes.dtype == np.int64
    assert boxes[0].tolist() == [round(60 * 224 / 300), round(40 * 224 / 200), round(180 * 224 / 300),
                                 round(100 * 224 / 200)]
    assert boxes[1].tolist() == [0, round(190 * 224 / 200), 224, 224]  # clipped, kept
    ys, xs = np.nonzero(out > 127)
    assert abs(xs.min() - boxes[0, 0]) <= 1 and abs(xs.max() + 1 - boxes[0, 2]) <= 1
    assert abs(ys.min() - boxes[0, 1]) <= 1 and abs(ys.max() + 1 - boxes[0, 3]) <= 1
    back = fmap.to_source(boxes[:1])
    assert np.abs(back - [[60, 40, 180, 100]]).max() <= 1.0
    assert isinstance(fmap, FrameMap) and (fmap.pad_x, fmap.pad_y) == (0, 0)


def test_model_frame_keep_aspect_pads_bottom_right():
    img = np.full((200, 300, 3), 200, np.uint8)
    out, boxes, fmap = to_model_frame(img, 224, np.array([[30.0, 20.0, 150.0, 90.0]]), keep_aspect=True)
    ch = round(200 * 224 / 300)
    assert out.shape == (224, 224, 3) and (out[ch:] == 0).all() and (out[:ch] == 200).all()
    assert fmap.pad_y == 224 - ch and fmap.pad_x == 0 and math.isclose(fmap.sx, 224 / 300)
    assert boxes[0].tolist() == [round(30 * 224 / 300), round(20 * ch / 200), round(150 * 224 / 300),
                                 round(90 * ch / 200)]
    assert np.abs(fmap.to_source(boxes) - [[30, 20, 150, 90]]).max() <= 1.0
    _, none_boxes, _ = to_model_frame(img, 28)
    assert none_boxes is None


@pytest.mark.parametrize("frame", [0, 100, 500, -28, 224.0])
def test_model_frame_not_multiple_of_28(frame):
    one_line_error(lambda: to_model_frame(np.zeros((10, 10), np.uint8), frame), "28")


# ----------------------------------------------------------------------------------------------------- chips
def test_chip_windows_cover_scene_flush_and_transform():
    t = from_origin(600000.0, 4800000.0, 20.0, 20.0)
    chips = chip_windows(2000, 1300, 504, 64, t)
    cols = sorted({c.col_off for c in chips})
    rows = sorted({c.row_off for c in chips})
    assert cols == [0, 440, 880, 1320, 1496] and rows == [0, 440, 796]
    assert len(chips) == 15 and all(c.width == c.height == 504 for c in chips)
    covered = np.zeros((1300, 2000), bool)
    for c in chips:
        covered[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] = True
        assert c.transform == shifted(t, c.col_off, c.row_off)
        assert c.window.col_off == c.col_off and c.window.height == c.height
    assert covered.all()
    assert max(c.col_off + c.width for c in chips) == 2000 and max(c.row_off + c.height for c in chips) == 1300
    assert chips[1].to_scene([[1, 2, 3, 4]]).tolist() == [[441, 2, 443, 4]]


def test_chip_windows_small_scene_and_errors():
    (only,) = chip_windows(300, 200, 504, 64)
    assert (only.col_off, only.row_off, only.width, only.height, only.transform) == (0, 0, 300, 200, None)
    assert len(chip_windows(504, 504, 504, 0)) == 1
    one_line_error(lambda: chip_windows(1000, 1000, 504, 504), "overlap")


def test_read_chip_matches_scene(tmp_path):
    arr = np.arange(90 * 70, dtype=np.float32).reshape(70, 90)
    path = write_tif(tmp_path / "scene.tif", arr)
    chips = chip_windows(90, 70, 32, 8, UTM_T)
    chip = chips[-1]
    img = read_chip(path, chip)
    assert isinstance(chip, Chip) and img.transform == chip.transform
    assert np.array_equal(img.data, arr[chip.row_off:chip.row_off + 32, chip.col_off:chip.col_off + 32])


# ------------------------------------------------------------------------------------------------ bad inputs
def test_missing_file(tmp_path):
    one_line_error(lambda: read_sar(tmp_path / "nope.tif"), "nope.tif", "no such file")


def test_not_a_raster(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("these are not pixels\nsecond line\n")
    one_line_error(lambda: read_sar(p), "notes.tif", "not a readable raster")


def test_truncated_tiff(tmp_path):
    p = write_tif(tmp_path / "cut.tif", np.random.default_rng(7).random((300, 300)).astype(np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    one_line_error(lambda: read_sar(p), "cut.tif", "could not be read")


def test_no_georeference_needs_footprint(tmp_path):
    p = write_tif(tmp_path / "bare.tif", np.ones((50, 100), np.float32), crs=None, transform=None)
    one_line_error(lambda: read_sar(p), "bare.tif", "no georeference", "footprint")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)  # must not leak to the caller
        img = read_sar(p, footprint=(10.0, 40.0, 11.0, 40.5))
    assert np.allclose(img.footprint, (10.0, 40.0, 11.0, 40.5), atol=1e-12)
    assert img.crs == rasterio.crs.CRS.from_epsg(4326)
    part = read_sar(p, footprint=(10.0, 40.0, 11.0, 40.5), window=(0, 0, 50, 25))
    assert np.allclose(part.footprint, (10.0, 40.25, 10.5, 40.5), atol=1e-12)
    one_line_error(lambda: read_sar(p, footprint=(10.0, 95.0, 11.0, 96.0)), "bare.tif")


def test_all_nan_and_all_nodata(tmp_path):
    p = write_tif(tmp_path / "nan.tif", np.full((5, 5), np.nan, np.float32))
    one_line_error(lambda: read_sar(p), "nan.tif", "no valid pixels")
    q = write_tif(tmp_path / "nd.tif", np.zeros((5, 5), np.uint8), nodata=0)
    one_line_error(lambda: read_sar(q), "nd.tif", "no valid pixels")


def test_pixel_cap_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "huge.tif"
    with rasterio.open(big, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, blockxsize=1024, blockysize=1024, sparse_ok=True, crs="EPSG:32631",
                       transform=UTM_T):
        pass
    assert big.stat().st_size < 1_000_000

    def boom(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", boom)
    msg = one_line_error(lambda: read_sar(big), "huge.tif", "100000x100000", str(2**29), "max_pixels")
    assert "10000000000" in msg
    one_line_error(lambda: read_sar(big, window=(0, 0, 30000, 30000), max_pixels=10**8), "window", "max_pixels")
    monkeypatch.undo()
    img = read_sar(big, window=(1000, 2000, 64, 64))  # a window of a huge scene is fine
    assert img.data.shape == (64, 64) and img.transform == shifted(UTM_T, 1000, 2000)


def test_band_out_of_range(tmp_path):
    p = write_tif(tmp_path / "two.tif", np.ones((2, 4, 4), np.float32))
    one_line_error(lambda: read_sar(p, band=3), "two.tif", "band 3", "2 band")
    one_line_error(lambda: read_sar(p, band=0), "two.tif", "band 0")


def test_internal_mask_band_masks_pixels(tmp_path):
    # some processors mark nodata with a GDAL mask band instead of a nodata value
    arr = np.full((12, 12), 5.0, np.float32)
    p = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(p, "w", driver="GTiff", width=12, height=12, count=1, dtype="float32",
                           crs="EPSG:32631", transform=UTM_T) as ds:
            ds.write(arr, 1)
            m = np.full((12, 12), 255, np.uint8)
            m[:3] = 0
            ds.write_mask(m)
    img = read_sar(p)
    assert not img.mask[:3].any() and img.mask[3:].all() and np.isnan(img.data[:3]).all()


@pytest.mark.parametrize("transform", [from_origin(500000.0, 1e8, 10.0, 10.0),      # a northing of 1e8 m
                                       from_origin(9.5e6, 5000000.0, 10.0, 10.0)])  # an easting far out of zone
def test_a_footprint_outside_the_crs_area_of_use_is_refused(tmp_path, transform):
    path = write_tif(tmp_path / "far.tif", np.ones((32, 32), np.float32), transform=transform)
    with pytest.raises(GeoError, match="outside the area of use of EPSG:32631") as err:
        _ = read_sar(path).footprint
    assert "\n" not in str(err.value)
    assert read_sar(write_tif(tmp_path / "ok.tif", np.ones((32, 32), np.float32))).footprint  # zone 31 itself
