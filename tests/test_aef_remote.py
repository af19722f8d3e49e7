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

from fusar_gpt.geo.aef import quantize
from fusar_gpt.geo.aef_http import HttpClient, RemoteError, block_ranges, open_http
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
