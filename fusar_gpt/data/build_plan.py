"""The build's plan: its settings (:class:`BuildConfig`), the images it reads, which annotation goes with which
image, and the split of every image.

Why apart from the work: the plan is decided once, in the parent process, before any pixel is read, so every
shard of an array job and every pool worker gets the same jobs, the same stems and the same splits, and the
plan is written to ``plan.json`` for ``merge``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rasterio.errors import RasterioIOError

from ..chip import CHIP_MAX_PIXELS, ChipSpec
from ..geo.bands import check_bands, check_pol
from ..geo.plain import PLAIN_SUFFIXES
from ..geo.raster import open_raster
from ..vocab import RASTER_SUFFIXES
from .annotations import ImageAnnotations, Problem, read_annotations
from .sidecar import read_geo_table
from .tasks import PAPER_TASKS, TASKS

SPLITS = ("train", "val", "test")


@dataclass
class BuildConfig:
    images: str | list[str]             # a folder (searched recursively), a .txt list of paths, or a list
    annotations: str
    aef: str | None                     # None: only chips without place (empty priors) can build
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
    scale: str | None = None            # db | amplitude | intensity: what the pixels hold (default: tags, then data)
    geo: str | None = None              # sidecar table (CSV/JSON) of place and date for chips that carry none
    max_pixels: int = CHIP_MAX_PIXELS   # an image above it is a scene (cut it into chips): quarantined, never read

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
        if not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ValueError(f"--max-pixels must be a positive integer, got {self.max_pixels!r}")
        self.bands, self.pol = check_bands(self.bands), check_pol(self.pol)  # one line naming the flag, at once
        self.chip_spec()  # a bad grid or stretch fails here, before any image is read

    def chip_spec(self) -> ChipSpec:
        """How this build makes its chips; recorded in build.json and carried by every run trained on it."""
        return ChipSpec(frame=self.frame, grid=self.grid, stretch=self.stretch, bands=self.bands, pol=self.pol,
                        scale=self.scale)


@dataclass
class Job:
    stem: str
    path: str | None
    ann: ImageAnnotations | None
    split: str
    name: str = ""                      # the image as the user knows it (relative to --images)
    problems: list[str] = field(default_factory=list)
    geo: dict | None = None             # its row of the --geo sidecar table (data/sidecar.py), if any


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
        for p in paths:
            try:
                with open_raster(p) as ds:
                    sizes[p.stem] = (ds.width, ds.height)
            except RasterioIOError:
                pass
    anns, problems = read_annotations(cfg.annotations, cfg.fmt, classes=cfg.classes, image_sizes=sizes)
    by_key: dict[str, ImageAnnotations] = {}
    for name, ann in anns.items():
        for key in {name, Path(name).name, Path(name).stem}:
            by_key.setdefault(key, ann)
    refused = {str(pr.image) for pr in problems if pr.image}
    table = read_geo_table(cfg.geo) if cfg.geo else {}
    jobs, used = [], set()
    for p in paths:
        rel = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else p.name
        ann = next((by_key[k] for k in (rel, p.name, p.stem) if k in by_key), None)
        if ann is None and refused & {rel, p.name, p.stem}:
            continue  # already quarantined by the annotation reader, with its reason
        row = next((table[k] for k in (rel, p.name, p.stem) if k in table), None)
        jobs.append(Job(stem_of(p, root), str(p), ann, "", name=rel, geo=row.model_dump() if row else None))
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


def config_dict(cfg: BuildConfig) -> dict:
    """The settings as JSON-ready values (``images`` as given, or as strings), as ``plan.json`` records them."""
    d = asdict(cfg)
    d["images"] = cfg.images if isinstance(cfg.images, str) else [str(p) for p in cfg.images]
    return d
