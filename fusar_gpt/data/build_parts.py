"""Which parts of a build can be reused: each image's fingerprint and its part file.

Why apart from the worker that makes parts: the parent process decides what to (re)make before any worker
starts, from the images, the settings and the shared inputs (AEF index, land-cover reference) alone; the worker
stamps what it made with the same fingerprint. A re-run into the same ``--out`` then rebuilds exactly the parts
whose inputs changed, and retries quarantines whose cause may have gone away (``RETRY_REASONS``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from ..geo.aef_index import INDEX_NAMES
from . import landcover
from .build_plan import BuildConfig, Job, config_dict

# BuildConfig fields that do not shape an image's records (where and how fast the build runs)
_NOT_SHAPING = ("out", "workers", "shard", "images", "fresh")


def _stamp(path) -> list | None:
    """(name, size, modification time) of a file, or of every CSV of a folder: what a path-only fingerprint misses
    when a file is replaced in place. None for a path that is not local (a remote index is fetched by URL)."""
    if not path:
        return None
    p = Path(path)
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p] if p.is_file() else []
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out or None


def input_stamps(cfg: BuildConfig) -> dict:
    """The contents (by size and time) of the inputs every image shares: the AEF index (``--aef-index``, else the
    root's own ``aef_index.*``) and the land-cover reference (``--landcover-ref``, else the default one)."""
    index = cfg.aef_index or next((str(Path(cfg.aef) / n) for n in INDEX_NAMES
                                   if cfg.aef and (Path(cfg.aef) / n).is_file()), None)
    return {"aef_index": _stamp(index), "landcover_ref": _stamp(_landcover_source(cfg))}


def _landcover_source(cfg: BuildConfig):
    """The reference the worker loads: ``--landcover-ref``, else the first that exists of the candidates
    :func:`landcover.default_reference` tries (``$FUSAR_GPT_LANDCOVER_REF``, the checkout's samples)."""
    if cfg.landcover_ref:
        return cfg.landcover_ref
    env = os.environ.get("FUSAR_GPT_LANDCOVER_REF")
    candidates = ([Path(env)] if env else []) + [
        Path(landcover.__file__).resolve().parents[3] / "shared" / "data" / "aef_samples"]
    return next((c for c in candidates if c.exists()), None)


def part_fingerprint(cfg: BuildConfig, job: Job, stamps: dict | None = None) -> str:
    """What an image's part was made from: its file (path, size, modification time), its annotation, its split
    and every build setting that shapes records (AEF root and index, frame, grid, stretch, bands, tasks, classes,
    land-cover reference, seed, ...), the index and reference by content (:func:`input_stamps`; pass them when
    fingerprinting many images). A part whose fingerprint differs is stale and is made again, so a re-run
    into the same ``--out`` after fixing ``--aef``, changing ``--frame`` or replacing the index file in place gives
    what a fresh build gives."""
    try:
        st = os.stat(job.path) if job.path else None
    except OSError:
        st = None
    payload = {"config": {k: v for k, v in config_dict(cfg).items() if k not in _NOT_SHAPING},
               "file": [job.path, st.st_size, st.st_mtime_ns] if st else [job.path, None, None],
               "annotation": asdict(job.ann) if job.ann is not None else None, "split": job.split,
               "problems": job.problems, "geo": job.geo,
               "inputs": stamps if stamps is not None else input_stamps(cfg)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# quarantine reasons whose cause can change without any input the fingerprint sees: tiles added under the same
# AEF root. Such parts are tried again on every run (one header read each), the others stay as they are.
RETRY_REASONS = ("no AEF tile covers",)


def up_to_date(part: dict | None, fingerprint: str) -> bool:
    """Whether a part can be reused: made from the same inputs and settings, and not quarantined for a reason that
    may have gone away since."""
    if part is None or part.get("fingerprint") != fingerprint:
        return False
    return not any(r in p.get("reason", "") for p in part.get("problems", []) for r in RETRY_REASONS)


def read_part(path: Path) -> dict | None:
    """An image's part file as written, or None when it is missing or torn."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or torn: made again
