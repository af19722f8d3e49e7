"""One image of the build: read it, check it, make its chip, anchors, questions and records, write its part.

Why apart from the plan and the pool: this is all the work a build process does, a pure function of (image,
annotation, settings) named by :func:`part_fingerprint`; it runs the same in the parent (``--workers 1``) and
in a spawned pool worker, and a part whose fingerprint still matches is reused instead of made again.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ..chip import ModelChip, pixels_chip, raster_chip, read_raster
from ..geo import GeoError
from ..geo.aef import AEFStore, grid_positions
from ..geo.anchors import Anchors
from ..geo.plain import PLAIN_SUFFIXES, read_plain, to_gray
from ..geo.raster import open_raster
from ..io_atomic import write_bytes
from ..text import one_line
from .annotations import validate_objects
from .build_parts import input_stamps, part_fingerprint, read_part, up_to_date
from .build_plan import BuildConfig, Job
from .landcover import LandcoverReference, default_reference, describe
from .record import ManifestRecord
from .sidecar import GeoRow
from .tasks import FrameObj, SceneInfo, build_qa


def _boxes(objects) -> np.ndarray:
    return np.array([o.box for o in objects], float).reshape(-1, 4)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


MIN_SIDE = 16  # pixels: below this a chip holds no target a 14-px patch (one visual token) can show


def degenerate_reason(data: np.ndarray, mask: np.ndarray) -> str | None:
    """Why an image cannot teach anything (too small, no valid pixel, one constant value), or None. Such files
    (a 1 x 1 test tile, an all-zero export) otherwise become records whose answers no pixel supports."""
    h, w = data.shape[-2:]
    if min(h, w) < MIN_SIDE:
        return f"degenerate image: {w} x {h} px (at least {MIN_SIDE} px a side)"
    valid = data[mask] if mask is not None else data[np.isfinite(data)]
    if valid.size == 0:
        return "degenerate image: no valid pixel (all nodata or NaN)"
    if float(valid.min()) == float(valid.max()):
        return f"degenerate image: every valid pixel is {float(valid.min()):g} (a constant image)"
    return None


NO_PLACE = "has no place, so no anchors (--require-geo); place it with a row of the --geo table"


class BuildFailed(ValueError):
    """The build cannot go on (not a problem of one input): one line naming the image and the cause, exit 2."""


def _header(path) -> tuple[int, int, bool]:
    """(width, height, georeferenced?) from a TIFF's header, judged as ``read_sar`` judges it (CRS and a transform,
    or GCPs with their CRS). An unreadable file is a :class:`GeoError` (quarantined), never an ``OSError``."""
    if not Path(path).is_file():
        raise GeoError(f"{path}: {'is not a file' if Path(path).exists() else 'no such file'}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with open_raster(path) as ds:
                gcps, gcp_crs = ds.gcps
                placed = (ds.crs is not None and not ds.transform.is_identity) or bool(gcps and gcp_crs is not None)
                return ds.width, ds.height, placed
        except RasterioError as err:
            raise GeoError(f"{path}: not a readable raster ({one_line(err)})") from None


def _cause(err: BaseException) -> str:
    """An error in one line; an ``OSError`` as its reason and the file it is about (for a rename, the destination,
    not the random temporary name), so the same failure reads the same in every run."""
    if isinstance(err, OSError) and err.strerror:
        where = err.filename2 if err.filename2 is not None else err.filename
        return one_line(f"{err.strerror}: {where}" if where is not None else err.strerror)
    return one_line(err) or type(err).__name__


def _empty_prior(grid: int) -> Anchors:
    """Every anchor invalid: the model's missing-prior policy applies (a chip with no place)."""
    pos = grid_positions(grid).astype(np.float32)
    return Anchors(np.full((len(pos), 64), np.nan, np.float32), pos, np.zeros(len(pos), bool))


class Worker:
    """Builds one image at a time; owns the AEF store so each process opens its tiles once."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.spec = cfg.chip_spec()
        self.out = Path(cfg.out)
        self.store = AEFStore(cfg.aef, index=cfg.aef_index) if cfg.aef else None
        self.landcover = (LandcoverReference.from_csv(cfg.landcover_ref) if cfg.landcover_ref
                          else default_reference())
        self.stamps = input_stamps(cfg)

    def __call__(self, job: Job) -> dict:
        """Build one image. A problem of its inputs quarantines it (its part says why); anything else (a disk that
        is full, a file where an output folder should be) stops the build as :class:`BuildFailed`, one line
        naming the image and the cause, because every later image would fail the same way."""
        try:
            return self._build(job)
        except BuildFailed:
            raise
        except Exception as err:  # noqa: BLE001 (an environment error: reported in one line, not a traceback)
            raise BuildFailed(f"{job.name or job.path}: {type(err).__name__}: {_cause(err)}; the build stopped "
                              f"there (finished images are kept: fix the cause and re-run)") from None

    def _build(self, job: Job) -> dict:
        part = self.out / "parts" / f"{job.stem}.json"
        fingerprint = part_fingerprint(self.cfg, job, self.stamps)
        old = read_part(part)
        if up_to_date(old, fingerprint):
            return old
        if old is not None:  # made with other inputs or settings: its files go, then it is made again
            for rec in old.get("records", []):
                for key in ("image", "aef"):
                    if rec.get(key):
                        (self.out / rec[key]).unlink(missing_ok=True)
        try:
            result = {"records": self._records(job), "problems": []}
        except (GeoError, ValueError) as err:
            reason = one_line(err).replace(f"{job.path}: ", "")
            result = {"records": [], "problems": [{"image": job.name or job.path, "reason": reason}]}
        result["fingerprint"] = fingerprint
        write_bytes(part, json.dumps(result, sort_keys=True).encode())
        return result

    def _records(self, job: Job) -> list[dict]:
        if job.problems:
            raise ValueError("; ".join(job.problems))
        if Path(job.path).suffix.lower() in PLAIN_SUFFIXES:
            return self._plain_records(job)
        row = GeoRow(**job.geo) if job.geo else None
        width, height, placed = _header(job.path)
        self._check_size(width, height)
        if not placed and row is None:
            return self._unplaced_raster_records(job)
        # a centre + pixel size needs the raster's size; a file's own georeference always wins over the row
        fallback = row.footprint(width, height) if row is not None else None
        img, objects = self._read_checked(job, fallback)
        date = img.date or (row.when if row is not None else None) or (
            job.ann.extra.get("date") and str(job.ann.extra["date"]))
        if not date:
            raise ValueError("no acquisition date in the file's tags, its name, the --geo table or the annotation")
        year = int(str(date)[:4])
        if self.store is None:
            raise ValueError("a GeoTIFF's anchors need an AEF root: give --aef")
        if not self.store.has_tiles(img.footprint, year):
            raise ValueError(f"no AEF tile covers its footprint {tuple(round(v, 5) for v in img.footprint)}")
        chip = raster_chip(img, self.spec, store=self.store, year=year, boxes=_boxes(objects))
        return self._finish(job, chip, objects, date, {"footprint": [round(v, 7) for v in img.footprint],
                                                       "year": year, "aef_year": chip.anchors.year,
                                                       "band": img.band, "scale": img.scale})

    def _read_checked(self, job: Job, footprint) -> tuple:
        """The raster read as the spec says (``footprint`` where the file has no place of its own), refused when
        it is degenerate or its boxes do not fit it."""
        img = read_raster(job.path, self.spec, footprint=footprint)
        degenerate = degenerate_reason(img.data, img.mask)
        if degenerate:
            raise ValueError(degenerate)
        objects, reason = validate_objects(job.ann.objects, img.width, img.height)
        if reason:
            raise ValueError(reason)
        return img, objects

    def _check_size(self, width: int, height: int) -> None:
        """An image above the chip cap is a scene, not a chip: refused from its header, before any pixel is read
        (a 13 KB 20000 x 20000 TIFF otherwise cost 4 GB to become one all-black chip)."""
        if width * height > self.cfg.max_pixels:
            raise ValueError(f"{width}x{height} pixels is above the chip cap of {self.cfg.max_pixels} "
                             f"(--max-pixels): a scene, not a chip; cut it into chips first")

    def _unplaced_raster_records(self, job: Job) -> list[dict]:
        """A TIFF with no georeference and no ``--geo`` row: what a PNG/JPEG chip without a row gets (an empty
        prior, ``meta.geo`` null), but its pixels read and stretched as any SAR raster's (band choice, scale)."""
        if self.cfg.require_geo:
            raise ValueError(f"a TIFF without georeference (no CRS and transform, no GCPs) {NO_PLACE}")
        # The one reader wants a place for an unplaced file; this stand-in box is never recorded or sampled.
        img, objects = self._read_checked(job, (0.0, 0.0, 1.0, 1.0))
        chip = raster_chip(img, self.spec, anchors=_empty_prior(self.spec.grid), boxes=_boxes(objects))
        date = img.date or job.ann.extra.get("date")
        return self._finish(job, chip, objects, str(date) if date else None,
                            {"footprint": None, "year": None, "aef_year": None, "geo": None, "band": img.band,
                             "scale": img.scale})

    def _plain_records(self, job: Job) -> list[dict]:
        """A PNG/JPEG chip (most public SAR detection sets): its 8-bit pixels as they are, no georeference, so an
        empty prior (every anchor invalid: the model's missing-prior policy applies) and ``meta.geo`` null."""
        pixels = to_gray(read_plain(job.path, Path(job.path).name, self.cfg.max_pixels))
        degenerate = degenerate_reason(pixels.astype(np.float32), np.ones(pixels.shape, bool))
        if degenerate:
            raise ValueError(degenerate)
        h, w = pixels.shape
        objects, reason = validate_objects(job.ann.objects, w, h)
        if reason:
            raise ValueError(reason)
        if job.geo is not None:  # placed by the --geo table: real anchors over its box, in its year
            row = GeoRow(**job.geo)
            box, date = row.footprint(w, h), row.when or job.ann.extra.get("date")
            if not date:
                raise ValueError("no date for this chip in the --geo table or the annotation")
            if self.store is None:
                raise ValueError("the --geo table places this chip, but there is no AEF root: give --aef")
            year = int(str(date)[:4])
            if not self.store.has_tiles(box, year):
                raise ValueError(f"no AEF tile covers its footprint {tuple(round(v, 5) for v in box)}")
            prior = self.store.sample(box, year, grid=self.spec.grid, method=self.spec.sampling)
            chip = pixels_chip(pixels, self.spec, source=str(job.path), prior=prior, footprint=box, year=year,
                               boxes=_boxes(objects))
            return self._finish(job, chip, objects, str(date), {"footprint": [round(v, 7) for v in box],
                                                                "year": year, "aef_year": prior.year})
        if self.cfg.require_geo:
            raise ValueError(f"a PNG/JPEG chip {NO_PLACE}")
        chip = pixels_chip(pixels, self.spec, source=str(job.path), prior=_empty_prior(self.spec.grid),
                           boxes=_boxes(objects))
        date = job.ann.extra.get("date")
        return self._finish(job, chip, objects, str(date) if date else None,
                            {"footprint": None, "year": None, "aef_year": None, "geo": None})

    def _finish(self, job: Job, chip: ModelChip, objects, date, geo_meta: dict) -> list[dict]:
        """Questions and answers, files and records of one image (GeoTIFF or plain chip) in the model frame."""
        cfg, pixels, anchors = self.cfg, chip.image, chip.anchors
        frame_objs = [FrameObj(tuple(int(v) for v in b), o.label, o.subtype) for b, o in zip(chip.boxes, objects)]
        landcover, layout = job.ann.extra.get("landcover"), job.ann.extra.get("landcover_grid")
        if landcover is None and self.landcover is not None and anchors.n_valid:
            landcover, layout = describe(anchors, self.landcover)
        scene = SceneInfo(landcover=landcover, layout=layout, sensor=cfg.sensor, date=str(date) if date else None)
        qas = build_qa(frame_objs, cfg.frame, cfg.tasks, seed=f"{cfg.seed}:{job.stem}", scene=scene,
                       classes=cfg.classes, subtypes=cfg.subtypes or None)
        image_rel, aef_rel = f"images/{job.stem}.png", f"anchors/{job.stem}.npz"
        write_bytes(self.out / image_rel, _png_bytes(pixels))
        anchors.save(self.out / aef_rel)
        meta = {**geo_meta, "date": str(date) if date else None, "sensor": cfg.sensor, "source": str(job.path),
                "valid_anchors": anchors.n_valid,
                "objects": [{"box": [round(v, 2) for v in o.box], "label": o.label, "subtype": o.subtype}
                            for o in objects],
                "frame_objects": [{"box": list(f.box), "label": f.label, "subtype": f.subtype} for f in frame_objs]}
        counts: dict[str, int] = {}
        records = []
        for qa in qas:
            k = counts[qa.task] = counts.get(qa.task, 0) + 1
            records.append(ManifestRecord(id=f"{job.stem}-{qa.task}-{k}", image=image_rel, aef=aef_rel,
                                          coordinate_size=cfg.frame, question=qa.question, answer=qa.answer,
                                          task=qa.task, split=job.split, meta={**meta, **qa.meta}).model_dump())
        return records
