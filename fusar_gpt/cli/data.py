"""``fusar-gpt synth`` and ``build``: write a synthetic world, build a dataset of SAR-text-AEF triplets."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..vocab import CHIP_MAX_PIXELS

EXAMPLES = {
    "synth": """examples:
  fusar-gpt synth world/ --scenes 40 --seed 0          # AEF tiles, SAR GeoTIFFs, COCO annotations
  fusar-gpt synth big/ --scenes 2000 --sites 8 --json
  fusar-gpt synth easy/ --scenes 1600 --sites 8 --min-targets 1 --max-targets 1 --clutter 0.25 \
      --pixel-m 1 2 --image-px 160 224                # the demo's easier world""",
    "build": """examples:
  fusar-gpt build --images world/images --annotations world/annotations.json --aef world/aef --out ds/
  fusar-gpt build --images scenes.txt --annotations voc/ --format voc --aef /data/aef --out ds/ \\
      --tasks count,locate,detect --frame 504 --grid 8 --workers 8
  fusar-gpt build ... --out ds/ --shard 3/16           # one task of a 16-way array job (same --out)
  fusar-gpt build --merge ds/                          # then join the shards
  fusar-gpt build --images ssdd/JPEGImages --annotations ssdd.json --out ds/        # PNG/JPEG chips: empty priors
  fusar-gpt build --images chips/ --annotations coco.json --geo places.csv --aef /data/aef --out ds/""",
}


def add_parsers(sub, fmt) -> None:
    s = sub.add_parser("synth", help="write a synthetic SAR world in real formats (AEF tiles, GeoTIFFs, COCO)",
                       description="A physically plausible synthetic world: sites in several UTM zones with land "
                                   "cover, real AEF vectors per class in bottom-up int8 tiles, speckled SAR GeoTIFFs "
                                   "with ships, planes and look-alike distractors, COCO annotations with subtypes.",
                       epilog=EXAMPLES["synth"], formatter_class=fmt)
    s.add_argument("out", help="output folder (aef/, images/, annotations.json, world.json)")
    s.add_argument("--scenes", type=int, default=40, help="SAR images to write (default 40)")
    s.add_argument("--sites", type=int, default=4, help="sites (each its own AEF tile and UTM zone; default 4)")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same world")
    s.add_argument("--min-targets", type=int, default=0,
                   help="fewest ships / planes per class wherever the class has room (water / runway; default 0)")
    s.add_argument("--max-targets", type=int, default=5,
                   help="ships and planes per class and scene, each drawn from MIN..N (default 5)")
    s.add_argument("--clutter", type=float, default=1.0,
                   help="density of unannotated look-alikes (buildings, tanks): 1 realistic (default), 0 none")
    s.add_argument("--pixel-m", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"),
                   help="pixel size range in metres, drawn per scene (default 1 3)")
    s.add_argument("--image-px", type=int, nargs=2, default=(256, 320), metavar=("MIN", "MAX"),
                   help="scene width/height range in pixels, drawn per scene (default 256 320)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")

    b = sub.add_parser("build", help="build SAR-text-AEF triplets: a dataset directory (manifest + images + anchors)",
                       description="Read annotated SAR GeoTIFFs, scale them to 8-bit model frames with their boxes, "
                                   "sample AEF anchors for each image's place and year, and write question/answer "
                                   "records (DESIGN.md §3). PNG/JPEG chips and TIFFs without georeference build "
                                   "too: with an empty prior, or with real anchors where a --geo table places "
                                   "them. Resumable; bad inputs go to quarantine.jsonl.",
                       epilog=EXAMPLES["build"], formatter_class=fmt)
    b.add_argument("--images", help="folder (recursive), a .txt list of paths, or one file: SAR GeoTIFFs, "
                                    "PNG/JPEG chips or TIFFs without georeference (an empty prior, unless a "
                                    "--geo row places them)")
    b.add_argument("--annotations", help="COCO JSON file, VOC XML folder or YOLO txt folder")
    b.add_argument("--format", default="coco", choices=["coco", "voc", "yolo"], help="annotation format")
    b.add_argument("--aef", metavar="ROOT", help="AEF root (see 'fusar-gpt aef --help'); needed for GeoTIFFs and "
                                                 "--geo-placed chips (PNG/JPEG chips alone build without it, with "
                                                 "empty priors)")
    b.add_argument("--scale", choices=("db", "amplitude", "intensity"),
                   help="what the pixel values are (default: the file's tags, else guessed from the data); set it "
                        "when a product is linear intensity but looks like amplitude, or is already in dB")
    b.add_argument("--geo", metavar="FILE", help="sidecar table (CSV or JSON) of place and date for chips without "
                                                 "georeference: file, lon_min,lat_min,lon_max,lat_max (or lon,lat,"
                                                 "pixel_m), date")
    b.add_argument("--aef-index", help="AEF index file (for remote roots)")
    b.add_argument("--out", help="dataset folder")
    b.add_argument("--tasks", default=",".join(("caption", "count", "locate", "classify", "detect")),
                   help="comma list of caption,count,locate,classify,detect (the paper's, the default) and "
                        "landcover (the scene's dominant land cover: the question the AEF prior decides)")
    b.add_argument("--classes", default="ship,plane", help="target classes (default ship,plane)")
    b.add_argument("--frame", type=int, default=504, help="square model frame in px, multiple of 28 (default 504)")
    b.add_argument("--grid", type=int, default=8, help="AEF anchor grid per side (default 8)")
    b.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test ratios (default 0.8,0.1,0.1)")
    b.add_argument("--split-by", default="site", choices=["site", "scene"],
                   help="keep whole sites (annotation 'site' field; default) or scenes in one split")
    b.add_argument("--fresh", action="store_true", help="start over in --out (default: reuse the images whose "
                                                        "file, annotation and settings did not change)")
    b.add_argument("--require-geo", action="store_true", help="quarantine PNG/JPEG chips and TIFFs with no "
                                                              "place (no georeference, no --geo row, so no "
                                                              "anchors) instead of building them with an empty "
                                                              "prior")
    b.add_argument("--bands", help="which bands hold the SAR measurement: i,q (an SLC stored as I and Q real "
                                   "bands: amplitude |I+iQ|), N, or N,M (I and Q), or dual (a dual-pol colour "
                                   "composite: co-pol, cross-pol and their ratio as three channels); default: "
                                   "read from the band descriptions (i_*/q_*, VV/VH/...); a multi-band file "
                                   "they do not explain is quarantined")
    b.add_argument("--pol", metavar="{VV,VH,HH,HV}", help="polarisation of a dual-/quad-pol file, by band "
                                                          "description (default: the co-pol); a file without "
                                                          "band descriptions needs --bands N")
    b.add_argument("--stretch", help="fixed dB range VMIN,VMAX for 8-bit scaling (default: per-image 2-98%%)")
    b.add_argument("--sensor", help="sensor name for captions and meta (e.g. Sentinel-1)")
    b.add_argument("--landcover-ref", help="folder of labelled AEF CSVs (A00..A63, dw_label) for caption terrain")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--max-pixels", type=int, default=CHIP_MAX_PIXELS,
                   help="largest image (width x height) taken as a chip; above it an image is quarantined as a "
                        "scene to cut into chips (default 100000000)")
    b.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    b.add_argument("--shard", help="i/n: build every n-th image starting at i (array jobs), then --merge")
    b.add_argument("--merge", metavar="DS", help="join the shards of DS into manifest.jsonl and build.json")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_synth(args) -> int:
    from ..data.synth import make_world

    summary = make_world(args.out, scenes=args.scenes, seed=args.seed, sites=args.sites, max_targets=args.max_targets,
                         min_targets=args.min_targets, pixel_m=tuple(args.pixel_m), image_px=tuple(args.image_px),
                         clutter=args.clutter, progress=not args.json)
    print(json.dumps(summary, default=str) if args.json else
          f"wrote {args.scenes} scenes over {args.sites} sites to {args.out}")
    return 0


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def cmd_build(args) -> int:
    from ..data.build import BuildConfig, build, merge

    if args.merge:
        summary = merge(args.merge)
    else:
        missing = [f"--{k}" for k in ("images", "annotations", "out") if getattr(args, k) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} required (or --merge DS)")
        shard = None
        if args.shard:
            m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
            if not m:
                raise ValueError(f"--shard must look like i/n, got {args.shard!r}")
            shard = (int(m.group(1)), int(m.group(2)))
        cfg = BuildConfig(images=args.images, annotations=args.annotations, aef=args.aef, out=args.out,
                          fmt=args.format, tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                          frame=args.frame, grid=args.grid, classes=tuple(args.classes.split(",")),
                          split=_floats(args.split, 3, "--split"), split_by=args.split_by,
                          stretch=_floats(args.stretch, 2, "--stretch") if args.stretch else None, seed=args.seed,
                          workers=args.workers, shard=shard, aef_index=args.aef_index,
                          landcover_ref=args.landcover_ref, sensor=args.sensor, bands=args.bands, pol=args.pol,
                          require_geo=args.require_geo, fresh=args.fresh, geo=args.geo, scale=args.scale,
                          max_pixels=args.max_pixels)
        summary = build(cfg, progress=not args.json)
    if args.json:
        print(json.dumps(summary))
    elif "records" in summary:
        per = ", ".join(f"{t} {sum(v.values())}" for t, v in sorted(summary["counts"].items()))
        priors = summary.get("priors") or {}
        prior = ", ".join(f"{k} {priors.get(k, 0)}" for k in ("full", "partial", "none"))
        print(f"{summary['records']} records ({per}); priors: {prior}; {summary['quarantined']} quarantined")
    else:
        print(f"shard {summary['shard']}: {summary['images']} images ({summary['built']} built now); "
              f"run 'fusar-gpt build --merge OUT' when every shard is done")
    if summary.get("records") == 0 and summary.get("quarantined"):  # a dataset of nothing is not a success
        print(f"fusar-gpt build: error: no image could be built ({summary['quarantined']} quarantined); the reasons "
              f"are in {Path(args.merge or args.out) / 'quarantine.jsonl'}", file=sys.stderr)
        return 2
    return 0
