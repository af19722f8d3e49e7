"""What to fetch of a remote AEF root for a set of footprints: tiles, pixel windows, bytes.

A footprint (an image's lon/lat box and acquisition year, a manifest record's ``meta.footprint`` and
``meta.year``, or a box given by hand) meets some tiles of the index; in each, the pixels that hold
the footprint (its densified edges projected into the tile's CRS, plus ``margin`` pixels so that block
means at the edge read what the remote would) form a window. Windows of one tile that overlap or
nearly touch are merged, as long as the merged rectangle is not mostly new pixels. Every node that
``AEFStore.sample``/``sample_raster`` lays over a footprint falls in these windows, in every tile that
could supply it (the neighbouring zone's too), which is why the local copy answers exactly as the
remote does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import GeoError, check_bbox
from .raster import acquisition_date, footprint, open_raster, read_sar
from .transforms import lonlat_to, map_to_pixel

IMAGE_SUFFIXES = (".tif", ".tiff")
EDGE_POINTS = 16
_WINDOW_NAME = re.compile(r"^(?P<stem>.+)__c(?P<c>\d+)-r(?P<r>\d+)-(?P<w>\d+)x(?P<h>\d+)\.tiff?$")


@dataclass(frozen=True)
class Footprint:
    bbox: tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max
    year: int | None                        # acquisition (asked) year; None: the years given by hand
    source: str                             # file, record id or "bbox N": what a message names
    raster: tuple | None = None             # (crs, transform, width, height) of an image: its own anchor grid


@dataclass(frozen=True)
class Box:
    """A pixel window in a tile's STORED grid (rows as stored: bottom-up in bucket tiles), half-open."""

    c0: int
    r0: int
    c1: int
    r1: int

    @property
    def width(self) -> int:
        return self.c1 - self.c0

    @property
    def height(self) -> int:
        return self.r1 - self.r0

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def overlap(self, other: Box) -> int:
        return Box(max(self.c0, other.c0), max(self.r0, other.r0), min(self.c1, other.c1),
                   min(self.r1, other.r1)).area

    def near(self, other: Box, gap: int) -> bool:
        return (self.c0 - gap < other.c1 and other.c0 - gap < self.c1 and self.r0 - gap < other.r1
                and other.r0 - gap < self.r1)

    def union(self, other: Box) -> Box:
        return Box(min(self.c0, other.c0), min(self.r0, other.r0), max(self.c1, other.c1), max(self.r1, other.r1))

    def contains(self, other: Box) -> bool:
        return self.c0 <= other.c0 and self.r0 <= other.r0 and other.c1 <= self.c1 and other.r1 <= self.r1

    def as_list(self) -> list[int]:
        return [self.c0, self.r0, self.width, self.height]


# ----------------------------------------------------------------------------------------------- footprints
def image_footprint(path) -> Footprint:
    """An image's lon/lat box and acquisition year from its header (no pixels are read), through the same
    ``footprint`` and ``acquisition_date`` that ``read_sar`` uses; GCP-only rasters go through ``read_sar``."""
    path = Path(path)
    try:
        with open_raster(path) as ds:
            if ds.crs is not None and not ds.transform.is_identity:
                box = footprint(ds.crs, ds.transform, ds.width, ds.height, what=str(path))
                date = acquisition_date({**ds.tags(), **ds.tags(1)}, path)
                return Footprint(box, date.year if date else None, str(path),
                                 (ds.crs, ds.transform, ds.width, ds.height))
    except GeoError:
        raise
    except Exception as err:  # rasterio raises several types for unreadable files
        raise GeoError(f"{path}: not a readable raster ({' '.join(str(err).split())})") from None
    img = read_sar(path)
    return Footprint(img.footprint, img.date.year if img.date else None, str(path),
                     (img.crs, img.transform, img.width, img.height))


def images_footprints(root) -> tuple[list[Footprint], list[dict]]:
    """Footprints of the GeoTIFFs under ``root`` (a folder, searched recursively, or one file), and the files
    that could not be placed (``{"image", "reason"}``): one bad file does not stop the others."""
    root = Path(root)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    else:
        raise GeoError(f"--images {root}: no such file or folder")
    if not files:
        raise GeoError(f"--images {root}: no GeoTIFF (.tif/.tiff) under it")
    out, problems = [], []
    for f in files:
        try:
            out.append(image_footprint(f))
        except GeoError as err:
            problems.append({"image": str(f), "reason": " ".join(str(err).split()).replace(f"{f}: ", "")})
    return out, problems


def manifest_footprints(dataset) -> tuple[list[Footprint], list[dict]]:
    """One footprint per image of a dataset (``DS`` or ``DS/manifest.jsonl``): its records' ``meta.footprint``
    and ``meta.year``. Records without a footprint (PNG chips) are listed as problems."""
    path = Path(dataset)
    path = path / "manifest.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise GeoError(f"--manifest {dataset}: no manifest.jsonl there")
    seen: dict[str, Footprint] = {}
    problems: dict[str, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise GeoError(f"{path}:{n}: not a JSON object") from None
            meta = rec.get("meta") or {} if isinstance(rec, dict) else {}
            key = str(rec.get("image") or rec.get("id") or n) if isinstance(rec, dict) else str(n)
            if key in seen or key in problems:
                continue
            fp = meta.get("footprint") if isinstance(meta, dict) else None
            if not fp:
                problems[key] = {"image": key, "reason": "no meta.footprint (an image without georeference)"}
                continue
            year = meta.get("year")
            seen[key] = Footprint(check_bbox(fp, f"{path}:{n} meta.footprint"),
                                  int(year) if isinstance(year, (int, float)) or str(year).isdigit() else None, key)
    if not seen and not problems:
        raise GeoError(f"{path}: no records")
    return list(seen.values()), list(problems.values())


def bbox_footprints(bboxes) -> list[Footprint]:
    return [Footprint(check_bbox(str(b).split(",") if isinstance(b, str) else b, f"--bbox {b}"), None, f"bbox {k}")
            for k, b in enumerate(bboxes, 1)]


# ----------------------------------------------------------------------------------------------- windows
def footprint_box(bbox, crs: str, transform, width: int, height: int, margin: int) -> Box | None:
    """The stored-pixel window of a tile that holds the lon/lat box (plus ``margin`` pixels), or None."""
    lon0, lat0, lon1, lat1 = bbox
    t = np.linspace(0.0, 1.0, EDGE_POINTS)
    one = np.ones_like(t)
    lon = np.concatenate([lon0 + t * (lon1 - lon0), one * lon1, lon1 - t * (lon1 - lon0), one * lon0])
    lat = np.concatenate([one * lat1, lat1 - t * (lat1 - lat0), one * lat0, lat0 + t * (lat1 - lat0)])
    x, y = lonlat_to(crs, lon, lat)
    col, row = map_to_pixel(transform, x, y)
    if not (np.isfinite(col).all() and np.isfinite(row).all()):
        return None
    box = Box(max(int(np.floor(col.min())) - margin, 0), max(int(np.floor(row.min())) - margin, 0),
              min(int(np.floor(col.max())) + 1 + margin, width), min(int(np.floor(row.max())) + 1 + margin, height))
    return box if box.area > 0 else None


def merge_boxes(boxes: list[Box], gap: int, slack: float = 1.5) -> list[Box]:
    """Merge windows that overlap or lie within ``gap`` pixels of each other, unless the merged rectangle would
    be more than ``slack`` times the pixels the two cover (two diagonal neighbours: fetch them apart)."""
    out = sorted(set(boxes), key=lambda b: (b.r0, b.c0))
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if not a.near(b, gap):
                    continue
                u = a.union(b)
                if a.overlap(b) > 0 or u.area <= slack * (a.area + b.area - a.overlap(b)):
                    out[i] = u
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(out, key=lambda b: (b.r0, b.c0))


def block_pieces(box: Box, block: tuple[int, int]) -> list[Box]:
    """The window cut along the tile's block grid: each piece reads whole blocks once, and memory stays at one
    block of 64 bands however large the window is."""
    bh, bw = block
    pieces = []
    for r in range(box.r0 // bh * bh, box.r1, bh):
        for c in range(box.c0 // bw * bw, box.c1, bw):
            p = Box(max(c, box.c0), max(r, box.r0), min(c + bw, box.c1), min(r + bh, box.r1))
            if p.area:
                pieces.append(p)
    return pieces


def window_name(tile_file: str, box: Box) -> str:
    """``{stem}__c{col}-r{row}-{w}x{h}.tiff``: a window tile is named by where it lies in its source tile."""
    stem = tile_file.rsplit(".", 1)[0]
    return f"{stem}__c{box.c0}-r{box.r0}-{box.width}x{box.height}.tiff"


def local_windows(folder: Path, tile_file: str) -> list[Box]:
    """Windows of ``tile_file`` already in ``folder`` (complete files only: partial ones have a temporary name)."""
    stem = tile_file.rsplit(".", 1)[0]
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _WINDOW_NAME.match(p.name)
            if m and m.group("stem") == stem:
                c, r, w, h = (int(m.group(k)) for k in "crwh")
                found.append(Box(c, r, c + w, r + h))
    return found


def tile_tail(path: str) -> tuple[str, str, str]:
    """(year, zone, file name) of an indexed tile path ``.../{year}/{zone}/{file}``."""
    parts = str(path).replace("\\", "/").split("?")[0].rstrip("/").split("/")
    if len(parts) < 3:
        raise GeoError(f"AEF tile {path} is not under YEAR/ZONE/ folders, so it has no place in a local copy")
    return parts[-3], parts[-2], parts[-1]
