"""The triplet builder: annotated SAR GeoTIFFs + AEF tiles -> a dataset directory (DESIGN.md §3).

Each image is one job whose outputs (PNG, anchors, its records) are written to temporary names and
renamed, and whose records land in ``parts/<stem>.json`` LAST: a part file means the image is done.
So a run killed at any moment resumes by skipping finished parts, shards of an array job write
disjoint parts into one directory, and ``merge`` turns parts into ``manifest.jsonl``,
``quarantine.jsonl`` and ``build.json``. Every output is a pure function of (image, annotation,
parameters), which is what makes a resumed build identical to an uninterrupted one.

This module runs the steps, each its own module: the plan (``build_plan``: settings, images matched to
annotations, splits), one image's work (``build_worker``), the process pool (``build_pool``) and the merge
(``build_merge``). Their public names are imported from here as before.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..io_atomic import write_bytes
from .build_merge import merge
from .build_parts import input_stamps, part_fingerprint, read_part, up_to_date  # noqa: F401 (re-exported)
from .build_plan import (  # noqa: F401 (re-exported)
    RASTER_SUFFIXES,
    SPLITS,
    BuildConfig,
    Job,
    assign_splits,
    config_dict,
    list_images,
    plan,
    stem_of,
)
from .build_pool import WorkerDied, run_pool  # noqa: F401 (re-exported)
from .build_worker import MIN_SIDE, BuildFailed, Worker, degenerate_reason  # noqa: F401 (re-exported)

OUTPUT_DIRS = {"parts": ".json", "images": ".png", "anchors": ".npz"}  # each image's files: <dir>/<stem><suffix>


def prune(out: Path, stems: set[str]) -> list[str]:
    """Remove the files of images no longer in the plan (dropped from ``--images`` or the annotations), so a
    re-run into the same ``--out`` leaves what a fresh build leaves. Only finished files of foreign stems go: the
    hidden temporary files of a concurrent shard are never touched (every shard plans the same stems)."""
    gone = []
    for sub, suffix in OUTPUT_DIRS.items():
        folder = out / sub
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if f.name.startswith(".") or not f.name.endswith(suffix) or not f.is_file():
                continue
            if f.name[:-len(suffix)] not in stems:
                f.unlink(missing_ok=True)
                gone.append(f"{sub}/{f.name}")
    return gone


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
    prune(out, {j.stem for j in jobs})
    stamps = input_stamps(cfg)
    todo = [j for j in mine
            if not up_to_date(read_part(out / "parts" / f"{j.stem}.json"), part_fingerprint(cfg, j, stamps))]
    worker = Worker(cfg) if todo else None  # a bad AEF root or land-cover table fails here, once, for any --workers
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="building", unit="image", disable=not progress)
    try:
        if worker is not None and (cfg.workers <= 1 or len(todo) <= 1):
            for j in todo:
                worker(j)
                bar.update()
        elif worker is not None:
            run_pool(cfg, todo, bar)
    finally:  # also on an error or Ctrl-C: the bar's line ends, so the one-line message gets a line of its own
        bar.close()
    plan_file = {"config": config_dict(cfg), "images": [asdict(j) | {"ann": None} for j in jobs],
                 "annotation_problems": [asdict(p) for p in problems]}
    write_bytes(out / "plan.json", json.dumps(plan_file, sort_keys=True).encode())
    if cfg.shard is not None:
        return {"shard": f"{cfg.shard[0]}/{cfg.shard[1]}", "images": len(mine), "built": len(todo)}
    return merge(out)
