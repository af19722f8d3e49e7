"""Earth Engine exports as an AEF store: float32 or int8 GeoTIFFs with bands A00..A63, north-up, any CRS and
tiling, with or without an index, mixed with bucket tiles by year and place; wrong bands refused naming the file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from fusar_gpt.geo import GeoError
from fusar_gpt.geo.aef import AEFStore, dequantize, quantize, to_lonlat
from fusar_gpt.geo.aef_codes import BANDS, lattice_step
from fusar_gpt.geo.aef_tiles import tile_origin, write_index, write_tile

AEF_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "aef_samples"
SIZE, PATCH = 128, 16  # one pool vector per 16 x 16 px patch (160 m): a reprojected export keeps patch centres
SEA = (2, 5)  # the patch that is nodata in the bucket tile


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    rows = []
    for f in sorted(AEF_SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            rows += [[float(r[f"A{i:02d}"]) for i in range(64)] for r in csv.DictReader(fh)]
    return quantize(np.array(rows))


@pytest.fixture(scope="module")
def place():
    zone, epsg, west, north = tile_origin(4.52, 43.59, SIZE)
    return zone, epsg, west, north


@pytest.fixture(scope="module")
def codes(pool) -> np.ndarray:
    """North-up int8 codes [64, SIZE, SIZE], constant per patch; one patch is open sea."""
    n = SIZE // PATCH
    k = (np.arange(n * n).reshape(n, n) * 37 + 11) % len(pool)
    out = pool[k].transpose(2, 0, 1).repeat(PATCH, 1).repeat(PATCH, 2)
    i, j = SEA
    out[:, i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] = -128
    return np.ascontiguousarray(out)


def write_export(path, values: np.ndarray, crs, transform, *, names=BANDS, dtype="float32", blocks=None, nodata=None):
    """A GeoTIFF as Earth Engine exports it: north-up, bands described A00..A63 (or as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = dict(tiled=True, blockxsize=blocks, blockysize=blocks) if blocks else {}
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=dtype, crs=crs, transform=transform, nodata=nodata,
                       **layout) as ds:
        ds.write(values.astype(dtype))
        if names:
            ds.descriptions = tuple(names)
    return path


def centres(place):
    """lon/lat of every patch centre, and its (i, j)."""
    _, epsg, west, north = place
    n = SIZE // PATCH
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x = west + (j.ravel() * PATCH + PATCH / 2) * 10.0
    y = north - (i.ravel() * PATCH + PATCH / 2) * 10.0
    lon, lat = to_lonlat(f"EPSG:{epsg}", x, y)
    return lon, lat, i.ravel(), j.ravel()


@pytest.fixture(scope="module")
def bucket(tmp_path_factory, codes, place):
    zone, epsg, west, north = place
    root = tmp_path_factory.mktemp("bucket")
    write_tile(root / "2024" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north, block_size=64)
    return AEFStore(root, cache_dir=False)


def floats(codes, rng=None) -> np.ndarray:
    """De-quantised values as an export holds them; with ``rng``, moved within a third of the code step (an
    export's floats need not sit exactly on the lattice)."""
    v = dequantize(codes).astype(np.float64)
    if rng is not None:
        ok = np.isfinite(v)
        v[ok] += rng.uniform(-1 / 3, 1 / 3, ok.sum()) * lattice_step(v[ok]) * (np.abs(v[ok]) > 0)
    return v.astype(np.float32)


def close_to_bucket(got, want):
    """Within the int8 quantisation step of the bucket's values, and the same codes once quantised."""
    ok = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), ok)
    assert (np.abs(got[ok] - want[ok]) <= lattice_step(want[ok])).all()
    assert np.array_equal(quantize(got), quantize(want))


# ---------------------------------------------------------------- the same vectors, exported two ways
def test_utm_float32_export_in_two_files_gives_the_bucket_anchors(tmp_path, codes, place, bucket):
    zone, epsg, west, north = place
    v = floats(codes, np.random.default_rng(0))
    half = SIZE // 2  # two files side by side, another tiling (32-px blocks, and strips), NaN for no data
    write_export(tmp_path / "ee" / "aef_2024_west.tif", v[:, :, :half], f"EPSG:{epsg}",
                 Affine(10, 0, west, 0, -10, north), blocks=32)
    write_export(tmp_path / "ee" / "aef_2024_east.tif", v[:, :, half:], f"EPSG:{epsg}",
                 Affine(10, 0, west + half * 10, 0, -10, north))
    store = AEFStore(tmp_path / "ee", cache_dir=False)
    assert store.years == [2024] and set(store.index.zones) == {zone}
    lon, lat, _, _ = centres(place)
    close_to_bucket(store.sample_points(lon, lat, 2024), bucket.sample_points(lon, lat, 2024))
    lon0, lat0 = to_lonlat(f"EPSG:{epsg}", np.array([west + 33.0]), np.array([north - 1245.0]))
    lon1, lat1 = to_lonlat(f"EPSG:{epsg}", np.array([west + 1240.0]), np.array([north - 28.0]))
    bbox = (lon0[0], lat0[0], lon1[0], lat1[0])
    for method in ("point", "mean"):  # the same pixel grid: every node, not only patch centres
        a = store.sample(bbox, 2024, grid=8, method=method)
        b = bucket.sample(bbox, 2024, grid=8, method=method)
        assert np.array_equal(a.mask, b.mask) and 0 < a.n_valid < 64
        assert (np.abs(a.features[a.mask] - b.features[b.mask]) <= 2 * lattice_step(b.features[b.mask])).all()
    # with an index instead of a scan: the same
    write_index(tmp_path / "ee", "aef_index.csv")
    indexed = AEFStore(tmp_path / "ee", cache_dir=False)
    assert indexed.index.source == "aef_index.csv"
    assert np.array_equal(indexed.sample_points(lon, lat, 2024), store.sample_points(lon, lat, 2024), equal_nan=True)


def test_wgs84_float32_export_gives_the_bucket_anchors(tmp_path, codes, place, bucket):
    from rasterio.warp import Resampling, reproject, transform_bounds

    zone, epsg, west, north = place
    src_t = Affine(10, 0, west, 0, -10, north)
    w, s, e, n = transform_bounds(f"EPSG:{epsg}", "EPSG:4326", west, north - SIZE * 10, west + SIZE * 10, north)
    res = 0.00009  # ~10 m of latitude, as an export at scale=10 in EPSG:4326
    width, height = int(np.ceil((e - w) / res)), int(np.ceil((n - s) / res))
    dst = np.full((64, height, width), np.nan, np.float32)
    dst_t = Affine(res, 0, w, 0, -res, n)
    reproject(floats(codes), dst, src_transform=src_t, src_crs=f"EPSG:{epsg}", dst_transform=dst_t,
              dst_crs="EPSG:4326", resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
    write_export(tmp_path / "aef_2024_wgs84.tif", dst, "EPSG:4326", dst_t, blocks=64)
    store = AEFStore(tmp_path, cache_dir=False)
    assert store.years == [2024] and set(store.index.zones) == {""}
    lon, lat, i, j = centres(place)
    got, want = store.sample_points(lon, lat, 2024), bucket.sample_points(lon, lat, 2024)
    close_to_bucket(got, want)
    assert np.array_equal(got, want, equal_nan=True)  # exported without moving a value: identical
    assert np.isnan(got[(i == SEA[0]) & (j == SEA[1])]).all()  # the open sea stays missing


def test_int8_export_north_up_with_bands_in_another_order_gives_exactly_the_bucket(tmp_path, codes, place, bucket):
    _, epsg, west, north = place
    order = np.random.default_rng(1).permutation(64)
    write_export(tmp_path / "2024" / "aef_int8.tif", codes[order], f"EPSG:{epsg}",
                 Affine(10, 0, west, 0, -10, north), names=[BANDS[k] for k in order], dtype="int8", nodata=-128)
    store = AEFStore(tmp_path, cache_dir=False)
    lon, lat, _, _ = centres(place)
    assert store.years == [2024]  # the YEAR folder above the file
    assert np.array_equal(store.sample_points(lon, lat, 2024), bucket.sample_points(lon, lat, 2024), equal_nan=True)


# ---------------------------------------------------------------- mixed with bucket tiles by year and place
def test_exports_and_bucket_tiles_mix_by_year_and_place(tmp_path, pool, codes, place):
    zone, epsg, west, north = place
    root = tmp_path / "aef"
    write_tile(root / "2024" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north, block_size=64)
    # 2023 exists only as an export of the same place (other vectors: the codes shifted by one patch)
    later = np.roll(codes, PATCH, axis=2)
    write_export(root / "exports" / "aef_2023_camargue.tif", floats(later), f"EPSG:{epsg}",
                 Affine(10, 0, west, 0, -10, north))
    # a 2024 export in EPSG:4326 over the same place holding one vector everywhere: used only where the bucket
    # tile (its own zone, so first) has no vector
    lon, lat, i, j = centres(place)
    fill = np.broadcast_to(dequantize(pool[5])[:, None, None], (64, 40, 40)).astype(np.float32)
    pad = 0.001
    write_export(root / "exports" / "aef_2024_fill.tif", fill, "EPSG:4326",
                 Affine((lon.max() - lon.min() + 2 * pad) / 40, 0, lon.min() - pad, 0,
                        -(lat.max() - lat.min() + 2 * pad) / 40, lat.max() + pad))
    # and a 2024 export of another place, in the next zone's UTM
    z2, e2, w2, n2 = tile_origin(6.5, 45.0, 32)
    far = np.broadcast_to(dequantize(pool[9])[:, None, None], (64, 32, 32)).astype(np.float32)
    write_export(root / "exports" / "2024" / "alps.tif", far, f"EPSG:{e2}", Affine(10, 0, w2, 0, -10, n2))
    for store in (AEFStore(root, cache_dir=False), None):
        if store is None:  # the same with an index
            write_index(root, "aef_index.parquet")
            store = AEFStore(root, cache_dir=False)
            assert store.index.source == "aef_index.parquet"
        assert store.years == [2023, 2024] and set(store.index.zones) == {zone, "", z2}
        sea = (i == SEA[0]) & (j == SEA[1])
        v24, v23 = store.sample_points(lon, lat, 2024), store.sample_points(lon, lat, 2023)
        assert np.array_equal(v24[~sea], dequantize(codes[:, i * PATCH + 8, j * PATCH + 8].T)[~sea])
        assert np.array_equal(v24[sea], np.broadcast_to(dequantize(pool[5]), (sea.sum(), 64)))  # filled
        assert np.array_equal(v23, floats(later)[:, i * PATCH + 8, j * PATCH + 8].T, equal_nan=True)
        x, y = np.array([w2 + 160.0]), np.array([n2 - 160.0])
        alon, alat = to_lonlat(f"EPSG:{e2}", x, y)
        assert np.array_equal(store.sample_points(alon, alat, 2024)[0], dequantize(pool[9]))
        assert store.sample_points(alon, alat, 2022).shape == (1, 64)  # 2022 -> 2023: nothing there, NaN
        assert np.isnan(store.sample_points(alon, alat, 2022)).all()


# ---------------------------------------------------------------- what is refused
@pytest.mark.parametrize("case", ["three bands", "named B", "missing A17", "uint16"])
def test_wrong_bands_are_refused_naming_the_file(tmp_path, codes, place, case):
    _, epsg, west, north = place
    t = Affine(10, 0, west, 0, -10, north)
    v = floats(codes)[:, :32, :32]
    name = tmp_path / "exports" / f"aef_2024_{case.replace(' ', '_')}.tif"
    if case == "three bands":
        write_export(name, v[:3], f"EPSG:{epsg}", t, names=BANDS[:3])
    elif case == "named B":
        write_export(name, v, f"EPSG:{epsg}", t, names=[f"B{k + 1}" for k in range(64)])
    elif case == "missing A17":
        write_export(name, v, f"EPSG:{epsg}", t, names=[b if b != "A17" else "A16" for b in BANDS])
    else:
        write_export(name, (v * 1000 + 2000), f"EPSG:{epsg}", t, dtype="uint16")
    with pytest.raises(GeoError, match="is not an AEF tile") as err:
        AEFStore(tmp_path, cache_dir=False)
    assert str(name) in str(err.value) and "\n" not in str(err.value)


def test_an_export_without_a_year_is_refused_naming_it(tmp_path, codes, place):
    _, epsg, west, north = place
    name = write_export(tmp_path / "exports" / "camargue.tif", floats(codes)[:, :16, :16], f"EPSG:{epsg}",
                        Affine(10, 0, west, 0, -10, north))
    with pytest.raises(GeoError, match="cannot tell its year") as err:
        AEFStore(tmp_path, cache_dir=False)
    assert "camargue.tif" in str(err.value) and "\n" not in str(err.value)
    name.rename(name.with_name("aef_2019_2024.tif"))
    with pytest.raises(GeoError, match="several years"):
        AEFStore(tmp_path, cache_dir=False)
