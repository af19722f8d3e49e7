"""Dataset build throughput: records/s with 2 worker processes vs 1, as a ratio measured in one run.

A synthetic world of 2,000 chips (``fusar-gpt synth``) is built end to end (read GeoTIFF, stretch,
resize with boxes, sample AEF anchors, write PNG + .npz + records, merge) twice into fresh
folders: once with ``workers=1`` (in-process) and once with ``workers=2`` (process pool). Both
builds must produce the same manifest.

Usage: python benchmarks/build_throughput.py [--chips 2000] [--frame 224] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from fusar_gpt.data.build import BuildConfig, build
from fusar_gpt.data.synth import make_world


def run(chips: int = 2000, frame: int = 224, sites: int = 4, workers=(1, 2)) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        os.environ.setdefault("FUSAR_GPT_CACHE", str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        make_world(world, scenes=chips, seed=0, sites=sites)
        result = {"chips": chips, "frame": frame, "synth_s": round(time.perf_counter() - t0, 1), "runs": {}}
        manifests = {}
        for w in workers:
            out = Path(tmp) / f"ds-{w}"
            cfg = BuildConfig(images=str(world / "images"), annotations=str(world / "annotations.json"),
                              aef=str(world / "aef"), out=str(out), frame=frame, workers=w)
            t0 = time.perf_counter()
            summary = build(cfg, progress=False)
            dt = time.perf_counter() - t0
            manifests[w] = (out / "manifest.jsonl").read_text()
            result["runs"][w] = {"seconds": round(dt, 2), "records": summary["records"],
                                 "records_per_s": round(summary["records"] / dt, 1),
                                 "images_per_s": round(chips / dt, 1), "quarantined": summary["quarantined"]}
        base = result["runs"][workers[0]]["records_per_s"]
        for w in workers[1:]:
            result["runs"][w]["ratio_vs_1"] = round(result["runs"][w]["records_per_s"] / base, 2)
        result["identical_manifests"] = len(set(manifests.values())) == 1
    cpu = platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result["machine"] = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chips", type=int, default=2000)
    p.add_argument("--frame", type=int, default=224)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a.chips, a.frame)
    if a.json:
        print(json.dumps(r))
        return
    print(f"build throughput, {r['chips']} synthetic chips -> frame {r['frame']} (synth took {r['synth_s']} s)")
    for w, v in r["runs"].items():
        extra = f", {v['ratio_vs_1']}x vs 1 worker" if "ratio_vs_1" in v else ""
        print(f"  workers={w}: {v['records']} records in {v['seconds']} s = {v['records_per_s']} records/s "
              f"({v['images_per_s']} images/s){extra}")
    print(f"  identical manifests: {r['identical_manifests']}")


if __name__ == "__main__":
    main()
