"""AEF over HTTP against a real loopback server (tests/aef_server.py): the server speaks ranges as a bucket does,
GDAL and our client read it, and our client survives 503s, dropped connections and slow answers."""

from __future__ import annotations

import csv
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from fusar_gpt.geo.aef import AEFStore, quantize
from fusar_gpt.geo.aef_http import HttpClient, RemoteError
from fusar_gpt.geo.aef_plan import bbox_footprints, images_footprints
from fusar_gpt.geo.aef_pull import pull
from fusar_gpt.geo.aef_remote_tile import block_ranges, open_http
from fusar_gpt.geo.aef_tiles import tile_origin, write_tile
from tests.aef_server import serve, write_url_index

AEF_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "aef_samples"
SIZE, BLOCK = 256, 128  # 2 x 2 blocks per tile: windows that cross block edges are exercised


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    rows = []
    for f in sorted(AEF_SAMPLES.glob("*.csv")):
        with open(f, newline="") as fh:
            rows += [[float(r[f"A{i:02d}"]) for i in range(64)] for r in csv.DictReader(fh)]
    return quantize(np.array(rows))


def codes(pool, h, w, offset=0, nodata_rows=0):
    k = (offset + np.arange(h * w)) % len(pool)
    out = np.ascontiguousarray(pool[k].T.reshape(64, h, w))
    out[:, :nodata_rows] = -128  # the northern rows are open sea
    return out


@pytest.fixture(scope="module")
def bucket(tmp_path_factory, pool):
    """A synthetic bucket in the public layout: two years, two neighbouring tiles in 31N, one in 32N."""
    root = tmp_path_factory.mktemp("bucket") / "aef" / "v1" / "annual"
    zone, epsg, west, north = tile_origin(4.52, 43.59, SIZE)
    for year in (2023, 2024):
        for k, dx in enumerate((0.0, SIZE * 10.0)):
            write_tile(root / str(year) / zone / f"x{k}-{year}.tiff", codes(pool, SIZE, SIZE, 97 * k + year, 20),
                       crs=f"EPSG:{epsg}", west=west + dx, north=north, block_size=BLOCK)
    z2, e2, w2, n2 = tile_origin(6.5, 45.0, SIZE)
    write_tile(root / "2024" / z2 / "y.tiff", codes(pool, SIZE, SIZE, 5), crs=f"EPSG:{e2}", west=w2, north=n2,
               block_size=BLOCK)
    return root


@pytest.fixture(scope="module")
def server(bucket):
    with serve(bucket.parents[2]) as srv:
        srv.root_url = f"{srv.url}/aef/v1/annual"
        srv.index = write_url_index(bucket, srv.root_url, into=bucket.parents[3] / "index")
        yield srv


@pytest.fixture(autouse=True)
def _clean(request, monkeypatch, tmp_path):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def one_tile(bucket) -> str:
    return sorted(p.relative_to(bucket).as_posix() for p in bucket.rglob("*.tiff"))[0]


# ---------------------------------------------------------------- the server speaks HTTP ranges like a bucket
def test_server_answers_head_ranges_and_misses_like_a_bucket(server, bucket):
    rel = one_tile(bucket)
    url, data = f"{server.root_url}/{rel}", (bucket / rel).read_bytes()
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Accept-Ranges"] == "bytes"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-199"})) as r:
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert r.read() == data[100:200]
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-10"})) as r:
        assert r.read() == data[-10:]
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-3,20-29"})) as r:
        body = r.read()
        assert r.status == 206 and r.headers["Content-Type"].startswith("multipart/byteranges")
        assert data[0:4] in body and data[20:30] in body
    base = server.root_url
    for missing in (f"{base}/2024", f"{base}/1999/31N/none.tiff", f"{server.url}/../../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(missing)
        assert err.value.code == 404
    server.faults.fail_first[f"aef/v1/annual/{rel}"] = 1
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url)
    assert err.value.code == 503
    assert urllib.request.urlopen(url).status == 200  # only the first request fails
    assert [h.status for h in server.hits(f"aef/v1/annual/{rel}")][-2:] == [503, 200]


def test_gdal_vsicurl_reads_the_server_as_a_bucket(server, bucket):
    rel = one_tile(bucket)
    win = Window(100, 90, 60, 70)  # crosses both block edges
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
            rasterio.open(f"/vsicurl/{server.root_url}/{rel}") as ds:
        remote = ds.read(window=win)
        assert ds.transform.e > 0 and ds.count == 64  # the bucket's bottom-up int8 layout, seen over HTTP
    with rasterio.open(bucket / rel) as ds:
        assert np.array_equal(remote, ds.read(window=win))
    assert all(h.status == 206 for h in server.hits(status=None) if h.method == "GET")


# ---------------------------------------------------------------- our client: exact, parallel, retried
def test_client_reads_windows_exactly_with_one_request_per_block(server, bucket):
    rel = one_tile(bucket)
    client = HttpClient()
    ds, tile = open_http(f"{server.root_url}/{rel}", client)
    with ds:
        win = Window(100, 90, 60, 70)
        ranges = block_ranges(ds, win)
        assert len(ranges) == 64 * 4  # 64 bands x the 4 blocks the window touches
        before = len(server.hits())
        tile.prefetch(ranges)
        got = ds.read(window=win)
        tile.check()
        # the prefetch fetched every block; GDAL asked for nothing more while decoding
        assert len(server.hits()) - before == client.stats.requests - 2 <= 64 * 4
    with rasterio.open(bucket / rel) as local:
        assert np.array_equal(got, local.read(window=win))
    assert client.stats.retries == 0 and client.stats.bytes == server.bytes_sent()


@pytest.mark.parametrize("fault", ["fail_first", "drop_first"])
def test_client_retries_503s_and_dropped_connections_and_counts_them(server, bucket, fault):
    rel = one_tile(bucket)
    getattr(server.faults, fault)[f"aef/v1/annual/{rel}"] = 3
    client = HttpClient(backoff=0.01)
    ds, tile = open_http(f"{server.root_url}/{rel}", client)
    with ds:
        win = Window(5, 5, 40, 40)
        tile.prefetch(block_ranges(ds, win))
        got = ds.read(window=win)
        tile.check()
    with rasterio.open(bucket / rel) as local:
        assert np.array_equal(got, local.read(window=win))
    assert client.stats.retries == 3
    assert set(client.stats.causes) == ({"http 503"} if fault == "fail_first" else {"dropped"})
    seen = [h.status for h in server.hits(f"aef/v1/annual/{rel}")]
    assert (seen.count(503) if fault == "fail_first" else sum(s < 0 for s in seen)) == 3


def test_client_gives_one_line_errors_for_missing_forbidden_and_hopeless(server, bucket):
    rel = one_tile(bucket)
    url = f"{server.root_url}/{rel}"
    key = f"aef/v1/annual/{rel}"
    server.faults.missing.add(key)
    with pytest.raises(RemoteError, match="not found") as err:
        open_http(url, HttpClient())
    assert err.value.status == 404 and url in str(err.value) and "\n" not in str(err.value)
    server.reset()
    server.faults.forbidden.add(key)
    with pytest.raises(RemoteError, match="access denied") as err:
        open_http(url, HttpClient())
    assert err.value.status == 403
    server.reset()
    server.faults.fail_first[key] = 100
    with pytest.raises(RemoteError, match="gave up after 3 tries"):
        open_http(url, HttpClient(backoff=0.01, retries=2))
    server.reset()
    server.faults.slow = 0.3
    with pytest.raises(RemoteError, match="timeout"):
        open_http(url, HttpClient(backoff=0.01, retries=1, timeout=0.1))
    server.faults.slow = 0.05  # slow but within the timeout: just slower
    ds, _ = open_http(url, HttpClient(timeout=5))
    ds.close()


# ---------------------------------------------------------------- pull: windows, resumable, retried, exact
def sar_image(path, x0, y0, w=200, h=150, res=3.0, epsg=32631):
    """A float32 dB GeoTIFF, north-up in UTM, its date in its name as Sentinel-1 products carry it."""
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(len(str(path))).normal(-15, 3, (1, h, w)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs=f"EPSG:{epsg}", transform=Affine(res, 0, x0, 0, -res, y0)) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four images: two inside the first tile (one dated 2015, before the first AEF year), one over the seam
    of the two 31N tiles, one where no tile is."""
    _, _, west, north = tile_origin(4.52, 43.59, SIZE)
    d = tmp_path_factory.mktemp("scenes")
    sar_image(d / "S1A_IW_20240501T060000_a.tif", west + 300, north - 260)
    sar_image(d / "S1A_IW_20150309T173017_b.tif", west + 1200, north - 1500, w=120, h=100)
    sar_image(d / "S1B_IW_20230704T060000_seam.tif", west + SIZE * 10 - 250, north - 900)
    sar_image(d / "S1A_IW_20240101T060000_far.tif", 300000, 5500000, w=50, h=50, epsg=32633)
    return d


def same_anchors(local: AEFStore, remote: AEFStore, fps, tmp_path, years=None) -> int:
    """Anchors of every footprint from both stores, compared as the bytes of their .npz files."""
    n = 0
    for fp in fps:
        for method in ("point", "mean"):
            for year in years or [fp.year]:
                a = local.sample(fp.bbox, year, grid=8, method=method, block=3)
                b = remote.sample(fp.bbox, year, grid=8, method=method, block=3)
                assert a.save(tmp_path / "a.npz").read_bytes() == b.save(tmp_path / "b.npz").read_bytes(), fp
                n += a.n_valid
    return n


def test_pull_dry_run_lists_tiles_windows_and_bytes_and_fetches_nothing(server, scenes, tmp_path):
    fps, problems = images_footprints(scenes)
    res = pull(server.root_url, tmp_path / "local", fps, index=server.index, dry_run=True, progress=False)
    assert res["dry_run"] and not (tmp_path / "local").exists()
    assert problems == [] and res["years"] == [2023, 2024]  # 2015 -> 2023, the remote's first year
    assert [(Path(p["image"]).name, p["reason"]) for p in res["problems"]] == [
        ("S1A_IW_20240101T060000_far.tif", "no AEF tile of 2024 reaches its footprint")]
    tiles = {t["tile"].rsplit("/", 1)[-1]: t for t in res["tiles"]}
    # 2024 and 2023 of tile 0 (images a and b), both 31N tiles in 2023 for the seam image; nothing for "far"
    assert sorted(tiles) == ["x0-2023.tiff", "x0-2024.tiff", "x1-2023.tiff"]
    assert len(tiles["x0-2023.tiff"]["windows"]) == 2  # b and the seam image, far apart: not merged
    for t in res["tiles"]:
        for w in t["windows"]:
            assert 0 < w["bytes"] < t["tile_bytes"] and not w["present"] and w["local"].endswith(".tiff")
    assert res["to_fetch"] == res["windows"] == 4
    assert 0 < res["bytes_to_fetch"] < res["whole_tile_bytes"]
    assert not [h for h in server.hits() if h.method == "GET" and int(h.range.split("=")[1].split("-")[0]) > 1 << 17]


def test_pull_gives_byte_identical_anchors_and_resumes(server, bucket, scenes, tmp_path):
    local = tmp_path / "local"
    fps, _ = images_footprints(scenes)
    fps += bbox_footprints(["4.523,43.585,4.527,43.588"])
    res = pull(server.root_url, local, fps, index=server.index, years=[2023, 2024], progress=False)
    assert res["retries"] == 0 and len(res["written"]) == res["to_fetch"] > 0
    assert 0 < res["fetched_bytes"] < res["whole_tile_bytes"]
    assert (local / "aef_index.parquet").exists()
    for rel in res["written"]:  # the public layout, windows keeping their geotransform
        with rasterio.open(local / rel) as ds:
            assert ds.count == 64 and ds.dtypes[0] == "int8" and ds.nodata == -128 and ds.transform.e > 0
            assert ds.descriptions[0] == "A00" and ds.block_shapes[0] == (BLOCK, BLOCK)
    remote = AEFStore(server.root_url, index=server.index)
    assert same_anchors(AEFStore(local), remote, fps, tmp_path, years=[2015, 2023, 2024]) > 0
    # and the remote itself reads what the files hold (no HTTP here: the bucket folder)
    assert same_anchors(AEFStore(bucket), remote, fps[:2], tmp_path, years=[2024]) > 0
    # a re-run fetches nothing; with one window gone, only that one
    again = pull(server.root_url, local, fps, index=server.index, years=[2023, 2024], progress=False)
    assert again["written"] == [] and again["to_fetch"] == 0
    (local / res["written"][0]).unlink()
    third = pull(server.root_url, local, fps, index=server.index, years=[2023, 2024], progress=False)
    assert third["written"] == [res["written"][0]]
    assert not [p for p in local.rglob("*") if p.name.startswith(".")]  # no temporary left behind


def test_pull_retries_503s_and_drops_and_reports_them(server, bucket, tmp_path):
    fp = bbox_footprints(["4.523,43.585,4.527,43.588"])
    rel = f"aef/v1/annual/{one_tile(bucket)}"
    server.faults.fail_first[rel] = 2
    server.faults.drop_first[rel] = 2
    res = pull(server.root_url, tmp_path / "l", fp, index=server.index, years=[2023], progress=False,
               http=HttpClient(backoff=0.01))
    assert res["retries"] == 4 and res["retry_causes"] == {"http 503": 2, "dropped": 2} and res["written"]
    remote = AEFStore(server.root_url, index=server.index)
    same_anchors(AEFStore(tmp_path / "l"), remote, fp, tmp_path, years=[2023])


def test_pull_that_fails_midway_leaves_no_partial_file_and_a_rerun_completes(server, bucket, tmp_path):
    fp = bbox_footprints(["4.523,43.585,4.527,43.588"])
    rel = f"aef/v1/annual/{one_tile(bucket)}"
    client = HttpClient(backoff=0.01, retries=1)
    plan = pull(server.root_url, tmp_path / "l", fp, index=server.index, years=[2023], dry_run=True, http=client)
    server.faults.fail_first[rel] = 10 ** 6  # from now on: the blocks cannot be had
    with pytest.raises(RemoteError, match="gave up"):
        pull(server.root_url, tmp_path / "l", fp, index=server.index, years=[2023], progress=False, http=client)
    assert not [p for p in (tmp_path / "l").rglob("*") if p.is_file()]
    server.reset()
    res = pull(server.root_url, tmp_path / "l", fp, index=server.index, years=[2023], progress=False)
    assert len(res["written"]) == plan["to_fetch"] == 1


def test_pull_errors_name_the_tile_and_the_index_that_does_not_match(server, bucket, tmp_path):
    fp = bbox_footprints(["4.523,43.585,4.527,43.588"])
    server.faults.missing.add(f"aef/v1/annual/{one_tile(bucket)}")
    with pytest.raises(ValueError, match="not found") as err:
        pull(server.root_url, tmp_path / "l", fp, index=server.index, years=[2023], progress=False)
    assert one_tile(bucket) in str(err.value) and "\n" not in str(err.value) and "index" in str(err.value)
    server.reset()
    # an index whose rows point at the other tile's file: the header says another place than the row
    import pyarrow.parquet as pq

    rows = pq.read_table(server.index).to_pylist()
    a = next(r for r in rows if r["path"].endswith("x0-2023.tiff"))
    b = next(r for r in rows if r["path"].endswith("x1-2023.tiff"))
    a["path"], b["path"] = b["path"], a["path"]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match="does not match") as err:
        pull(server.root_url, tmp_path / "l", fp, index=tmp_path / "wrong.parquet", years=[2023], progress=False)
    assert "\n" not in str(err.value)


def test_pull_whole_tiles_copies_them_byte_for_byte(server, bucket, tmp_path):
    fp = bbox_footprints(["4.523,43.585,4.527,43.588"])
    res = pull(server.root_url, tmp_path / "w", fp, index=server.index, years=[2024], whole_tiles=True,
               progress=False)
    assert res["written"] == ["2024/31N/x0-2024.tiff"]
    assert (tmp_path / "w" / res["written"][0]).read_bytes() == (bucket / res["written"][0]).read_bytes()
    again = pull(server.root_url, tmp_path / "w", fp, index=server.index, years=[2024], whole_tiles=True,
                 progress=False)
    assert again["written"] == []


def _cli(capsys, *argv):
    from fusar_gpt.__main__ import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_pull_cli_json_dry_run_and_one_line_errors(server, scenes, tmp_path, capsys):
    import json

    rc, out, _ = _cli(capsys, "aef", "pull", "--from", server.root_url, "--index", str(server.index), "--images",
                      str(scenes), "--to", str(tmp_path / "l"), "--dry-run", "--json")
    assert rc == 0 and json.loads(out)["to_fetch"] == 4
    rc, out, err = _cli(capsys, "aef", "pull", "--from", server.root_url, "--index", str(server.index), "--bbox",
                        "4.523,43.585,4.527,43.588", "--years", "2024", "--to", str(tmp_path / "l"))
    assert rc == 0 and "pulled 1 file(s)" in out
    for bad, match in ((["--bbox", "4.5,43.5,4.6,43.6"], "--years is required"),
                       (["--bbox", "4.5,43.5,4.6", "--years", "2024"], "--bbox"),
                       (["--images", str(tmp_path / "none")], "no such file"),
                       (["--bbox", "4.5,43.5,4.6,43.6", "--years", "soon"], "--years")):
        rc, _, err = _cli(capsys, "aef", "pull", "--from", server.root_url, "--index", str(server.index),
                          "--to", str(tmp_path / "l"), *bad)
        assert rc == 2 and match in err and err.count("\n") == 1, (bad, err)


# ---------------------------------------------------------------- a remote root as a store: build over HTTP
def test_build_against_the_server_gives_the_manifest_and_anchors_of_the_local_copy(synth_world, tmp_path):
    import shutil

    from fusar_gpt.data.build import BuildConfig, build

    # a copy of the session's synthetic world (conftest: 8 scenes, 4 sites in 4 UTM zones): the URL index is made
    # beside its tiles
    world = tmp_path / "world"
    shutil.copytree(synth_world[0], world)
    outs = {}
    with serve(world) as srv:
        index = write_url_index(world / "aef", f"{srv.url}/aef", into=tmp_path / "remote-index")
        for name, aef, aef_index in (("local", str(world / "aef"), None), ("remote", f"{srv.url}/aef", str(index))):
            out = tmp_path / f"ds-{name}"
            summary = build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                                        aef=aef, aef_index=aef_index, out=str(out), frame=224), progress=False)
            assert summary["records"] > 0 and summary["quarantined"] == 0
            outs[name] = out
        assert any(h.path.startswith("aef/") and h.status == 206 for h in srv.log)  # it did read over HTTP
    local, remote = outs["local"], outs["remote"]
    assert (local / "manifest.jsonl").read_text() == (remote / "manifest.jsonl").read_text()
    anchors = sorted(p.relative_to(local) for p in (local / "anchors").glob("*.npz"))
    assert anchors and anchors == sorted(p.relative_to(remote) for p in (remote / "anchors").glob("*.npz"))
    valid = 0
    for rel in anchors:
        assert (local / rel).read_bytes() == (remote / rel).read_bytes()
        with np.load(local / rel) as z:
            valid += int(z["mask"].sum())
    assert valid > 0


def test_remote_root_finds_its_own_index_and_refuses_a_root_without_one(server, bucket, tmp_path):
    from fusar_gpt.geo import GeoError

    with pytest.raises(GeoError, match="has no aef_index") as err:
        AEFStore(server.root_url, cache_dir=tmp_path / "c")
    assert "\n" not in str(err.value)
    write_url_index(bucket, server.root_url, into=bucket)  # the bucket's own index at its root
    try:
        store = AEFStore(server.root_url, cache_dir=tmp_path / "c")
        assert store.years == [2023, 2024] and all(p.startswith("http://") for p in store.index.paths)
        bbox = (4.523, 43.585, 4.527, 43.588)
        a = store.sample(bbox, 2024, grid=4)
        assert a.n_valid == 16 and np.array_equal(a.features, AEFStore(bucket).sample(bbox, 2024, grid=4).features)
        fetched = len(server.hits("aef/v1/annual/aef_index.parquet", 206))
        AEFStore(server.root_url, cache_dir=tmp_path / "c")  # cached: the index is not fetched again
        assert len(server.hits("aef/v1/annual/aef_index.parquet", 206)) == fetched
    finally:
        (bucket / "aef_index.parquet").unlink()


# ---------------------------------------------------------------- coverage
def test_coverage_reports_share_year_and_class_per_image_and_a_summary(server, bucket, scenes, tmp_path, capsys):
    import json

    from fusar_gpt.geo.aef_coverage import coverage

    _, _, west, north = tile_origin(4.52, 43.59, SIZE)
    d = tmp_path / "cov"
    for f in scenes.glob("*.tif"):
        (d / f.name).parent.mkdir(parents=True, exist_ok=True)
        (d / f.name).write_bytes(f.read_bytes())
    sar_image(d / "S1A_IW_20240601T060000_coast.tif", west + 500, north - 100, w=100, h=100)  # half on open sea
    sar_image(d / "S1A_IW_20240602T060000_sea.tif", west + 900, north - 20, w=40, h=40)  # all open sea
    fps, problems = images_footprints(d)
    res = coverage(AEFStore(server.root_url, index=server.index), fps)
    by = {Path(i["image"]).name.split("_")[-1].removesuffix(".tif"): i for i in res["images"]}
    assert {k: v["status"] for k, v in by.items()} == {"a": "full", "b": "full", "seam": "full", "far": "none",
                                                       "coast": "partial", "sea": "none"}
    assert by["b"]["year"] == 2015 and by["b"]["aef_year"] == 2023 and by["a"]["aef_year"] == 2024
    assert by["far"]["reason"] == "no tile" and by["sea"]["reason"] == "nodata only (open sea)"
    assert 0 < by["coast"]["share"] < 1 and by["a"]["share"] == 1.0
    assert res["summary"] == {"full": 3, "partial": 1, "none": 2, "no_tile": 1}
    assert res["by_year"]["2023"] == {"full": 2, "partial": 0, "none": 0}
    assert res["by_year"]["2024"] == {"full": 1, "partial": 1, "none": 2}
    # the local copy says the same, and so does the CLI
    assert coverage(AEFStore(bucket), fps)["images"] == res["images"]
    rc, out, _ = _cli(capsys, "aef", "coverage", "--images", str(d), "--aef", str(bucket), "--json")
    assert rc == 0 and json.loads(out)["summary"] == res["summary"]
    rc, out, _ = _cli(capsys, "aef", "coverage", "--images", str(d), "--aef", str(bucket))
    assert rc == 0 and "3 full, 1 partial, 2 none (1 with no tile at all)" in out and "[no tile]" in out
    # a dataset: its records' footprints and years; an image without one is listed, not fatal
    ds = tmp_path / "ds"
    ds.mkdir()
    rows = [{"id": "a-0", "image": "images/a.png", "meta": {"footprint": list(fps[0].bbox), "year": fps[0].year}},
            {"id": "a-1", "image": "images/a.png", "meta": {"footprint": list(fps[0].bbox), "year": fps[0].year}},
            {"id": "p-0", "image": "images/p.png", "meta": {"footprint": None, "year": None}}]
    (ds / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, out, _ = _cli(capsys, "aef", "coverage", "--manifest", str(ds), "--aef", str(bucket), "--json")
    got = json.loads(out)
    assert rc == 0 and len(got["images"]) == 1 and got["problems"][0]["image"] == "images/p.png"
    rc, _, err = _cli(capsys, "aef", "coverage", "--manifest", str(tmp_path / "nope"), "--aef", str(bucket))
    assert rc == 2 and "no manifest.jsonl" in err and err.count("\n") == 1


# ---------------------------------------------------------------- s3:// roots: anonymous unless the user has keys
def test_s3_roots_are_read_anonymously_unless_credentials_are_configured(server, bucket, tmp_path, monkeypatch):
    """GDAL's /vsis3/ pointed at the loopback server (path-style, plain HTTP): the same tile reads without any
    account, unsigned; with the user's keys GDAL signs and nothing of ours overrides them."""
    import shutil

    from fusar_gpt.geo import GeoError
    from fusar_gpt.geo.aef_paths import gdal_options
    from fusar_gpt.geo.aef_read import TileReader

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_NO_SIGN_REQUEST", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws here
    assert gdal_options("s3://b/2024/31N/t.tiff") == gdal_options("/vsis3/b/t.tiff") == {"AWS_NO_SIGN_REQUEST": "YES"}
    assert gdal_options("gs://alphaearth_foundations/x.tiff") == gdal_options(str(bucket)) == {}
    monkeypatch.setenv("AWS_S3_ENDPOINT", server.url.removeprefix("http://"))
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    rel = one_tile(bucket)
    win = Window(30, 40, 100, 90)
    with rasterio.open(bucket / rel) as ds:
        want = ds.read(window=win)
    tile = TileReader(f"s3://aef/v1/annual/{rel}")  # the server's folder aef/ as the bucket
    try:
        assert np.array_equal(tile.read(win), want)
    finally:
        tile.close()
    hits = server.hits(f"aef/v1/annual/{rel}")
    assert hits and not any(h.signed for h in hits)
    # the user's own credentials: ours stay out of the way and GDAL signs (another file: GDAL caches per file)
    copy = Path(rel).with_name("copy.tiff").as_posix()
    shutil.copyfile(bucket / rel, bucket / copy)
    try:
        for env in ({"AWS_PROFILE": "mine"}, {"AWS_NO_SIGN_REQUEST": "NO"}):
            with monkeypatch.context() as m:
                for k, v in env.items():
                    m.setenv(k, v)
                assert gdal_options(f"s3://aef/v1/annual/{copy}") == {}
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
        assert gdal_options(f"s3://aef/v1/annual/{copy}") == {}
        server.reset()
        tile = TileReader(f"s3://aef/v1/annual/{copy}")
        try:
            assert np.array_equal(tile.read(win), want)
        finally:
            tile.close()
        assert server.hits(f"aef/v1/annual/{copy}") and all(h.signed for h in server.hits(f"aef/v1/annual/{copy}"))
        (tmp_path / "home" / ".aws").mkdir(parents=True)
        (tmp_path / "home" / ".aws" / "credentials").write_text("[default]\n")
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        assert gdal_options("s3://b/t.tiff") == {}  # a shared credentials file counts too
    finally:
        (bucket / copy).unlink()
    # a remote root without an index: the error names the CLI flag
    with pytest.raises(GeoError, match="pass --index ") as err:
        AEFStore("s3://aef/v1/annual", cache_dir=False)
    assert "index=" not in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- ask over HTTP
def test_ask_cli_answers_from_an_http_root_as_from_its_local_copy(tiny_dir, tmp_path, capsys):
    import json

    from fusar_gpt.__main__ import main
    from tests.infer_helpers import make_aef, make_run, utm_scene

    run = make_run(tmp_path, tiny_dir, frame=56, grid=4)
    aef = make_aef(tmp_path / "aef")
    scene = utm_scene(tmp_path / "utm_20240501.tif")
    q = "How many ships are in this image?"
    got = {}
    with serve(aef) as srv:
        index = write_url_index(aef, srv.url, into=tmp_path / "index")
        for name, flags in (("local", ["--aef", str(aef)]), ("http", ["--aef", srv.url, "--aef-index", str(index)])):
            assert main(["ask", str(run), str(scene), q, *flags, "--max-new-tokens", "4", "--json"]) == 0
            got[name] = json.loads(capsys.readouterr().out)
        assert srv.hits(status=206)  # the http root was read over HTTP
    assert got["http"]["valid_anchors"] == got["local"]["valid_anchors"] == 16
    assert got["http"]["answer"] == got["local"]["answer"] and got["http"]["aef_year"] == got["local"]["aef_year"]
