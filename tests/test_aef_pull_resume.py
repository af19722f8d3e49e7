"""``aef pull`` against the loopback bucket (tests/aef_server.py): killed and resumed, each block fetched once,
window merging, what a killed pull leaves behind, 403s and timeouts, the layout of the files it writes, and
a build on the pulled root that equals a build on the original tiles."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Compression, Interleaving
from rasterio.windows import Window

from fusar_gpt.geo import GeoError
from fusar_gpt.geo.aef import AEFStore, to_lonlat
from fusar_gpt.geo.aef_codes import BANDS
from fusar_gpt.geo.aef_http import CHUNK, HttpClient
from fusar_gpt.geo.aef_plan import Box, Footprint, merge_boxes
from fusar_gpt.geo.aef_pull import pull
from fusar_gpt.geo.aef_remote_tile import block_ranges
from fusar_gpt.geo.aef_tiles import temp_prefix, tile_origin, write_tile
from tests.aef_server import serve, write_url_index

REPO = Path(__file__).resolve().parents[1]
SIZE, BLOCK, YEAR = 256, 64, 2024  # 4 x 4 blocks: one window per block, or two windows sharing one
TILE = f"{YEAR}/31N/t.tiff"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """One bucket-layout tile of random codes (blocks that do not compress: bytes count), its north rows sea."""
    root = tmp_path_factory.mktemp("pull-bucket") / "annual"
    codes = np.random.default_rng(0).integers(-127, 128, (64, SIZE, SIZE)).astype(np.int8)
    codes[:, :12] = -128
    _, epsg, west, north = tile_origin(4.52, 43.59, SIZE)
    write_tile(root / TILE, codes, crs=f"EPSG:{epsg}", west=west, north=north, block_size=BLOCK)
    return root


@pytest.fixture(scope="module")
def server(bucket):
    with serve(bucket.parent) as srv:
        srv.root_url = f"{srv.url}/annual"
        srv.key = f"annual/{TILE}"
        srv.index = write_url_index(bucket, srv.root_url, into=bucket.parent / "index")
        yield srv


@pytest.fixture(autouse=True)
def _clean(request, monkeypatch, tmp_path):
    monkeypatch.setenv("FUSAR_GPT_CACHE", str(tmp_path / "cache"))
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def footprint(bucket, c0: int, r0: int, c1: int, r1: int) -> Footprint:
    """The lon/lat box of stored pixels [c0, c1) x [r0, r1) of the tile (rows bottom-up, as stored)."""
    with rasterio.open(bucket / TILE) as ds:
        t, crs = ds.transform, ds.crs
    x0, y0 = t @ (c0 + 0.5, r0 + 0.5)
    x1, y1 = t @ (c1 - 0.5, r1 - 0.5)
    lon, lat = to_lonlat(crs, np.array([x0, x1]), np.array([y0, y1]))
    return Footprint((float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())), YEAR, f"px {c0},{r0}")


def grid(bucket) -> list[Footprint]:
    """16 footprints of 20 px, one in the middle of each block: 16 windows that share no block."""
    return [footprint(bucket, bx * BLOCK + 22, by * BLOCK + 22, bx * BLOCK + 42, by * BLOCK + 42)
            for by in range(SIZE // BLOCK) for bx in range(SIZE // BLOCK)]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(server, bucket, tmp_path_factory):
    """An uninterrupted pull of the 16 windows: its files, result, plan and the bytes the server sent."""
    out = tmp_path_factory.mktemp("clean") / "aef"
    fps = grid(bucket)
    cache = out.parent / "cache"
    plan = pull(server.root_url, out, fps, index=server.index, dry_run=True, cache_dir=cache)
    server.reset()
    res = pull(server.root_url, out, fps, index=server.index, progress=False, workers=1, cache_dir=cache)
    sent = server.bytes_sent()
    server.reset()
    return {"root": out, "fps": fps, "plan": plan, "res": res, "sent": sent, "files": files(out)}


# ------------------------------------------------------------------------------------- window merging
def test_merge_boxes_joins_overlapping_and_nearly_touching_windows_only():
    a = Box(0, 0, 10, 10)
    assert merge_boxes([a, Box(5, 5, 15, 15)], gap=32) == [Box(0, 0, 15, 15)]  # overlapping
    assert merge_boxes([a, Box(0, 5, 100, 8)], gap=0) == [Box(0, 0, 100, 10)]  # overlapping, however thin
    assert merge_boxes([a, a], gap=32) == [a]
    assert merge_boxes([a, Box(20, 0, 30, 10)], gap=32) == [Box(0, 0, 30, 10)]  # 10 px apart, 1.5x the pixels
    assert merge_boxes([a, Box(20, 0, 30, 10)], gap=10) == [a, Box(20, 0, 30, 10)]  # not within the gap
    assert merge_boxes([a, Box(50, 0, 60, 10)], gap=32) == [a, Box(50, 0, 60, 10)]  # far apart
    # within the gap but the rectangle would be mostly new pixels: 1.55x and 3.1x (diagonal) stay apart
    assert merge_boxes([a, Box(21, 0, 31, 10)], gap=32) == [a, Box(21, 0, 31, 10)]
    assert merge_boxes([a, Box(21, 0, 31, 10)], gap=32, slack=2.0) == [Box(0, 0, 31, 10)]
    assert merge_boxes([a, Box(15, 15, 25, 25)], gap=32) == [a, Box(15, 15, 25, 25)]
    # a merge that brings a third window within reach takes it too
    assert merge_boxes([Box(0, 0, 10, 10), Box(12, 0, 22, 10), Box(24, 0, 34, 10)], gap=4) == [Box(0, 0, 34, 10)]


# ------------------------------------------------------------------------------------- the files it writes
def test_window_files_have_the_public_layout_and_the_source_pixels(clean, bucket):
    written = clean["res"]["written"]
    assert len(written) == 16 and clean["plan"]["to_fetch"] == 16
    with rasterio.open(bucket / TILE) as src:
        for rel in written:
            with rasterio.open(clean["root"] / rel) as ds:
                assert ds.compression == Compression.zstd and ds.interleaving == Interleaving.band
                assert ds.count == 64 and set(ds.dtypes) == {"int8"} and ds.nodata == -128
                assert ds.transform.e > 0 and ds.transform.a == src.transform.a  # bottom-up, 10 m
                assert set(ds.block_shapes) == {(BLOCK, BLOCK)} and ds.descriptions == BANDS
                col, row = ~src.transform @ (ds.transform.c, ds.transform.f)
                win = Window(round(col), round(row), ds.width, ds.height)
                assert np.array_equal(ds.read(), src.read(window=win))


# ------------------------------------------------------------------------------------- killed and resumed
def test_sigkilled_pull_resumes_to_the_clean_files_fetching_only_the_interrupted_window_again(
        server, bucket, clean, tmp_path, capsys):
    from fusar_gpt.__main__ import main

    out = tmp_path / "aef"
    bboxes = [a for fp in clean["fps"] for a in ("--bbox", ",".join(map(repr, fp.bbox)))]
    cmd = [sys.executable, "-m", "fusar_gpt", "aef", "pull", "--from", server.root_url, "--index", str(server.index),
           *bboxes, "--years", str(YEAR), "--to", str(out), "--workers", "1", "--json", "--cache-dir",
           str(tmp_path / "cache")]
    server.faults.slow = 0.02  # ~0.2 s a window: the kill lands mid-pull
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = []
    deadline = time.monotonic() + 60
    while len(done) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        done = list(out.glob("*/*/t__*.tiff"))
    assert proc.poll() is None, "the pull ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    first, kept = server.bytes_sent(), len(list(out.glob("*/*/t__*.tiff")))
    assert 4 <= kept < 16
    server.reset()
    assert main(cmd[3:]) == 0  # the same command again, to completion (in this process: it is not killed)
    second = server.bytes_sent()
    res = json.loads(capsys.readouterr().out)
    assert len(res["written"]) == 16 - kept and res["retries"] == 0
    assert files(out) == clean["files"]  # byte for byte, the index included; no temporary left behind
    # over both runs, only the window in flight at the kill (one worker: one window) and the headers the rerun
    # reads again came twice
    windows = [w["bytes"] for t in clean["plan"]["tiles"] for w in t["windows"]]
    headers = clean["sent"] - clean["res"]["bytes_to_fetch"]
    assert clean["res"]["bytes_to_fetch"] == sum(windows) and 0 < headers < clean["sent"] / 4
    assert first + second - clean["sent"] <= max(windows) + headers


def test_a_block_a_finished_window_shares_with_a_later_one_is_not_fetched_again_after_a_failure(
        server, bucket, tmp_path):
    """Windows 1 and 3 share block A, window 2 needs block B. The pull dies fetching B (a 403 stands for a
    killed process: the same point, deterministically): window 1 is written, A is still needed by window 3. The
    re-run fetches B (the interrupted window) and reads A from the blocks the first run left on disk: no byte of A
    crosses the network twice, and the files equal a clean pull's."""
    a1 = footprint(bucket, 4, 4, 12, 12)                  # block (0, 0)
    b = footprint(bucket, BLOCK + 4, 4, BLOCK + 12, 12)   # block (1, 0)
    a3 = footprint(bucket, 4, 50, 12, 58)                 # block (0, 0) again, 38 px away: its own window
    fps = [a1, b, a3]
    cache = tmp_path / "cache"
    plan = pull(server.root_url, tmp_path / "plan", fps, index=server.index, dry_run=True, cache_dir=cache)
    assert [len(t["windows"]) for t in plan["tiles"]] == [3]
    with rasterio.open(bucket / TILE) as ds:
        order = [BANDS.index(d) + 1 for d in ds.descriptions]
        block_a = sorted(set(block_ranges(ds, Window(0, 0, BLOCK, BLOCK), order)))
        block_b = sorted(set(block_ranges(ds, Window(BLOCK, 0, BLOCK, BLOCK), order)))
    clean = tmp_path / "clean"
    server.reset()
    pull(server.root_url, clean, fps, index=server.index, progress=False, workers=1, cache_dir=cache)
    server.reset()
    out = tmp_path / "aef"
    server.faults.refuse_offsets = {block_b[0][0]}
    with pytest.raises(GeoError, match="403"):
        pull(server.root_url, out, fps, index=server.index, progress=False, workers=1, cache_dir=cache)
    def asks_a(h) -> bool:
        return bool(h.range) and any(re.search(rf"[=,]\s*{o}-", h.range) for o, _ in block_a)

    sent_a = sum(h.sent for h in server.hits() if asks_a(h))
    assert sent_a >= sum(n for _, n in block_a)  # the first run fetched A (for windows 1 and 3)
    assert len(list(out.glob("*/*/t__*.tiff"))) == 1  # window 1 written, 2 failed, 3 never started
    server.reset()
    res = pull(server.root_url, out, fps, index=server.index, progress=False, workers=1, cache_dir=cache)
    assert len(res["written"]) == 2
    again = [h for h in server.hits() if asks_a(h)]
    assert again == [], again  # A came from disk
    assert files(out) == files(clean)  # and nothing of the first run's blocks is left behind


def test_pull_sweeps_the_temporaries_of_killed_writers_and_only_those(server, bucket, clean, tmp_path):
    out = tmp_path / "aef"
    zone = out / f"{YEAR}" / "31N"
    zone.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = temp_prefix().replace(f"-{os.getpid()}-", f"-{int(gone.stdout)}-")
    old = time.time() - 2 * 3600
    made = {
        f"{dead}abc_123/staged.tif": True,                # this host, its process gone: stale
        f"{temp_prefix()}live0000/staged.tif": False,     # this process (alive): in use
        ".aef-tile-k2j4h5g6/final.tif": True,             # an older version's name, untouched for 2 h
        ".aef-tile-a1b2c3d4/staged.tif": False,           # the same, touched just now
        ".t.tiff.x7y8z9w0.tmp.tiff": True,                # a whole-tile copy (atomic_path), 2 h old
        ".keep": False,                                   # not ours
    }
    for rel in made:
        p = zone / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
        if rel.startswith(".aef-tile-k2") or rel.endswith(".tmp.tiff"):
            for q in (p, p.parent):
                os.utime(q, (old, old))
    (out / ".aef_index.parquet.q1w2e3r4.tmp").write_bytes(b"x")
    os.utime(out / ".aef_index.parquet.q1w2e3r4.tmp", (old, old))
    res = pull(server.root_url, out, clean["fps"][:1], index=server.index, progress=False)
    want = sorted([f"{YEAR}/31N/{rel.split('/')[0]}" for rel, stale in made.items() if stale]
                  + [".aef_index.parquet.q1w2e3r4.tmp"])
    assert res["swept"] == want and len(res["written"]) == 1
    for rel, stale in made.items():
        assert (zone / rel).exists() != stale, rel
    dry = pull(server.root_url, tmp_path / "none", clean["fps"][:1], index=server.index, dry_run=True)
    assert "swept" not in dry and not (tmp_path / "none").exists()  # a dry run touches nothing


# ------------------------------------------------------------------------------------- one fetch per block
def test_a_block_two_windows_share_is_fetched_once_and_counted_once(server, bucket, tmp_path):
    # two windows ~38 px apart (more than the merge gap) whose corners lie in the same block, (1, 1)
    fps = [footprint(bucket, 40, 70, 80, 100), footprint(bucket, 128, 108, 160, 138)]
    plan = pull(server.root_url, tmp_path / "aef", fps, index=server.index, dry_run=True)
    (tile,) = plan["tiles"]
    a, b = tile["windows"]
    with rasterio.open(bucket / TILE) as ds:
        ranges = [set(block_ranges(ds, Window(*w["window"]))) for w in (a, b)]
    shared = ranges[0] & ranges[1]
    assert len(shared) == 64  # every band of the one block both touch
    shared_bytes = sum(n for _, n in shared)
    assert tile["bytes_to_fetch"] == plan["bytes_to_fetch"] == a["bytes"] + b["bytes"] - shared_bytes
    assert (a["new_bytes"], b["new_bytes"]) == (a["bytes"], b["bytes"] - shared_bytes)
    server.reset()
    res = pull(server.root_url, tmp_path / "aef", fps, index=server.index, progress=False)
    assert len(res["written"]) == 2
    size = (bucket / TILE).stat().st_size
    gets = []
    for h in server.hits(server.key, 206):
        start, end = (int(v) for v in h.range.split("=")[1].split("-"))
        if not (start % CHUNK == 0 and (end + 1) % CHUNK == 0 or end == size - 1):  # header chunks aside
            gets.append((start, end))
    for off, n in ranges[0] | ranges[1]:
        assert sum(s <= off and off + n - 1 <= e for s, e in gets) == 1, (off, n)
    remote, local = AEFStore(server.root_url, index=server.index), AEFStore(tmp_path / "aef")
    for fp in fps:
        want = remote.sample(fp.bbox, YEAR, grid=6)
        assert want.n_valid > 0 and np.array_equal(local.sample(fp.bbox, YEAR, grid=6).features, want.features)


# ------------------------------------------------------------------------------------- 403 and timeouts
def test_pull_403_is_one_line_naming_the_tile_in_the_library_and_the_cli(server, bucket, clean, tmp_path, capsys):
    from fusar_gpt.__main__ import main

    server.faults.forbidden.add(server.key)
    with pytest.raises(GeoError, match="access denied") as err:
        pull(server.root_url, tmp_path / "aef", clean["fps"][:1], index=server.index, progress=False)
    assert TILE in str(err.value) and "403" in str(err.value) and "\n" not in str(err.value)
    fp = ",".join(map(repr, clean["fps"][0].bbox))
    rc = main(["aef", "pull", "--from", server.root_url, "--index", str(server.index), "--bbox", fp, "--years",
               str(YEAR), "--to", str(tmp_path / "aef")])
    err = capsys.readouterr().err
    assert rc == 2 and TILE in err and "HTTP 403" in err and err.count("\n") == 1
    assert not (tmp_path / "aef").exists() or not list((tmp_path / "aef").rglob("*.tiff"))


def test_pull_recovers_from_requests_that_time_out(server, bucket, clean, tmp_path):
    server.faults.slow_first[server.key] = 2
    server.faults.slow_first_s = 1.5  # against a timeout of 0.5 s: a loaded machine answers the others well within it
    res = pull(server.root_url, tmp_path / "aef", clean["fps"][:3], index=server.index, progress=False,
               http=HttpClient(timeout=0.5, backoff=0.01))
    assert res["retries"] == 2 and res["retry_causes"] == {"timeout": 2} and len(res["written"]) == 3
    for rel in res["written"]:
        assert (tmp_path / "aef" / rel).read_bytes() == clean["files"][rel]


# ------------------------------------------------------------------------------------- pull, then build
def test_build_on_a_pulled_root_equals_the_build_on_the_original_tiles_for_50_images(tmp_path):
    from fusar_gpt.data.build import BuildConfig, build
    from fusar_gpt.data.synth import make_world
    from fusar_gpt.geo.aef_plan import images_footprints

    world = tmp_path / "world"
    make_world(world, scenes=50, seed=5, sites=2, years=(YEAR,), image_px=(64, 96), tile_px=128, block_size=64,
               max_targets=2, clutter=0.2)
    with serve(world) as srv:
        index = write_url_index(world / "aef", f"{srv.url}/aef", into=tmp_path / "index")
        fps, problems = images_footprints(world / "images")
        res = pull(f"{srv.url}/aef", tmp_path / "pulled", fps, index=index, progress=False)
    assert len(fps) == 50 and problems == [] and res["problems"] == [] and res["written"]
    assert res["fetched_bytes"] < res["whole_tile_bytes"]
    outs = {}
    for name, aef in (("original", world / "aef"), ("pulled", tmp_path / "pulled")):
        outs[name] = tmp_path / f"ds-{name}"
        summary = build(BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                                    aef=str(aef), out=str(outs[name]), frame=56, workers=1), progress=False)
        assert summary["quarantined"] == 0 and summary["records"] > 0
    a, b = outs["original"], outs["pulled"]
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    anchors = sorted(p.name for p in (a / "anchors").glob("*.npz"))
    assert len(anchors) == 50 and anchors == sorted(p.name for p in (b / "anchors").glob("*.npz"))
    valid = 0
    for name in anchors:
        assert (a / "anchors" / name).read_bytes() == (b / "anchors" / name).read_bytes(), name
        with np.load(a / "anchors" / name) as z:
            valid += int(z["mask"].sum())
    assert valid > 0
