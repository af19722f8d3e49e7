"""The ``fusar-gpt`` command line: thin argument parsing over library functions."""

from __future__ import annotations

import argparse
import json
import re
import sys

from . import __version__

EXAMPLES = {
    "demo": """examples:
  fusar-gpt demo                      # build the small backbone, attach TLM, answer one question
  fusar-gpt demo --json               # the same, machine-readable
  fusar-gpt demo --keep runs/smoke    # keep the generated backbone directory""",
    "aef": """examples:
  fusar-gpt aef index /data/aef                         # list years/zones/tiles (scans headers once, cached)
  fusar-gpt aef index /data/aef --write csv             # also write ROOT/aef_index.csv in the official layout
  fusar-gpt aef sample --aef /data/aef --bbox 4.49,43.57,4.55,43.61 --year 2024 --grid 8 --out a.npz
  fusar-gpt aef sample --aef /data/aef --image scene.tif --grid 16 --json   # footprint + year from the GeoTIFF
  fusar-gpt aef sample --aef /vsis3/us-west-2.opendata.source.coop/tge-labs/aef/v1/annual \\
      --index aef_index.parquet --bbox 4.49,43.57,4.55,43.61 --year 2023""",
    "synth": """examples:
  fusar-gpt synth world/ --scenes 40 --seed 0          # AEF tiles, SAR GeoTIFFs, COCO annotations
  fusar-gpt synth big/ --scenes 2000 --sites 8 --json""",
    "build": """examples:
  fusar-gpt build --images world/images --annotations world/annotations.json --aef world/aef --out ds/
  fusar-gpt build --images scenes.txt --annotations voc/ --format voc --aef /data/aef --out ds/ \\
      --tasks count,locate,detect --frame 504 --grid 8 --workers 8
  fusar-gpt build ... --out ds/ --shard 3/16           # one task of a 16-way array job (same --out)
  fusar-gpt build --merge ds/                          # then join the shards""",
    "train": """examples:
  fusar-gpt train configs/tiny-cpu/stage1.yaml --data ds/ --out runs/s1            # stage I (TLM + LoRA)
  fusar-gpt train configs/tiny-cpu/stage2.yaml --init runs/s1 --out runs/s2       # stage II (LoRA; TLM frozen)
  fusar-gpt train configs/tiny-cpu/stage1.yaml --out runs/s1 --resume             # continue after a crash
  fusar-gpt train configs/tiny-cpu/stage1.yaml --set train.lr=5e-5 --set train.batch_size=4
  accelerate launch --config_file configs/accelerate/ddp.yaml -m fusar_gpt train \\
      configs/qwen2.5-vl-7b/stage1.yaml --data ds/ --out runs/7b-s1                # several GPUs""",
    "import-official": """examples:
  fusar-gpt import-official checkpoints/stage2/detection --out runs/official-det
  fusar-gpt import-official old_ckpt --out runs/legacy --sigma 2   # legacy dir without tlm_config.json""",
}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="fusar-gpt", formatter_class=fmt,
        description="FUSAR-GPT: SAR vision-language model with AlphaEarth priors fused by TLM.",
        epilog="examples:\n  fusar-gpt demo\n"
               "  fusar-gpt aef sample --aef ROOT --bbox 4.49,43.57,4.55,43.61 --year 2024\n"
               "  fusar-gpt import-official SRC --out RUN\n\n"
               "Run 'fusar-gpt COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"fusar-gpt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="smoke pipeline: small backbone + TLM answers one question (random weights)",
                       description="Build the small Qwen2.5-VL backbone, save and reload it, attach a TLM and answer "
                                   "a question about a generated SAR-like image with generated AEF-like anchors.",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)
    d.add_argument("--preset", default="small", choices=["tiny", "small"], help="backbone size (default: small)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--keep", metavar="DIR", help="write the backbone here instead of a temporary directory")
    d.add_argument("--json", action="store_true", help="print the report as JSON")

    _add_aef(sub, fmt)
    _add_data(sub, fmt)
    t = sub.add_parser("train", help="train a stage (I: knowledge injection, II: task execution) from a recipe",
                       description="One training loop for both stages; the recipe (YAML) says what trains, the "
                                   "learning rate, epochs and data. Checkpoints are atomic and --resume is exact.",
                       epilog=EXAMPLES["train"], formatter_class=fmt)
    t.add_argument("recipe", help="recipe YAML (see configs/)")
    t.add_argument("--stage", type=int, choices=[1, 2], help="override the recipe's stage")
    t.add_argument("--data", help="dataset folder or manifest.jsonl (overrides data.manifest)")
    t.add_argument("--out", help="run directory (overrides the recipe's out)")
    t.add_argument("--init", help="stage-1 run directory that stage 2 continues")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides epochs)")
    t.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint of --out")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. train.lr=5e-5 (repeatable)")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")

    i = sub.add_parser("import-official", help="convert an official FUSAR-GPT checkpoint into a run directory",
                       description="Read vec64_film.pt (tensors only, never full unpickling) + tlm_config.json "
                                   "(+ a peft adapter) and write RUN/tlm.safetensors, RUN/tlm.json, RUN/adapter/.",
                       epilog=EXAMPLES["import-official"], formatter_class=fmt)
    i.add_argument("src", help="official checkpoint directory")
    i.add_argument("--out", required=True, help="new run directory")
    i.add_argument("--sigma", type=float, help="Gaussian sigma; required for legacy dirs without tlm_config.json")
    i.add_argument("--missing", default="identity", choices=["identity", "null", "error"],
                   help="policy for images with no valid anchor (default: identity)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _add_aef(sub, fmt) -> None:
    a = sub.add_parser("aef", help="AlphaEarth tiles: index a root, sample anchors for a footprint",
                       description="Read AlphaEarth (AEF) embedding tiles in the public layout ROOT/YEAR/ZONE/*.tiff "
                                   "(a local copy, a mirror, or any GDAL path with an index file).",
                       epilog=EXAMPLES["aef"], formatter_class=fmt)
    asub = a.add_subparsers(dest="aef_command", metavar="ACTION", required=True)
    ix = asub.add_parser("index", help="show (and optionally write) the tile index of an AEF root",
                         epilog=EXAMPLES["aef"], formatter_class=fmt)
    ix.add_argument("root", help="AEF root: ROOT/YEAR/ZONE/*.tiff, or one holding aef_index.parquet/.csv")
    ix.add_argument("--index", help="an index file to use instead of ROOT/aef_index.* or a header scan")
    ix.add_argument("--write", choices=["csv", "parquet"], help="write ROOT/aef_index.{csv,parquet} from the headers")
    ix.add_argument("--cache-dir", help="where the parsed index is cached (default: ~/.cache/fusar-gpt)")
    ix.add_argument("--json", action="store_true", help="print the summary as JSON")
    sp = asub.add_parser("sample", help="sample an anchor grid over a lon/lat box or a GeoTIFF's footprint",
                         epilog=EXAMPLES["aef"], formatter_class=fmt)
    sp.add_argument("--aef", required=True, metavar="ROOT", help="AEF root")
    sp.add_argument("--index", help="index file (needed for remote roots such as /vsis3/...)")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", help="lon_min,lat_min,lon_max,lat_max (WGS84 degrees)")
    where.add_argument("--image", help="a georeferenced SAR GeoTIFF: grid laid over its pixels, year from its date")
    sp.add_argument("--year", type=int, help="imaging year (clipped to the years the store has); "
                                             "required with --bbox, overrides the image's date")
    sp.add_argument("--grid", type=int, default=8, help="nodes per side (default 8: 64 anchors)")
    sp.add_argument("--method", choices=["point", "mean"], default="point",
                    help="point sampling (default) or renormalised block mean")
    sp.add_argument("--block", type=int, default=3, help="block side in AEF pixels for --method mean (odd)")
    sp.add_argument("--out", help="write the anchors to this .npz")
    sp.add_argument("--cache-dir", help="where the parsed index is cached")
    sp.add_argument("--json", action="store_true", help="print the result as JSON (with the anchors if no --out)")


def _add_data(sub, fmt) -> None:
    s = sub.add_parser("synth", help="write a synthetic SAR world in real formats (AEF tiles, GeoTIFFs, COCO)",
                       description="A physically plausible synthetic world: sites in several UTM zones with land "
                                   "cover, real AEF vectors per class in bottom-up int8 tiles, speckled SAR GeoTIFFs "
                                   "with ships, planes and look-alike distractors, COCO annotations with subtypes.",
                       epilog=EXAMPLES["synth"], formatter_class=fmt)
    s.add_argument("out", help="output folder (aef/, images/, annotations.json, world.json)")
    s.add_argument("--scenes", type=int, default=40, help="SAR images to write (default 40)")
    s.add_argument("--sites", type=int, default=4, help="sites (each its own AEF tile and UTM zone; default 4)")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same world")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")

    b = sub.add_parser("build", help="build SAR-text-AEF triplets: a dataset directory (manifest + images + anchors)",
                       description="Read annotated SAR GeoTIFFs, scale them to 8-bit model frames with their boxes, "
                                   "sample AEF anchors for each image's place and year, and write question/answer "
                                   "records (DESIGN.md §3). Resumable; bad inputs go to quarantine.jsonl.",
                       epilog=EXAMPLES["build"], formatter_class=fmt)
    b.add_argument("--images", help="folder of GeoTIFFs (recursive), a .txt list of paths, or one file")
    b.add_argument("--annotations", help="COCO JSON file, VOC XML folder or YOLO txt folder")
    b.add_argument("--format", default="coco", choices=["coco", "voc", "yolo"], help="annotation format")
    b.add_argument("--aef", metavar="ROOT", help="AEF root (see 'fusar-gpt aef --help')")
    b.add_argument("--aef-index", help="AEF index file (for remote roots)")
    b.add_argument("--out", help="dataset folder")
    b.add_argument("--tasks", default=",".join(("caption", "count", "locate", "classify", "detect")),
                   help="comma list of caption,count,locate,classify,detect")
    b.add_argument("--classes", default="ship,plane", help="target classes (default ship,plane)")
    b.add_argument("--frame", type=int, default=504, help="square model frame in px, multiple of 28 (default 504)")
    b.add_argument("--grid", type=int, default=8, help="AEF anchor grid per side (default 8)")
    b.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test ratios (default 0.8,0.1,0.1)")
    b.add_argument("--split-by", default="site", choices=["site", "scene"],
                   help="keep whole sites (annotation 'site' field; default) or scenes in one split")
    b.add_argument("--stretch", help="fixed dB range VMIN,VMAX for 8-bit scaling (default: per-image 2-98%%)")
    b.add_argument("--sensor", help="sensor name for captions and meta (e.g. Sentinel-1)")
    b.add_argument("--landcover-ref", help="folder of labelled AEF CSVs (A00..A63, dw_label) for caption terrain")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    b.add_argument("--shard", help="i/n: build every n-th image starting at i (array jobs), then --merge")
    b.add_argument("--merge", metavar="DS", help="join the shards of DS into manifest.jsonl and build.json")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")


def _train(args) -> int:
    import yaml

    from .config import load_recipe
    from .train import resolve_paths, train

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    if args.stage is not None:
        overrides["stage"] = args.stage
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    recipe = resolve_paths(load_recipe(args.recipe, overrides), out=args.out, data=args.data, init=args.init)
    summary = train(recipe, resume=args.resume, progress=not args.json)
    loss = summary.get("loss", float("nan"))
    print(json.dumps(summary) if args.json else
          f"{summary['run']}: {summary['steps']}/{summary['total_steps']} steps, loss {loss:.4f}"
          + (f", val loss {summary['val_loss']:.4f}" if "val_loss" in summary else ""))
    return 0


def _synth(args) -> int:
    from .data.synth import make_world

    summary = make_world(args.out, scenes=args.scenes, seed=args.seed, sites=args.sites, progress=not args.json)
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


def _build(args) -> int:
    from .data.build import BuildConfig, build, merge

    if args.merge:
        summary = merge(args.merge)
    else:
        missing = [f"--{k}" for k in ("images", "annotations", "aef", "out") if getattr(args, k) is None]
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
                          landcover_ref=args.landcover_ref, sensor=args.sensor)
        summary = build(cfg, progress=not args.json)
    if args.json:
        print(json.dumps(summary))
    elif "records" in summary:
        per = ", ".join(f"{t} {sum(v.values())}" for t, v in sorted(summary["counts"].items()))
        print(f"{summary['records']} records ({per}); {summary['quarantined']} quarantined")
    else:
        print(f"shard {summary['shard']}: {summary['images']} images ({summary['built']} built now); "
              f"run 'fusar-gpt build --merge OUT' when every shard is done")
    return 0


def _aef(args) -> int:
    import numpy as np

    from .geo.aef import AEFStore

    if args.aef_command == "index":
        if args.write:
            from .geo.aef_tiles import write_index

            out = write_index(args.root, f"aef_index.{args.write}")
            print(f"wrote {out}", file=sys.stderr)
        store = AEFStore(args.root, index=args.index, cache_dir=args.cache_dir, progress=not args.json)
        info = {"root": store.root, **store.index.summary()}
        print(json.dumps(info) if args.json else
              f"{info['root']}: {info['tiles']} tiles, years {', '.join(map(str, info['years']))}, "
              f"zones {', '.join(info['zones']) or '?'} (from {info['source']})")
        return 0
    store = AEFStore(args.aef, index=args.index, cache_dir=args.cache_dir)
    if args.bbox:
        if args.year is None:
            raise ValueError("--year is required with --bbox")
        from .geo import check_bbox

        bbox = check_bbox(args.bbox.split(","), "--bbox")
        asked = args.year
        anchors = store.sample(bbox, asked, grid=args.grid, method=args.method, block=args.block)
    else:
        from .geo.raster import read_sar

        img = read_sar(args.image)
        asked = args.year if args.year is not None else (img.date.year if img.date else None)
        if asked is None:
            raise ValueError(f"{args.image} has no acquisition date in its tags or name; pass --year")
        bbox = img.footprint
        anchors = store.sample_raster(img.crs, img.transform, img.width, img.height, asked, grid=args.grid,
                                      method=args.method, block=args.block)
    if args.out:
        anchors.save(args.out)
    info = {"bbox": [round(v, 7) for v in bbox], "asked_year": asked, "aef_year": anchors.year,
            "grid": args.grid, "nodes": int(anchors.mask.size), "valid": anchors.n_valid, "out": args.out}
    if args.json:
        if not args.out:
            info["anchors"] = {"features": [[None if np.isnan(v) else float(v) for v in row]
                                            for row in anchors.features],
                               "positions": anchors.positions.tolist(), "mask": anchors.mask.tolist(),
                               "lonlat": anchors.lonlat.tolist()}
        print(json.dumps(info))
    else:
        print(f"AEF {anchors.year} (asked {asked}), {args.grid}x{args.grid} grid over "
              f"{', '.join(f'{v:.5f}' for v in bbox)}: {anchors.n_valid}/{anchors.mask.size} nodes valid"
              + (f" -> {args.out}" if args.out else ""))
    return 0


def _demo(args) -> int:
    from .demo import format_report, run_smoke

    report = run_smoke(args.keep, preset=args.preset, seed=args.seed)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _import_official(args) -> int:
    from .model.checkpoint import import_official, load_tlm

    run = import_official(args.src, args.out, sigma=args.sigma, missing=args.missing)
    tlm = load_tlm(run)
    info = {"run": str(run), "hidden_size": tlm.hidden_size, "sigma": tlm.sigma,
            "adapter": (run / "adapter").exists()}
    print(json.dumps(info) if args.json else
          f"imported {args.src} -> {run} (hidden size {tlm.hidden_size}, sigma {tlm.sigma}, "
          f"adapter {'yes' if info['adapter'] else 'no'})")
    return 0


COMMANDS = {"demo": _demo, "synth": _synth, "build": _build, "train": _train, "aef": _aef,
            "import-official": _import_official}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fusar-gpt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
