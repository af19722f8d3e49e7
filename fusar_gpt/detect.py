"""Whole-scene detection: tile a SAR scene far larger than the model frame, detect per tile, merge, map to lon/lat.

The model answers about one model frame at a time, so a scene is cut into overlapping tiles
(``geo.frame.chip_windows``), each read on its own window (a scene never has to fit in memory), given its
own stretch and its own AEF anchors (sampled over the tile's own geotransform, as training chips were), and
asked the canonical detect question once per class. Boxes come back in the model frame; ``FrameMap`` and
``Chip`` take them to scene pixels and the scene's geotransform to lon/lat.

Overlaps see an object twice, and a tile cut sees only part of it. Merging is greedy suppression per class:
boxes that do not touch an inner tile edge (whole objects) come first, larger before smaller; a later box
is dropped when its IoU with a kept box reaches ``iou``, or when it touches an inner tile edge and lies
mostly (``contain``) inside a kept box: the cut-off piece of an object another tile saw whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boxes import overlaps
from .chip import raster_chip, read_raster
from .data.tasks import DETECT_QUESTIONS, parse_boxes, plural
from .geo import GeoError
from .geo.frame import chip_windows
from .geo.plain import InputTooLarge
from .geo.raster import acquisition_date, open_raster
from .geo.transforms import pixel_to_map, to_lonlat
from .infer import answer
from .io_atomic import write_json
from .text import one_line

DETECT_QUESTION = DETECT_QUESTIONS[0]
DEFAULT_MAX_NEW_TOKENS = 512


@dataclass
class Detection:
    box: np.ndarray          # scene pixels, float xyxy
    label: str
    tile: int                # index of the tile that saw it
    cut: bool = False        # touches an inner tile edge: the object may go on in the neighbouring tile


def merge(dets: list[Detection], iou: float = 0.5, contain: float = 0.5) -> list[Detection]:
    """Greedy per-class suppression across tiles (see the module docstring); the order of the result is
    whole objects first, then by area, per label in first-seen order."""
    if not 0 < iou <= 1 or not 0 < contain <= 1:
        raise ValueError(f"iou and contain must be in (0, 1], got {iou} and {contain}")
    out: list[Detection] = []
    for label in dict.fromkeys(d.label for d in dets):
        mine = [d for d in dets if d.label == label]
        mine.sort(key=lambda d: (d.cut, -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))))
        kept: list[Detection] = []
        for d in mine:
            if kept:
                overlap, cover = overlaps(d.box, np.stack([k.box for k in kept]))
                if (overlap >= iou).any() or (d.cut and (cover >= contain).any()):
                    continue
            kept.append(d)
        out += kept
    return out


def _scene_header(path: Path):
    """Size, CRS, geotransform and date of a scene without reading its pixels."""
    from rasterio.errors import RasterioError
    from rasterio.transform import from_gcps


    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such scene file")
    try:
        with open_raster(path) as ds:
            gcps, gcp_crs = ds.gcps
            if ds.crs is not None and not ds.transform.is_identity:
                crs, transform = ds.crs, ds.transform
            elif gcps and gcp_crs is not None:
                crs, transform = gcp_crs, from_gcps(gcps)
            else:
                raise GeoError(f"{path}: has no georeference (no CRS and transform, no GCPs); detections could "
                               f"not be placed on the map")
            return ds.width, ds.height, crs, transform, acquisition_date({**ds.tags(), **ds.tags(1)}, path)
    except RasterioError as err:
        raise GeoError(f"{path}: not a readable raster ({one_line(err)})") from None


def pixels_to_lonlat(crs, transform, cols, rows) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = to_lonlat(crs, *pixel_to_map(transform, cols, rows))
    return np.asarray(lon), np.asarray(lat)


def polygon(crs, transform, box) -> list[list[float]]:
    """The box's outline as a closed lon/lat ring, counter-clockwise (RFC 7946's right-hand rule)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    lon, lat = pixels_to_lonlat(crs, transform, [x1, x2, x2, x1], [y1, y1, y2, y2])
    ring = [[float(a), float(b)] for a, b in zip(lon, lat)]
    signed = sum(ring[i][0] * ring[(i + 1) % 4][1] - ring[(i + 1) % 4][0] * ring[i][1] for i in range(4))
    if signed < 0:
        ring.reverse()
    return ring + [ring[0]]


MAX_TILES = 20_000  # a 10 m, 100 km Sentinel-1 scene at the 224 frame and 64 px overlap is about 3,900 tiles


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    """How many tiles ``chip_windows`` makes, from the header alone."""
    stride = tile - overlap
    along = lambda n: 1 if n <= tile else -(-(n - tile) // stride) + 1
    return along(width) * along(height)


def check_inputs(scene, out, coco, classes, tile, overlap, frame, max_tiles: int = MAX_TILES):
    """Everything about a detect-scene call that can be refused before a model is loaded or a pixel read:
    returns the class list, the tile size and the scene header. A scene that would take more than
    ``max_tiles`` tiles is refused here (a 13 KB file can declare 100000 x 100000 pixels: 390k tiles)."""
    classes = [c.strip() for c in ([classes] if isinstance(classes, str) else classes)]
    if not classes or not all(classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct non-empty names, got {classes}")
    for target in [Path(out)] + ([Path(coco)] if coco else []):
        if not target.parent.is_dir():
            raise FileNotFoundError(f"{target}: its folder {target.parent} does not exist")
    tile = int(tile or frame)
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tile must be positive and overlap in [0, tile); got tile {tile}, overlap {overlap}")
    header = _scene_header(Path(scene))
    n = tile_count(header[0], header[1], tile, overlap)
    if n > max_tiles:

        raise InputTooLarge(f"{scene}: {header[0]}x{header[1]} pixels is {n} tiles of {tile} px, above the cap of "
                            f"{max_tiles} (--max-tiles; or cut the scene, or use larger --tile)")
    return classes, tile, header


def detect_scene(model, spec, scene, out, *, classes=("ship", "plane"), store=None, no_aef: bool = False,
                 year: int | None = None, tile: int | None = None, overlap: int = 64, batch_size: int = 8,
                 iou: float = 0.5, coco=None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 progress: bool = False, max_tiles: int = MAX_TILES) -> dict:
    """Detect ``classes`` over a whole GeoTIFF and write a GeoJSON FeatureCollection (EPSG:4326) to ``out``
    (and a COCO file in scene pixels to ``coco``). ``tile`` (scene pixels, default the model frame) tiles
    overlap by ``overlap`` pixels; ``batch_size`` prompts (tile x class) share one ``generate`` call.
    ``model`` is anything with FusarGPT's ``answer(images, questions, priors, max_new_tokens=...)``."""
    from tqdm import tqdm


    scene, out = Path(scene), Path(out)
    classes, tile, (width, height, crs, transform, date) = check_inputs(scene, out, coco, classes, tile, overlap,
                                                                        spec.frame, max_tiles)
    year = year if year is not None else (date.year if date else None)
    if not no_aef:
        if store is None:
            raise ValueError("no AEF prior: give an AEF root, or detect without AEF (no-aef)")
        if year is None:
            raise ValueError(f"{scene}: no acquisition date in the file's tags or name; give the year")
    chips = chip_windows(width, height, tile, overlap, transform)
    jobs = [(k, c) for k in range(len(chips)) for c in classes]

    cache: dict[int, tuple] = {}
    dets: list[Detection] = []
    skipped, unparsed = set(), 0
    bar = tqdm(total=len(jobs), desc="detecting", unit="prompt", disable=not progress)
    for s in range(0, len(jobs), batch_size):
        batch = []
        cache = {k: v for k, v in cache.items() if k in {j for j, _ in jobs[s:s + batch_size]}}
        for k, label in jobs[s:s + batch_size]:
            if k in skipped:
                continue
            if k not in cache:
                chip = chips[k]
                try:
                    img = read_raster(scene, spec, window=(chip.col_off, chip.row_off, chip.width, chip.height))
                except GeoError as err:
                    if "no valid pixels" not in str(err):
                        raise
                    skipped.add(k)  # all nodata: nothing to see, nothing to ask
                    continue
                ready = raster_chip(img, spec, store=store, year=year, no_aef=no_aef, source=f"{scene.name}#{k}")
                cache[k] = (ready, ready.frame_map)
            batch.append((k, label))
        bar.update(len(jobs[s:s + batch_size]))
        if not batch:
            continue
        texts = answer(model, [cache[k][0] for k, _ in batch],
                       [DETECT_QUESTION.format(plural=plural(label), singular=label) for _, label in batch],
                       max_new_tokens=max_new_tokens, batch_size=len(batch), tasks=["detect"] * len(batch))
        for (k, label), text in zip(batch, texts):
            boxes = parse_boxes(text)
            if boxes is None:
                unparsed += 1
                continue
            chip, fmap = chips[k], cache[k][1]
            for b in boxes:
                (fx1, fx2), (fy1, fy2) = sorted(b["bbox_2d"][0::2]), sorted(b["bbox_2d"][1::2])
                x1, y1, x2, y2 = chip.to_scene(fmap.to_source([fx1, fy1, fx2, fy2]))[0]
                if x2 - x1 <= 0 or y2 - y1 <= 0:
                    continue
                cut = ((chip.col_off > 0 and x1 <= chip.col_off + 1)
                       or (chip.col_off + chip.width < width and x2 >= chip.col_off + chip.width - 1)
                       or (chip.row_off > 0 and y1 <= chip.row_off + 1)
                       or (chip.row_off + chip.height < height and y2 >= chip.row_off + chip.height - 1))
                dets.append(Detection(np.array([x1, y1, x2, y2]), label, k, bool(cut)))
    bar.close()
    merged = merge(dets, iou=iou)

    features = []
    for d in merged:
        c = chips[d.tile]
        features.append({"type": "Feature",
                         "geometry": {"type": "Polygon", "coordinates": [polygon(crs, transform, d.box)]},
                         "properties": {"label": d.label, "tile": d.tile,
                                        "tile_window": [c.col_off, c.row_off, c.width, c.height],
                                        "bbox_px": [round(float(v), 2) for v in d.box]}})
    geojson = {"type": "FeatureCollection", "scene": str(scene), "year": year, "classes": classes,
               "features": features}
    if coco:
        cats = {c: i + 1 for i, c in enumerate(classes)}
        anns = [{"id": i + 1, "image_id": 1, "category_id": cats[d.label],
                 "bbox": [round(float(d.box[0]), 2), round(float(d.box[1]), 2), round(float(d.box[2] - d.box[0]), 2),
                          round(float(d.box[3] - d.box[1]), 2)],
                 "area": round(float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])), 2), "iscrowd": 0,
                 "tile": d.tile} for i, d in enumerate(merged)]
        write_json(Path(coco), {"images": [{"id": 1, "file_name": scene.name, "width": width, "height": height}],
                                 "categories": [{"id": i, "name": c} for c, i in cats.items()],
                                 "annotations": anns})
    write_json(out, geojson)
    return {"scene": str(scene), "width": width, "height": height, "tiles": len(chips), "skipped_tiles": len(skipped),
            "prompts": len(jobs) - len(skipped) * len(classes), "unparsed": unparsed, "raw_detections": len(dets),
            "detections": len(merged), "out": str(out), "coco": str(coco) if coco else None}
