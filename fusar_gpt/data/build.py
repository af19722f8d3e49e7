"""The triplet builder: annotated SAR GeoTIFFs + AEF tiles -> a dataset directory (DESIGN.md §3).

Each image is one job whose outputs (PNG, anchors, its records) are written to temporary names and
renamed, and whose records land in ``parts/<stem>.json`` LAST: a part file means the image is done.
So a run killed at any moment resumes by skipping finished parts, shards of an array job write
disjoint parts into one directory, and ``merge`` turns parts into ``manifest.jsonl``,
``quarantine.jsonl`` and ``build.json``. Every output is a pure function of (image, annotation,
parameters), which is what makes a resumed build identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..chip import ChipSpec, ModelChip, pixels_chip, raster_chip, read_raster
from ..geo import GeoError
from ..geo.aef import grid_positions
from ..geo.anchors import Anchors
from ..geo.plain import PLAIN_SUFFIXES, read_plain, to_gray
from ..geo.raster import DEFAULT_MAX_PIXELS
from ..io_atomic import write_bytes
from .annotations import ImageAnnotations, Problem, read_annotations, validate_objects
from .record import ManifestRecord
from .tasks import PAPER_TASKS, TASKS, FrameObj, SceneInfo, build_qa

RASTER_SUFFIXES = (".tif", ".tiff")
SPLITS = ("train", "val", "test")


@dataclass
class BuildConfig:
    images: str | list[str]             # a folder (searched recursively), a .txt list of paths, or a list
    annotations: str
    aef: str
    out: str
    fmt: str = "coco"
    tasks: tuple[str, ...] = PAPER_TASKS  # add "landcover" for the AEF-decided question family
    frame: int = 504
    grid: int = 8
    classes: tuple[str, ...] = ("ship", "plane")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "site"              # "site" (the annotation's site/group field, else the scene) or "scene"
    stretch: tuple[float, float] | None = None   # fixed dB range; None = per-image 2-98 % stretch
    seed: int = 0
    workers: int = 1
    shard: tuple[int, int] | None = None  # (i, n): this process builds images i, i+n, i+2n, ...
    aef_index: str | None = None
    landcover_ref: str | None = None    # labelled AEF CSVs for caption terrain; default: see landcover.py
    sensor: str | None = None
    subtypes: dict[str, list[str]] | None = None  # fine classes per label; default: all seen in the annotations
    fresh: bool = False                 # start over instead of reusing the parts whose inputs did not change
    require_geo: bool = False           # refuse PNG/JPEG chips (no georeference, so no anchors) instead of empty priors
    bands: str | None = None            # "i,q" (SLC as I and Q bands), "N", "N,M"; default: from band descriptions
    pol: str | None = None              # VV | VH | HH | HV among described bands; default the co-pol

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        if self.frame <= 0 or self.frame % 28:
            raise ValueError(f"--frame must be a positive multiple of 28, got {self.frame}")
        if len(self.split) != 3 or min(self.split) < 0 or not abs(sum(self.split) - 1) < 1e-6:
            raise ValueError(f"split ratios must be 3 non-negative numbers summing to 1, got {self.split}")
        if self.split_by not in ("site", "scene"):
            raise ValueError(f"split_by must be 'site' or 'scene', got {self.split_by!r}")
        if self.shard is not None and not (0 <= self.shard[0] < self.shard[1]):
            raise ValueError(f"--shard must be i/n with 0 <= i < n, got {self.shard}")
        self.chip_spec()  # a bad grid or stretch fails here, before any image is read

    def chip_spec(self) -> ChipSpec:
        """How this build makes its chips; recorded in build.json and carried by every run trained on it."""
        return ChipSpec(frame=self.frame, grid=self.grid, stretch=self.stretch, bands=self.bands, pol=self.pol)


@dataclass
class Job:
    stem: str
    path: str | None
    ann: ImageAnnotations | None
    split: str
    name: str = ""                      # the image as the user knows it (relative to --images)
    problems: list[str] = field(default_factory=list)


def list_images(images) -> list[Path]:
    if isinstance(images, (list, tuple)):
        return [Path(p) for p in images]
    src = Path(images)
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES + PLAIN_SUFFIXES
                      and p.is_file())
    if src.is_file() and src.suffix.lower() == ".txt":
        base = src.parent
        return [Path(ln.strip()) if os.path.isabs(ln.strip()) else base / ln.strip()
                for ln in src.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if src.is_file():
        return [src]
    raise FileNotFoundError(f"--images {images}: no such folder or list file")


def stem_of(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rel.with_suffix("").as_posix().replace("/", "__"))


def assign_splits(groups: list[str], ratios, seed: int) -> dict[str, str]:
    """Whole groups (sites or scenes) per split, so nothing leaks. Groups are ordered by a seeded hash;
    each split with a non-zero ratio gets at least one group when there are enough groups."""
    order = sorted(set(groups), key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    n = len(order)
    counts = [int(round(r * n)) for r in ratios]
    for k in (2, 1):  # test and val first get their one group each
        if ratios[k] > 0 and counts[k] == 0 and n >= 1 + sum(c > 0 or ratios[j] > 0 for j, c in enumerate(counts)):
            counts[k] = 1
    counts[0] = n - counts[1] - counts[2]
    out, i = {}, 0
    for split, c in zip(SPLITS, counts):
        for g in order[i:i + max(c, 0)]:
            out[g] = split
        i += max(c, 0)
    return out


def plan(cfg: BuildConfig) -> tuple[list[Job], list[Problem]]:
    """Match images to annotations and give every image its split; unmatched items become problems."""
    paths = list_images(cfg.images)
    root = Path(cfg.images) if not isinstance(cfg.images, (list, tuple)) and Path(cfg.images).is_dir() else None
    sizes = {}
    if cfg.fmt == "yolo":
        import rasterio

        from ..geo.raster import open_raster

        for p in paths:
            try:
                with open_raster(p) as ds:
                    sizes[p.stem] = (ds.width, ds.height)
            except rasterio.errors.RasterioIOError:
                pass
    anns, problems = read_annotations(cfg.annotations, cfg.fmt, classes=cfg.classes, image_sizes=sizes)
    by_key: dict[str, ImageAnnotations] = {}
    for name, ann in anns.items():
        for key in {name, Path(name).name, Path(name).stem}:
            by_key.setdefault(key, ann)
    refused = {str(pr.image) for pr in problems if pr.image}
    jobs, used = [], set()
    for p in paths:
        rel = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else p.name
        ann = next((by_key[k] for k in (rel, p.name, p.stem) if k in by_key), None)
        if ann is None and refused & {rel, p.name, p.stem}:
            continue  # already quarantined by the annotation reader, with its reason
        jobs.append(Job(stem_of(p, root), str(p), ann, "", name=rel))
        if ann is None:
            jobs[-1].problems.append("no annotation for this image")
        else:
            used.add(ann.file_name)
    problems += [Problem(name, "annotated image not found among --images") for name in anns if name not in used]
    seen: dict[str, int] = {}
    for j in jobs:  # two files that sanitise to one stem must not overwrite each other
        seen[j.stem] = seen.get(j.stem, 0) + 1
        if seen[j.stem] > 1:
            j.stem = f"{j.stem}-{seen[j.stem]}"
    group = {j.stem: (str(j.ann.extra.get("site") or j.ann.extra.get("group") or j.stem)
                      if cfg.split_by == "site" and j.ann is not None else j.stem) for j in jobs}
    splits = assign_splits(list(group.values()), cfg.split, cfg.seed)
    for j in jobs:
        j.split = splits[group[j.stem]]
    if cfg.subtypes is None:  # dataset-wide fine classes: every fine question offers the same options
        seen: dict[str, set[str]] = {}
        for ann in anns.values():
            for o in ann.objects:
                if o.subtype and o.label in cfg.classes:
                    seen.setdefault(o.label, set()).add(o.subtype)
        cfg.subtypes = {k: sorted(v) for k, v in sorted(seen.items())}
    return jobs, problems


def _boxes(objects) -> np.ndarray:
    return np.array([o.box for o in objects], float).reshape(-1, 4)


def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

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


# BuildConfig fields that do not shape an image's records (where and how fast the build runs)
_NOT_SHAPING = ("out", "workers", "shard", "images", "fresh")


def part_fingerprint(cfg: BuildConfig, job: Job) -> str:
    """What an image's part was made from: its file (path, size, modification time), its annotation, its split
    and every build setting that shapes records (AEF root and index, frame, grid, stretch, bands, tasks, classes,
    land-cover reference, seed, ...). A part whose fingerprint differs is stale and is made again, so a re-run
    into the same ``--out`` after fixing ``--aef`` or changing ``--frame`` gives what a fresh build gives."""
    try:
        st = os.stat(job.path) if job.path else None
    except OSError:
        st = None
    payload = {"config": {k: v for k, v in _config_dict(cfg).items() if k not in _NOT_SHAPING},
               "file": [job.path, st.st_size, st.st_mtime_ns] if st else [job.path, None, None],
               "annotation": asdict(job.ann) if job.ann is not None else None, "split": job.split,
               "problems": job.problems}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read_part(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or torn: made again


class Worker:
    """Builds one image at a time; owns the AEF store so each process opens its tiles once."""

    def __init__(self, cfg: BuildConfig):
        from ..geo.aef import AEFStore
        from .landcover import LandcoverReference, default_reference

        self.cfg = cfg
        self.spec = cfg.chip_spec()
        self.out = Path(cfg.out)
        self.store = AEFStore(cfg.aef, index=cfg.aef_index)
        self.landcover = (LandcoverReference.from_csv(cfg.landcover_ref) if cfg.landcover_ref
                          else default_reference())

    def __call__(self, job: Job) -> dict:
        part = self.out / "parts" / f"{job.stem}.json"
        fingerprint = part_fingerprint(self.cfg, job)
        old = _read_part(part)
        if old is not None and old.get("fingerprint") == fingerprint:
            return old
        if old is not None:  # made with other inputs or settings: its files go, then it is made again
            for rec in old.get("records", []):
                for key in ("image", "aef"):
                    if rec.get(key):
                        (self.out / rec[key]).unlink(missing_ok=True)
        try:
            result = {"records": self._records(job), "problems": []}
        except (GeoError, ValueError) as err:
            reason = " ".join(str(err).split()).replace(f"{job.path}: ", "")
            result = {"records": [], "problems": [{"image": job.name or job.path, "reason": reason}]}
        result["fingerprint"] = fingerprint
        write_bytes(part, json.dumps(result, sort_keys=True).encode())
        return result

    def _records(self, job: Job) -> list[dict]:
        if job.problems:
            raise ValueError("; ".join(job.problems))
        if Path(job.path).suffix.lower() in PLAIN_SUFFIXES:
            return self._plain_records(job)
        img = read_raster(job.path, self.spec)
        degenerate = degenerate_reason(img.data, img.mask)
        if degenerate:
            raise ValueError(degenerate)
        objects, reason = validate_objects(job.ann.objects, img.width, img.height)
        if reason:
            raise ValueError(reason)
        date = img.date or (job.ann.extra.get("date") and str(job.ann.extra["date"]))
        if not date:
            raise ValueError("no acquisition date in the file's tags, its name or the annotation")
        year = int(str(date)[:4])
        if not self.store.has_tiles(img.footprint, year):
            raise ValueError(f"no AEF tile covers its footprint {tuple(round(v, 5) for v in img.footprint)}")
        chip = raster_chip(img, self.spec, store=self.store, year=year, boxes=_boxes(objects))
        return self._finish(job, chip, objects, date, {"footprint": [round(v, 7) for v in img.footprint],
                                                       "year": year, "aef_year": chip.anchors.year})

    def _plain_records(self, job: Job) -> list[dict]:
        """A PNG/JPEG chip (most public SAR detection sets): its 8-bit pixels as they are, no georeference, so an
        empty prior (every anchor invalid: the model's missing-prior policy applies) and ``meta.geo`` null."""
        if self.cfg.require_geo:
            raise ValueError("a PNG/JPEG chip has no georeference, so no anchors (--require-geo)")
        pixels = to_gray(read_plain(job.path, Path(job.path).name, DEFAULT_MAX_PIXELS))
        degenerate = degenerate_reason(pixels.astype(np.float32), np.ones(pixels.shape, bool))
        if degenerate:
            raise ValueError(degenerate)
        h, w = pixels.shape
        objects, reason = validate_objects(job.ann.objects, w, h)
        if reason:
            raise ValueError(reason)
        pos = grid_positions(self.spec.grid).astype(np.float32)
        empty = Anchors(np.full((len(pos), 64), np.nan, np.float32), pos, np.zeros(len(pos), bool))
        chip = pixels_chip(pixels, self.spec, source=str(job.path), prior=empty, boxes=_boxes(objects))
        date = job.ann.extra.get("date")
        return self._finish(job, chip, objects, str(date) if date else None,
                            {"footprint": None, "year": None, "aef_year": None, "geo": None})

    def _finish(self, job: Job, chip: ModelChip, objects, date, geo_meta: dict) -> list[dict]:
        """Questions and answers, files and records of one image (GeoTIFF or plain chip) in the model frame."""
        cfg, pixels, anchors = self.cfg, chip.image, chip.anchors
        frame_objs = [FrameObj(tuple(int(v) for v in b), o.label, o.subtype) for b, o in zip(chip.boxes, objects)]
        landcover, layout = job.ann.extra.get("landcover"), job.ann.extra.get("landcover_grid")
        if landcover is None and self.landcover is not None and anchors.n_valid:
            from .landcover import describe

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


_WORKER: Worker | None = None


def _init_worker(cfg: BuildConfig) -> None:
    global _WORKER
    _WORKER = Worker(cfg)


def _run_job(job: Job) -> dict:
    return _WORKER(job)


class WorkerDied(ValueError):
    """A build process ended without a result (killed, out of memory): a one-line error like any bad input."""


def _run_pool(cfg: BuildConfig, todo: list, bar) -> None:
    """Build ``todo`` in ``cfg.workers`` spawned processes (no GDAL or torch state crosses into them). Why not
    ``multiprocessing.Pool``: it respawns a worker whose initializer fails, forever; an executor instead marks
    itself broken. The first failure, a worker's exception or a dead worker, cancels what has not started and ends
    the build with that error; finished parts stay on disk for the next run."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    def died(err):
        return WorkerDied(f"a build worker died ({' '.join(str(err).split()) or type(err).__name__}); finished "
                          f"images are kept, re-run to continue")

    pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(cfg,))
    try:
        try:
            pending = {pool.submit(_run_job, j) for j in todo}
        except (BrokenProcessPool, OSError) as err:  # a worker killed while the pool starts: its pipes close
            raise died(err) from None
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                try:
                    f.result()  # re-raises the worker's own exception (a one-line error) here
                except BrokenProcessPool as err:
                    raise died(err) from None
                bar.update()
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except OSError:  # the pipes of a dead worker; the error that matters is already on its way
            pass


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Build (this shard of) the dataset; without a shard, merge at the end. Returns the build summary."""
    out = Path(cfg.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    jobs, problems = plan(cfg)
    mine = jobs if cfg.shard is None else jobs[cfg.shard[0]::cfg.shard[1]]
    if cfg.fresh:  # start over: nothing of an earlier build is reused
        for sub in ("parts", "images", "anchors"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "parts").mkdir(parents=True, exist_ok=True)
    todo = [j for j in mine if (_read_part(out / "parts" / f"{j.stem}.json") or {}).get("fingerprint")
            != part_fingerprint(cfg, j)]
    from tqdm import tqdm

    worker = Worker(cfg) if todo else None  # a bad AEF root or land-cover table fails here, once, for any --workers
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="building", unit="image", disable=not progress)
    if worker is not None and (cfg.workers <= 1 or len(todo) <= 1):
        for j in todo:
            worker(j)
            bar.update()
    elif worker is not None:
        _run_pool(cfg, todo, bar)
    bar.close()
    plan_file = {"config": _config_dict(cfg), "images": [asdict(j) | {"ann": None} for j in jobs],
                 "annotation_problems": [asdict(p) for p in problems]}
    write_bytes(out / "plan.json", json.dumps(plan_file, sort_keys=True).encode())
    if cfg.shard is not None:
        return {"shard": f"{cfg.shard[0]}/{cfg.shard[1]}", "images": len(mine), "built": len(todo)}
    return merge(out)


def merge(out) -> dict:
    """Join every image's part into manifest.jsonl, quarantine.jsonl and build.json (all atomic)."""
    out = Path(out)
    plan_path = out / "plan.json"
    if not plan_path.exists():
        raise FileNotFoundError(f"{out} has no plan.json: run the build (or every shard) first")
    plan_file = json.loads(plan_path.read_text())
    stems = [j["stem"] for j in plan_file["images"]]
    missing = [s for s in stems if not (out / "parts" / f"{s}.json").exists()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) not built yet (e.g. {missing[0]}); run the missing shards")
    lines, quarantine = [], [{"image": p["image"], "reason": p["reason"]} for p in plan_file["annotation_problems"]]
    built = 0
    for s in stems:
        part = json.loads((out / "parts" / f"{s}.json").read_text())
        lines += [json.dumps(r, sort_keys=True) for r in part["records"]]
        quarantine += part["problems"]
        built += not part["problems"]
    write_bytes(out / "manifest.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())
    write_bytes(out / "quarantine.jsonl", "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine).encode())
    counts: dict[str, dict[str, int]] = {}
    priors = {"full": 0, "partial": 0, "none": 0}  # records by how much of their anchor grid holds AEF vectors
    grid = plan_file["config"].get("grid", 8)
    nodes = grid * grid if isinstance(grid, int) else int(np.prod(grid))
    for ln in lines:
        r = json.loads(ln)
        counts.setdefault(r["task"], {}).setdefault(r["split"], 0)
        counts[r["task"]][r["split"]] += 1
        valid = int(r["meta"].get("valid_anchors", 0))
        priors["none" if valid == 0 else "full" if valid >= nodes else "partial"] += 1
    from .. import __version__

    chip = ChipSpec.from_dict(plan_file["config"], str(plan_path)).to_dict()
    summary = {"records": len(lines), "images": built, "quarantined": len(quarantine), "counts": counts,
               "priors": priors, "chip": chip,
               "config": plan_file["config"], "versions": _versions(__version__)}
    write_bytes(out / "build.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def _config_dict(cfg: BuildConfig) -> dict:
    d = asdict(cfg)
    d["images"] = cfg.images if isinstance(cfg.images, str) else [str(p) for p in cfg.images]
    return d


def _versions(ours: str) -> dict:
    import numpy
    import rasterio

    return {"fusar-gpt": ours, "numpy": numpy.__version__, "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__}
