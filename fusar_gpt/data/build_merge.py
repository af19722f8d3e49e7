"""The end of a build: every image's part joined into ``manifest.jsonl``, ``quarantine.jsonl`` and ``build.json``.

Why apart from the building: merge reads only ``plan.json`` and the part files, so it runs after the last shard
of an array job as well as at the end of a one-process build, and gives the same bytes either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from .. import __version__
from ..chip import ChipSpec
from ..io_atomic import write_bytes


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
    chip = ChipSpec.from_dict(plan_file["config"], str(plan_path)).to_dict()
    summary = {"records": len(lines), "images": built, "quarantined": len(quarantine), "counts": counts,
               "priors": priors, "chip": chip,
               "config": plan_file["config"], "versions": _versions(__version__)}
    write_bytes(out / "build.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def _versions(ours: str) -> dict:
    return {"fusar-gpt": ours, "numpy": np.__version__, "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__}
