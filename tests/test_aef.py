"""AEF: de-quantisation on real vectors, sampling from tiles written in the public layout."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fusar_gpt.geo import GeoError
from fusar_gpt.geo.aef import LUT, AEFStore, dequantize, lonlat_to, quantize
from fusar_gpt.geo.aef_index import TileIndex
from fusar_gpt.geo.aef_tiles import tile_origin, utm_epsg, write_index, write_tile
from fusar_gpt.geo.anchors import Anchors

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AEF_SAMPLES = SHARED / "aef_samples"
BLOCK = 64  # small blocks keep tests fast; the real 1024-px layout is checked in its own test


@pytest.fixture(scope="module")
def real_vectors() -> np.ndarray:
    rows = []
    for f in sorted(AEF_SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append([float(r[f"A{i:02d}"]) for i in range(64)])
    return np.array(rows, np.float64)


@pytest.fixture(scope="module")
def pool(real_vectors) -> np.ndarray:
    """Real AEF vectors as the int8 codes the bucket stores."""
    return quantize(real_vectors)


def _codes(pool, h, w, offset=0):
    """North-up codes where pixel (r, c) holds pool vector (offset + r*w + c) % len(pool)."""
    k = (offset + np.arange(h * w)) % len(pool)
    return np.ascontiguousarray(pool[k].T.reshape(64, h, w))


def _expected(pool, lon, lat, epsg, west, north, w, offset=0, res=10.0):
    """Independent ground truth: which pool vector sits at each lon/lat of a north-up description."""
    x, y = lonlat_to(f"EPSG:{epsg}", np.asarray(lon, float), np.asarray(lat, float))
    col, row = np.floor((x - west) / res).astype(int), np.floor((north - y) / res).astype(int)
    return dequantize(pool[(offset + row * w + col) % len(pool)]), col, row


# ---------------------------------------------------------------- de-quantisation
def test_dequantize_round_trips_all_2880_real_vectors(real_vectors):
    assert real_vectors.shape == (2880, 64)
    q = quantize(real_vectors)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    # the codes are exact: the float values sit on the lattice, so re-encoding the decode is the identity
    assert np.array_equal(quantize(dequantize(q)), q)
    assert np.array_equal(dequantize(q), real_vectors.astype(np.float32))
    np.testing.assert_allclose(dequantize(q), real_vectors, rtol=0, atol=1e-7)
    norms = np.linalg.norm(dequantize(q).astype(np.float64), axis=1)
    assert 0.99 < norms.min() and norms.max() < 1.01
    # the q/127 formula of some third-party docs is measurably wrong on the same codes
    assert np.abs(q / 127.0 - real_vectors).max() > 0.1


def test_lut_is_built_in_float64_and_maps_nodata_to_nan():
    assert LUT.dtype == np.float32 and LUT.shape == (256,) and not LUT.flags.writeable
    q = np.arange(-127, 128, dtype=np.float64)
    assert np.array_equal(LUT[1:], (np.sign(q) * (q / 127.5) ** 2).astype(np.float32))
    assert np.isnan(dequantize(np.int8(-128)))
    assert dequantize(np.array([0, 127, -127], np.int8)).tolist() == pytest.approx([0.0, (127 / 127.5) ** 2,
                                                                                   -(127 / 127.5) ** 2])
    assert quantize(np.array([np.nan]))[0] == -128
    with pytest.raises(GeoError):
        dequantize(np.array([300]))


# ---------------------------------------------------------------- known vectors, both orientations
@pytest.mark.parametrize("bottom_up", [True, False])
def test_known_vectors_come_back_at_known_lonlat(tmp_path, pool, bottom_up):
    size = 192
    zone, epsg, west, north = tile_origin(4.52, 43.59, size)
    write_tile(tmp_path / "aef" / "2024" / zone / "tile.tiff", _codes(pool, size, size, 7), crs=f"EPSG:{epsg}",
               west=west, north=north, bottom_up=bottom_up, block_size=BLOCK)
    with rasterio.open(tmp_path / "aef" / "2024" / zone / "tile.tiff") as ds:
        assert (ds.transform.e > 0) == bottom_up
    store = AEFStore(tmp_path / "aef", cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(1)
    xs = west + rng.uniform(5, size * 10 - 5, 300)
    ys = north - rng.uniform(5, size * 10 - 5, 300)
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{epsg}", xs, ys)
    want, _, _ = _expected(pool, lon, lat, epsg, west, north, size, 7)
    got = store.sample_points(lon, lat, 2024)
    assert np.array_equal(got, want)
    # a grid footprint: node (i, j) lies at the documented lon/lat, its vector is the one there
    blon, blat = to_lonlat(f"EPSG:{epsg}", np.array([west + 303.3, west + 1497.1]),
                           np.array([north - 1502.7, north - 306.1]))
    bbox = (blon[0], blat[0], blon[1], blat[1])
    a = store.sample(bbox, 2024, grid=8)
    assert a.features.shape == (64, 64) and a.positions.shape == (64, 2) and a.mask.all() and a.year == 2024
    i, j = 2, 5
    node = i * 8 + j
    assert a.lonlat[node, 0] == pytest.approx(bbox[0] + j / 7 * (bbox[2] - bbox[0]))
    assert a.lonlat[node, 1] == pytest.approx(bbox[3] - i / 7 * (bbox[3] - bbox[1]))
    assert a.positions[node].tolist() == pytest.approx([i / 7, j / 7])
    want, _, _ = _expected(pool, a.lonlat[:, 0], a.lonlat[:, 1], epsg, west, north, size, 7)
    assert np.array_equal(a.features, want)


def test_southern_hemisphere_tile(tmp_path, pool):
    size = 128
    zone, epsg, west, north = tile_origin(-47.9, -15.8, size)
    assert zone == "23S" and epsg == 32723
    write_tile(tmp_path / "2020" / zone / "s.tif", _codes(pool, size, size), crs=f"EPSG:{epsg}",
               west=west, north=north, block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    lon, lat = np.array([-47.9]), np.array([-15.8])
    want, col, row = _expected(pool, lon, lat, epsg, west, north, size)
    assert 0 <= col[0] < size and 0 <= row[0] < size
    assert np.array_equal(store.sample_points(lon, lat, 2020), want)


# ---------------------------------------------------------------- zone edges
def test_footprint_across_two_utm_zones_reads_each_node_from_its_own_zone(tmp_path, pool, monkeypatch):
    # two tiles that both reach over 6E (the 31N/32N edge), each filled with one vector
    size = 128
    a_vec, b_vec = pool[10], pool[2000]
    for zone, vec in (("31N", a_vec), ("32N", b_vec)):
        epsg = utm_epsg(zone)
        x, y = lonlat_to(f"EPSG:{epsg}", np.array([6.0]), np.array([44.9965]))
        west, north = float(x[0]) - size * 5, float(y[0]) + size * 5  # centred on the zone edge
        write_tile(tmp_path / "2024" / zone / f"{zone}.tiff", np.broadcast_to(vec[:, None, None], (64, size, size))
                   .astype(np.int8).copy(), crs=f"EPSG:{epsg}", west=west, north=north, block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    reads = []
    orig = rasterio.io.DatasetReader.read
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", lambda self, *a, **k: reads.append(1) or orig(self, *a, **k))
    bbox = (5.996, 44.995, 6.004, 44.998)
    an = store.sample(bbox, 2024, grid=8)
    assert an.mask.all()
    west_of_edge = an.lonlat[:, 0] < 6.0
    assert west_of_edge.any() and (~west_of_edge).any()
    assert np.array_equal(an.features[west_of_edge], np.broadcast_to(dequantize(a_vec), (west_of_edge.sum(), 64)))
    assert np.array_equal(an.features[~west_of_edge], np.broadcast_to(dequantize(b_vec), ((~west_of_edge).sum(), 64)))
    assert len(reads) == 2  # one window per tile for the whole footprint, never one read per node


def test_a_nodata_hole_in_the_own_zone_tile_falls_back_to_the_neighbour_zone(tmp_path, pool):
    size = 128
    for zone, fill in (("31N", -128), ("32N", None)):
        epsg = utm_epsg(zone)
        x, y = lonlat_to(f"EPSG:{epsg}", np.array([6.0]), np.array([44.9965]))
        codes = np.full((64, size, size), -128, np.int8) if fill == -128 else _codes(pool, size, size)
        write_tile(tmp_path / "2024" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=float(x[0]) - size * 5,
                   north=float(y[0]) + size * 5, block_size=BLOCK)
    an = AEFStore(tmp_path, cache_dir=False).sample((5.997, 44.996, 5.999, 44.997), 2024, grid=4)
    assert an.mask.all() and np.all(an.lonlat[:, 0] < 6.0)


# ---------------------------------------------------------------- nodata and coverage
def test_all_nodata_footprint_gives_empty_mask_without_error(tmp_path, pool):
    size = 128
    zone, epsg, west, north = tile_origin(2.0, 50.0, size)
    codes = _codes(pool, size, size)
    codes[:, :64, :] = -128  # the northern half is open sea
    write_tile(tmp_path / "2024" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north,
               block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{epsg}", np.array([west + 100, west + 1000]), np.array([north - 100, north - 500]))
    sea = store.sample((lon.min(), lat.min(), lon.max(), lat.max()), 2024, grid=8)
    assert not sea.mask.any() and np.isnan(sea.features).all() and sea.n_valid == 0
    outside = store.sample((100.0, 10.0, 100.01, 10.01), 2024, grid=8)  # no tile at all
    assert not outside.mask.any() and outside.year == 2024
    lon2, lat2 = to_lonlat(f"EPSG:{epsg}", np.array([west + 100, west + 1000]), np.array([north - 600, north - 900]))
    half = store.sample((lon2.min(), lat2.min(), lon2.max(), lat2.max()), 2024, grid=8)
    assert 0 < half.n_valid < 64 and np.isnan(half.features[~half.mask]).all()
    assert np.isfinite(half.features[half.mask]).all()


# ---------------------------------------------------------------- years
def test_years_are_clipped_recorded_and_stacked(tmp_path, pool):
    size = 64
    zone, epsg, west, north = tile_origin(4.52, 43.59, size)
    for k, year in enumerate((2017, 2019, 2024)):
        codes = np.broadcast_to(pool[100 * k][:, None, None], (64, size, size)).astype(np.int8).copy()
        write_tile(tmp_path / str(year) / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north,
                   block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    assert store.years == [2017, 2019, 2024]
    assert [store.resolve_year(y) for y in (2010, 2015, 2017, 2018, 2020, 2022, 2023, 2031)] == \
        [2017, 2017, 2017, 2017, 2019, 2024, 2024, 2024]
    for absurd in (-3, 0, 1899, 2101, 99999999999999999999, 10 ** 30):  # typos, not "the nearest year"
        with pytest.raises(GeoError, match="year must be in 1900..2100") as err:
            store.resolve_year(absurd)
        assert "\n" not in str(err.value)
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{epsg}", np.array([west + 50, west + 500]), np.array([north - 500, north - 50]))
    bbox = (lon.min(), lat.min(), lon.max(), lat.max())
    one = store.sample(bbox, 2015, grid=4)
    assert one.year == 2017 and np.array_equal(one.features[0], dequantize(pool[0]))
    multi = store.sample(bbox, [2015, 2019, 2030], grid=4)
    assert multi.features.shape == (3, 16, 64) and multi.mask.shape == (3, 16) and multi.mask.all()
    assert multi.years.tolist() == [2017, 2019, 2024]
    for k in range(3):
        assert np.array_equal(multi.features[k, 5], dequantize(pool[100 * k]))
    assert np.array_equal(multi.for_year(1).features, store.sample(bbox, 2019, grid=4).features)


# ---------------------------------------------------------------- block mean
def test_block_mean_is_the_renormalised_mean_of_the_valid_pixels(tmp_path, pool):
    size = 64
    zone, epsg, west, north = tile_origin(4.52, 43.59, size)
    codes = _codes(pool, size, size)
    codes[:, 10, 11] = -128  # one nodata pixel inside the block is left out of the mean
    write_tile(tmp_path / "2024" / zone / "t.tiff", codes, crs=f"EPSG:{epsg}", west=west, north=north,
               block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{epsg}", np.array([west + 105.0]), np.array([north - 105.0]))  # pixel (10, 10)
    got = store.sample_points(lon, lat, 2024, method="mean", block=3)[0]
    block = dequantize(codes[:, 9:12, 9:12]).reshape(64, -1).astype(np.float64)
    block = block[:, np.isfinite(block).all(0)]
    assert block.shape[1] == 8
    want = block.mean(1) / np.linalg.norm(block.mean(1))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
    point = store.sample_points(lon, lat, 2024)[0]
    assert np.array_equal(point, dequantize(codes[:, 10, 10]))
    with pytest.raises(GeoError, match="odd"):
        store.sample((lon[0], lat[0], lon[0] + 1e-3, lat[0] + 1e-3), 2024, method="mean", block=4)


# ---------------------------------------------------------------- sample_raster
def test_sample_raster_lays_the_grid_over_the_image(tmp_path, pool):
    from affine import Affine

    size = 256
    zone, epsg, west, north = tile_origin(4.52, 43.59, size)
    write_tile(tmp_path / "2024" / zone / "t.tiff", _codes(pool, size, size), crs=f"EPSG:{epsg}", west=west,
               north=north, block_size=BLOCK)
    store = AEFStore(tmp_path, cache_dir=False)
    # a 3 m SAR image, 300 x 200 px, inside the tile
    t = Affine(3.0, 0, west + 200, 0, -3.0, north - 300)
    a = store.sample_raster(f"EPSG:{epsg}", t, 300, 200, 2024, grid=(5, 7))
    assert a.features.shape == (35, 64) and a.mask.all()
    i, j = 3, 4
    x, y = t.c + t.a * (j / 6 * 300), t.f + t.e * (i / 4 * 200)
    want, _, _ = _expected(pool, *_lonlat(epsg, x, y), epsg, west, north, size)
    assert np.array_equal(a.features[i * 7 + j], want[0])
    assert a.positions[i * 7 + j].tolist() == pytest.approx([i / 4, j / 6])


def _lonlat(epsg, x, y):
    from fusar_gpt.geo.aef import to_lonlat

    return to_lonlat(f"EPSG:{epsg}", np.array([x], float), np.array([y], float))


def test_real_sentinel1_geotiff_maps_2015_to_aef_2017(tmp_path, pool):
    from fusar_gpt.geo.raster import read_sar

    img = read_sar(SHARED / "s1_geotiff" / "S1A_IW_A_20150309T173017_VV_grd_mli_geo_norm_db.tif")
    assert img.date.year == 2015
    size = 1024
    lon_c, lat_c = (img.footprint[0] + img.footprint[2]) / 2, (img.footprint[1] + img.footprint[3]) / 2
    zone, epsg, _, _ = tile_origin(lon_c, lat_c, size)
    assert zone == "31N" and img.crs.to_epsg() == epsg
    west, north = img.transform.c - 1000.0, img.transform.f + 1000.0  # the tile covers the whole image
    for year in (2017, 2024):
        write_tile(tmp_path / "aef" / str(year) / zone / "t.tiff", _codes(pool, size, size, year), crs=f"EPSG:{epsg}",
                   west=west, north=north, block_size=256, overviews=False)
    store = AEFStore(tmp_path / "aef", cache_dir=False)
    a = store.sample_raster(img.crs, img.transform, img.width, img.height, img.date.year, grid=8)
    assert a.year == 2017 and a.n_valid == 64
    b = store.sample(img.footprint, img.date.year, grid=8)
    assert b.year == 2017 and b.n_valid == 64
    saved = Anchors.load(a.save(tmp_path / "s1.npz"))
    assert saved.year == 2017 and np.array_equal(saved.features, a.features)


# ---------------------------------------------------------------- index
def _small_world(root, pool, years=(2024,), size=64):
    zone, epsg, west, north = tile_origin(4.52, 43.59, size)
    for year in years:
        write_tile(Path(root) / str(year) / zone / f"x{year}-0000000000-0000000000.tiff", _codes(pool, size, size),
                   crs=f"EPSG:{epsg}", west=west, north=north, block_size=BLOCK, overviews=False)
    return zone, epsg, west, north


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_official_index_with_bucket_paths_is_rerooted_and_cached(tmp_path, pool, fmt, monkeypatch):
    root = tmp_path / "mirror"
    _small_world(root, pool, years=(2023, 2024))
    out = write_index(root, f"aef_index.{fmt}")
    # rewrite the paths the way the bucket's index holds them, plus a row for a tile this copy lacks
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(out) if fmt == "parquet" else pacsv.read_csv(out)
    rows = table.to_pylist()
    for r in rows:
        r["path"] = "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/" + r["path"]
    rows.append({**rows[0], "path": "s3://bucket/aef/v1/annual/2022/31N/missing.tiff", "year": 2022})
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out) if fmt == "parquet" else pacsv.write_csv(table, out)
    store = AEFStore(root, cache_dir=tmp_path / "cache")
    assert store.index.source == f"aef_index.{fmt}" and store.years == [2023, 2024]
    assert all(p.startswith(str(root)) for p in store.index.paths)
    assert set(store.index.zones) == {"31N"}
    # second open comes from the cache: the index file is not parsed again
    import fusar_gpt.geo.aef_index as ai

    monkeypatch.setattr(ai, "read_index_file", lambda *a, **k: pytest.fail("index parsed twice"))
    again = AEFStore(root, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.index.paths, store.index.paths)


def test_header_scan_is_cached_and_sees_new_tiles(tmp_path, pool, monkeypatch):
    _small_world(tmp_path / "aef", pool, years=(2021,))
    first = AEFStore(tmp_path / "aef", cache_dir=tmp_path / "cache")
    assert first.index.source == "scan" and first.years == [2021]
    opened = []
    orig = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda *a, **k: opened.append(a[0]) or orig(*a, **k))
    _small_world(tmp_path / "aef", pool, years=(2022,))
    opened.clear()
    second = AEFStore(tmp_path / "aef", cache_dir=tmp_path / "cache")
    assert second.years == [2021, 2022]
    assert len(opened) == 1 and "2022" in str(opened[0])  # only the new tile's header was read


def test_index_errors_are_one_line(tmp_path, pool):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeoError, match="no AEF tiles for any year") as err:
        AEFStore(tmp_path / "empty", cache_dir=False)
    assert "\n" not in str(err.value)
    with pytest.raises(GeoError, match="not a directory"):
        AEFStore(tmp_path / "nope", cache_dir=False)
    bad = tmp_path / "badindex"
    bad.mkdir()
    (bad / "aef_index.csv").write_text("path,year\nx.tiff,2024\n")
    with pytest.raises(GeoError, match="lacks column"):
        AEFStore(bad, cache_dir=False)
    with pytest.raises(GeoError, match="remote"):
        AEFStore("/vsis3/some-bucket/aef/v1/annual", cache_dir=False)


def test_candidates_filter_by_year_and_box():
    idx = TileIndex(np.array(["a", "b", "c"]), np.array([2024, 2024, 2023]), np.array(["31N", "32N", "31N"]),
                    np.array([[0, 0, 1, 1], [2, 0, 3, 1], [0, 0, 1, 1]], float))
    assert idx.candidates(2024, 0.5, 0.5, 0.6, 0.6).tolist() == [0]
    assert idx.candidates(2024, 0.5, 0.5, 2.5, 0.6).tolist() == [0, 1]
    assert idx.candidates(2023, 2.5, 0.5, 2.6, 0.6).tolist() == []
    assert idx.candidates(1999, 0, 0, 1, 1).tolist() == []


# ---------------------------------------------------------------- tile writer layout
def test_tile_writer_uses_the_public_layout(tmp_path, pool):
    path = write_tile(tmp_path / "2024" / "31N" / "t.tiff", _codes(pool, 128, 96), crs="EPSG:32631",
                      west=600000.0, north=4830000.0)
    with rasterio.open(path) as ds:
        assert ds.count == 64 and set(ds.dtypes) == {"int8"} and ds.nodata == -128
        assert ds.descriptions == tuple(f"A{i:02d}" for i in range(64))
        assert ds.transform.e == 10.0 and ds.transform.f == 4830000.0 - 128 * 10  # origin at the lower-left
        assert ds.block_shapes[0] == (1024, 1024) and ds.compression.name == "zstd"
        assert ds.interleaving.name == "band" and ds.overviews(1)[:5] == [2, 4, 8, 16, 32] and len(ds.overviews(1)) == 7
        assert ds.crs.to_epsg() == 32631
        # the first stored row is the southernmost: the north-up input's last row
        assert np.array_equal(ds.read(window=((0, 1), (0, 96))), _codes(pool, 128, 96)[:, -1:, :])
    assert utm_epsg("37S") == 32737
    with pytest.raises(GeoError):
        utm_epsg("99X")


# ---------------------------------------------------------------- anchor files
def test_anchor_npz_round_trip_and_official_format(tmp_path):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(16, 64)).astype(np.float32)
    f[3] = np.nan
    a = Anchors(f, rng.random((16, 2)), np.ones(16, bool), lonlat=rng.random((16, 2)), year=2020)
    assert a.mask.sum() == 15  # a NaN row is never valid
    b = Anchors.load(a.save(tmp_path / "a.npz"))
    assert np.array_equal(b.features, f, equal_nan=True) and np.array_equal(b.mask, a.mask)
    assert b.year == 2020 and np.array_equal(b.lonlat, a.lonlat)
    np.savez(tmp_path / "official.npz", features=f[:4][[0, 1, 2]], positions=rng.random((3, 2)))
    off = Anchors.load(tmp_path / "official.npz")
    assert off.mask.tolist() == [True, True, True] and off.year is None
    multi = Anchors(np.stack([f, f]), a.positions, np.ones((2, 16), bool), years=[2019, 2020])
    back = Anchors.load(multi.save(tmp_path / "m.npz"))
    assert back.features.shape == (2, 16, 64) and back.years.tolist() == [2019, 2020]
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("arrays,match", [
    ({"positions": np.zeros((2, 2))}, "no 'features'"),
    ({"features": np.zeros((3, 64)), "positions": np.zeros((2, 2))}, "S=2"),
    ({"features": np.zeros((2, 64)), "positions": np.full((2, 2), 3.0)}, "within"),
    ({"features": np.zeros((2, 64)), "positions": np.zeros((2, 2)), "mask": np.ones(3, bool)}, "mask"),
])
def test_malformed_anchor_files_fail_with_one_line(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(GeoError, match=match) as err:
        Anchors.load(tmp_path / "bad.npz")
    assert "\n" not in str(err.value) and "bad.npz" in str(err.value)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(GeoError, match="not a readable"):
        Anchors.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------- bad places
@pytest.mark.parametrize("bbox", [(-181, 0, 1, 1), (0, -91, 1, 1), (0, 0, 1, 95), (2, 0, 1, 1),
                                  (0, math.nan, 1, 1), (0, 0, 1)])
def test_out_of_range_places_are_refused(tmp_path, pool, bbox):
    _small_world(tmp_path, pool)
    store = AEFStore(tmp_path, cache_dir=False)
    with pytest.raises(GeoError) as err:
        store.sample(bbox, 2024)
    assert "\n" not in str(err.value)


def test_grid_and_year_arguments_are_checked(tmp_path, pool):
    _small_world(tmp_path, pool)
    store = AEFStore(tmp_path, cache_dir=False)
    with pytest.raises(GeoError, match="grid"):
        store.sample((4.5, 43.5, 4.6, 43.6), 2024, grid=1)
    with pytest.raises(GeoError, match="year"):
        store.sample((4.5, 43.5, 4.6, 43.6), "soon")


def test_open_handles_are_bounded(tmp_path, pool):
    _small_world(tmp_path, pool, years=(2018, 2019, 2020, 2021))
    store = AEFStore(tmp_path, cache_dir=False, max_open=2)
    for year in (2018, 2019, 2020, 2021):
        assert store.sample((4.5, 43.5, 4.6, 43.6), year, grid=2).year == year
    assert len(store._tiles) == 2
    store.close()
    assert len(store._tiles) == 0


def test_store_pickles_for_worker_processes_and_reopens_its_tiles(tmp_path, pool):
    import pickle

    from fusar_gpt.geo.aef import to_lonlat

    _, epsg, west, north = _small_world(tmp_path, pool)
    lon, lat = to_lonlat(f"EPSG:{epsg}", np.array([west + 51.5, west + 597.3]), np.array([north - 603.1, north - 47.7]))
    bbox = (lon[0], lat[0], lon[1], lat[1])
    store = AEFStore(tmp_path, cache_dir=False)
    before = store.sample(bbox, 2024, grid=4)
    assert before.n_valid == 16
    clone = pickle.loads(pickle.dumps(store))
    assert len(clone._tiles) == 0
    after = clone.sample(bbox, 2024, grid=4)
    assert np.array_equal(before.features, after.features, equal_nan=True) and len(clone._tiles) == 1


def test_anchor_files_are_byte_identical_for_identical_anchors(tmp_path):
    import time

    a = Anchors(np.ones((4, 64), np.float32) * 0.125, np.zeros((4, 2)), np.ones(4, bool), year=2020)
    first = a.save(tmp_path / "a.npz").read_bytes()
    time.sleep(2.1)  # zip entries carry a time stamp with 2-s resolution unless it is fixed
    assert a.save(tmp_path / "b.npz").read_bytes() == first


def test_has_tiles_tells_no_coverage_from_nodata(tmp_path, pool):
    _small_world(tmp_path, pool)
    store = AEFStore(tmp_path, cache_dir=False)
    assert store.has_tiles((4.519, 43.589, 4.521, 43.591), 2015)
    assert not store.has_tiles((100.0, 10.0, 100.1, 10.1), 2024)
