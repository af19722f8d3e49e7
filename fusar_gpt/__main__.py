"""The ``fusar-gpt`` command line: thin argument parsing over library functions."""

from __future__ import annotations

import argparse
import json
import re
import sys

from . import __version__

EXAMPLES = {
    "demo": """examples:
  fusar-gpt demo                          # ~10-15 min on 2 cores; report in runs/demo/compare/compare.md
  fusar-gpt demo --out /tmp/demo --json
  fusar-gpt demo --quick                  # the same path in about a minute (numbers meaningless)""",
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
    "score": """examples:
  fusar-gpt score --predictions preds.jsonl --manifest ds/manifest.jsonl --split test
  fusar-gpt score --predictions preds.jsonl --manifest ds/manifest.jsonl --json   # one JSON object""",
    "eval": """examples:
  fusar-gpt eval --run runs/s2 --manifest ds/manifest.jsonl              # test split -> RUN/report.md
  fusar-gpt eval --run runs/s2 --manifest ds/ --split val --batch-size 16 --out reports/val""",
    "compare": """examples:
  fusar-gpt compare runs/fusar-s2 runs/no-aef-s2 runs/sum-s2 --out reports/ablations""",
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

    d = sub.add_parser("demo", help="the whole pipeline on a synthetic world: FUSAR-GPT vs no-AEF, scored",
                       description="Synthesise a world, build the dataset, train FUSAR-GPT (stage I + II) and the "
                                   "no-AEF baseline on the small preset, evaluate both on the test split and compare "
                                   "them with paired 95%% intervals and a majority-answer baseline (~10-15 min on "
                                   "2 CPU cores). Re-running reuses finished steps.",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)
    d.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="a tiny version for tests (~1 min, results meaningless)")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")

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

    _add_scoring(sub, fmt)

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


def _add_scoring(sub, fmt) -> None:
    sc = sub.add_parser("score", help="score a predictions JSONL against a manifest (no model needed)",
                        description="Metrics of DESIGN.md §3 with 95%% bootstrap intervals. Predictions are "
                                    "{\"id\", \"answer\"} lines; records without a prediction count as wrong.",
                        epilog=EXAMPLES["score"], formatter_class=fmt)
    sc.add_argument("--predictions", required=True, help="JSONL of {id, answer}")
    sc.add_argument("--manifest", required=True, help="manifest.jsonl (or the dataset folder)")
    sc.add_argument("--split", help="score only this split (default: every record that has a prediction)")
    sc.add_argument("--json", action="store_true", help="print exactly one JSON object")

    ev = sub.add_parser("eval", help="generate answers with a trained run, then score and write a report",
                        description="Batched greedy generation on a manifest split; writes predictions.jsonl, "
                                    "metrics.json and report.md (with plots) next to each other.",
                        epilog=EXAMPLES["eval"], formatter_class=fmt)
    ev.add_argument("--run", required=True, help="run directory (after stage II)")
    ev.add_argument("--manifest", required=True, help="manifest.jsonl or the dataset folder")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--tasks", help="comma list of tasks (default: all in the split)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--limit", type=int, help="only the first N records (quick checks)")
    ev.add_argument("--out", help="output folder (default: the run directory)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    cp = sub.add_parser("compare", help="ablation table across evaluated runs, paired differences vs the first",
                        epilog=EXAMPLES["compare"], formatter_class=fmt)
    cp.add_argument("runs", nargs="+", help="evaluated run directories (each with metrics.json, predictions.jsonl)")
    cp.add_argument("--names", help="comma list of names for the table (default: folder names)")
    cp.add_argument("--out", default=".", help="where compare.md and compare.png go (default: here)")
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _manifest_path(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    return str(p / "manifest.jsonl") if p.is_dir() else str(p)


def _score(args) -> int:
    from .data.dataset import load_manifest
    from .report import metrics_table
    from .scoring import read_predictions, score

    preds = read_predictions(args.predictions)
    records = load_manifest(_manifest_path(args.manifest), split=args.split)
    if args.split is None:
        records = [r for r in records if str(r["id"]) in preds] or records
    metrics = score(records, preds)
    print(json.dumps(metrics) if args.json else metrics_table(["predictions"], [metrics]))
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate_run
    from .report import metrics_table

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    result = evaluate_run(args.run, _manifest_path(args.manifest), split=args.split, tasks=tasks,
                          batch_size=args.batch_size, out=args.out, progress=not args.json, limit=args.limit)
    if args.json:
        print(json.dumps(result))
    else:
        print(metrics_table(["model"], [result["metrics"]], baseline=result["majority_baseline"]))
        print(f"report: {args.out or args.run}/report.md")
    return 0


def _compare(args) -> int:
    from .evaluate import compare_runs

    names = args.names.split(",") if args.names else None
    result = compare_runs(args.runs, out=args.out, names=names)
    print(json.dumps(result) if args.json else result["table"] + f"\nreport: {result['report']}")
    return 0


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
    from .demo import format_summary, run_demo

    summary = run_demo(args.out, quick=args.quick, progress=not args.json)
    print(json.dumps(summary) if args.json else format_summary(summary))
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


COMMANDS = {"demo": _demo, "synth": _synth, "build": _build, "train": _train, "eval": _eval, "score": _score,
            "compare": _compare, "aef": _aef, "import-official": _import_official}


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
