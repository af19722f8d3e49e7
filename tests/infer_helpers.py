"""Fixtures shared by the inference, scene, server and export tests: a run directory as training writes it
(tiny backbone, a LoRA and a TLM with non-trivial weights), a small AEF root, and SAR GeoTIFFs over it."""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import io
import json
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from fusar_gpt.chip import ChipSpec
from fusar_gpt.geo.aef import lonlat_to
from fusar_gpt.geo.aef_tiles import write_tile
from fusar_gpt.model.backbone import load_backbone
from fusar_gpt.model.checkpoint import save_adapter, save_tlm
from fusar_gpt.model.fusar import FusarGPT
from fusar_gpt.model.policy import add_lora
from fusar_gpt.model.tlm import TLM

EPSG = 32631                      # UTM 31N, near Arles (the shared real S1 scene's place)
WEST, NORTH = 630000.0, 4830000.0  # the AEF tile's north-west corner
AEF_PX, AEF_SIZE = 10.0, 512       # 5.12 km of 10 m AEF pixels
YEAR = 2024


def make_run(root: Path, tiny_dir: Path, *, frame: int = 224, grid: int = 4, stretch=None, seed: int = 0) -> Path:
    """``root/run`` (config.yaml, chip.json, tlm.*, adapter/), as ``train`` leaves it, and ``root/ds/build.json``.

    A fresh LoRA is the identity and a fresh TLM nearly so; both get random weights here, so that merging
    or dropping either one, or losing the priors, changes what the model says."""
    backbone, proc = load_backbone(tiny_dir)
    torch.manual_seed(seed)
    model = FusarGPT(backbone, TLM(backbone.config.text_config.hidden_size), proc)
    add_lora(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # strong enough that answers differ from image to image (see test_serve)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0)
        for p in model.tlm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    run, ds = root / "run", root / "ds"
    ds.mkdir(parents=True, exist_ok=True)
    (ds / "build.json").write_text(json.dumps({"config": {"frame": frame, "grid": grid, "stretch": stretch}}))
    (ds / "manifest.jsonl").write_text("")
    save_tlm(model.tlm, run)
    save_adapter(model.backbone, run)
    ChipSpec(frame=frame, grid=grid, stretch=tuple(stretch) if stretch else None).save(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"base": str(tiny_dir), "attn_implementation": "sdpa"},
                                                     "data": {"manifest": str(ds / "manifest.jsonl")}}))
    return run


_AEF_MASTERS: dict[int, Path] = {}
_AEF_TMP: list[tempfile.TemporaryDirectory] = []


def make_aef(root: Path, seed: int = 0) -> Path:
    """One AEF tile in the bucket's layout ({year}/{zone}/*.tiff, bottom-up int8), random unit-ish vectors,
    with a nodata strip along its west edge.

    Written once per seed and session (a 512 px tile of random codes is slow to compress), then copied into
    ``root`` as new files (fresh times, nothing shared: a test may change its copy)."""
    master = _AEF_MASTERS.get(seed)
    if master is None:
        if not _AEF_TMP:
            _AEF_TMP.append(tempfile.TemporaryDirectory(prefix="fusar-test-aef-"))
        master = _AEF_MASTERS[seed] = _write_aef(Path(_AEF_TMP[0].name) / f"seed-{seed}", seed)
    shutil.copytree(master, root, copy_function=shutil.copyfile, dirs_exist_ok=True)
    return root


def _write_aef(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, size=(64, AEF_SIZE, AEF_SIZE), dtype=np.int16).astype(np.int8)
    codes[:, :, :16] = -128
    write_tile(root / str(YEAR) / "31N" / "tile.tiff", codes, crs=f"EPSG:{EPSG}", west=WEST, north=NORTH,
               pixel_size=AEF_PX, block_size=64, overviews=False)
    return root


def write_scene(path: Path, db: np.ndarray, *, transform: Affine, crs=f"EPSG:{EPSG}", date: str | None = "2024-05-01",
                nodata=None) -> Path:
    """A float32 dB SAR GeoTIFF with its acquisition date in the tags."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=db.shape[1], height=db.shape[0], count=1,
                           dtype="float32", crs=crs, transform=transform, nodata=nodata, tiled=True,
                           blockxsize=256, blockysize=256) as ds:
            ds.write(db.astype(np.float32), 1)
            if date:
                ds.update_tags(ACQUISITION_DATE=date)
                ds.update_tags(1, UNITS="dB")
    return path


def speckle_db(h: int, w: int, seed: int) -> np.ndarray:
    """Sea-like background in dB (-22..-12) with a few bright points, so the stretch has something to do."""
    rng = np.random.default_rng(seed)
    db = rng.uniform(-22.0, -12.0, size=(h, w)).astype(np.float32)
    for _ in range(6):
        r, c = rng.integers(8, h - 16), rng.integers(8, w - 16)
        db[r:r + 6, c:c + 12] = 4.0
    return db


def utm_scene(path: Path, size: int = 256, pixel: float = 10.0, seed: int = 1) -> Path:
    """A UTM scene well inside the AEF tile (east of its nodata strip)."""
    t = Affine(pixel, 0.0, WEST + 600.0, 0.0, -pixel, NORTH - 500.0)
    return write_scene(path, speckle_db(size, size, seed), transform=t)


def lonlat_scene(path: Path, size: int = 256, seed: int = 2) -> tuple[Path, tuple[float, float, float, float]]:
    """A north-up EPSG:4326 scene inside the AEF tile; returns it with its lon/lat box."""
    from fusar_gpt.geo.aef import to_lonlat

    lon, lat = to_lonlat(f"EPSG:{EPSG}", np.array([WEST + 800.0, WEST + 3000.0]),
                         np.array([NORTH - 3200.0, NORTH - 1000.0]))
    bbox = (float(lon[0]), float(lat[0]), float(lon[1]), float(lat[1]))
    t = Affine((bbox[2] - bbox[0]) / size, 0.0, bbox[0], 0.0, -(bbox[3] - bbox[1]) / size, bbox[3])
    return write_scene(path, speckle_db(size, size, seed), transform=t, crs="EPSG:4326"), bbox


def to_utm(lon, lat):
    return lonlat_to(f"EPSG:{EPSG}", np.asarray(lon, float), np.asarray(lat, float))


class Spy:
    """Wraps a model's ``generate`` to count calls and keep what each call was given."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []
        self._orig = model.generate

        def generate(*args, **kwargs):
            self.calls.append(kwargs)
            return self._orig(*args, **kwargs)

        model.generate = generate

    def restore(self) -> None:
        self.model.generate = self._orig


# ------------------------------------------------------------------ HTTP helpers (test_serve, test_export)
KEY = "test-key"


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def data_url(arr: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode()


def noise_image(seed: int, shape=(96, 128)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def chat_body(url: str, question: str = "How many ships are in this image?", **extra) -> dict:
    return {"model": "tiny-run", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]}], **extra}


def request(port, method="POST", path="/v1/chat/completions", body=None, token=KEY, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Content-Type": "application/json", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body  # bytes, a chunk iterator, or None
    conn.request(method, path, body=data, headers=h, encode_chunked="Transfer-Encoding" in h)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert b"Traceback" not in raw and b'File "' not in raw  # never a stack trace
    return resp.status, json.loads(raw), dict(resp.getheaders())


def sparse_tif(path, side: int, dtype: str = "uint8", count: int = 1):
    """A georeferenced GeoTIFF declaring side x side pixels in a few KB (sparse: only one block written)."""
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=count, dtype=dtype,
                       crs="EPSG:32631", transform=Affine(10, 0, 500_000, 0, -10, 4_800_000), tiled=True,
                       sparse_ok=True) as ds:
        ds.write(np.ones((count, 16, 16), dtype), window=((0, 16), (0, 16)))
    return path


@contextlib.contextmanager
def listener():
    """A loopback HTTP server that answers 404 to everything and records each path asked for: ``(port, hits)``.
    Where nothing may be fetched (a VRT pointing at ``/vsicurl/``), ``hits`` must stay empty."""
    hits: list[str] = []

    class Spy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *a):
            pass

    spy = http.server.HTTPServer(("127.0.0.1", 0), Spy)
    threading.Thread(target=spy.serve_forever, daemon=True).start()
    try:
        yield spy.server_port, hits
    finally:
        spy.shutdown()

