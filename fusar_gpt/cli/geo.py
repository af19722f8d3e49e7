"""``fusar-gpt aef index|sample|pull|coverage``: AlphaEarth tile indexes, anchor grids, fetching and coverage."""

from __future__ import annotations

import json
import sys

EXAMPLES = {
    "aef": """examples:
  fusar-gpt aef index /data/aef                         # list years/zones/tiles (scans headers once, cached)
  fusar-gpt aef index /data/aef --write csv             # also write ROOT/aef_index.csv in the official layout
  fusar-gpt aef sample --aef /data/aef --bbox 4.49,43.57,4.55,43.61 --year 2024 --grid 8 --out a.npz
  fusar-gpt aef sample --aef /data/aef --image scene.tif --grid 16 --json   # footprint + year from the GeoTIFF
  fusar-gpt aef sample --aef /vsis3/us-west-2.opendata.source.coop/tge-labs/aef/v1/annual \\
      --index aef_index.parquet --bbox 4.49,43.57,4.55,43.61 --year 2023
  fusar-gpt aef pull --from https://data.source.coop/tge-labs/aef/v1/annual --index aef_index.parquet \\
      --images scenes/ --to /data/aef --dry-run          # which tiles, windows and bytes; nothing fetched
  fusar-gpt aef pull --from https://data.source.coop/tge-labs/aef/v1/annual --index aef_index.parquet \\
      --bbox 4.49,43.57,4.55,43.61 --years 2023,2024 --to /data/aef --workers 8
  fusar-gpt aef coverage --images scenes/ --aef /data/aef --json   # valid-anchor share and year per image""",
}


def add_parsers(sub, fmt) -> None:
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
    pl = asub.add_parser("pull", help="fetch the AEF windows some footprints need from a remote root into a local one",
                         description="Plan the tiles and pixel windows that images, a dataset or lon/lat boxes need, "
                                     "fetch exactly those blocks (parallel range reads, retried), and write them "
                                     "under --to in the public layout with an index. Re-runs fetch only what is "
                                     "missing.", epilog=EXAMPLES["aef"], formatter_class=fmt)
    pl.add_argument("--from", dest="remote", required=True, metavar="REMOTE_ROOT",
                    help="the bucket or a mirror: https://..., /vsis3/..., or a folder")
    pl.add_argument("--index", help="the remote's aef_index.parquet/.csv (a local file or URL; default: "
                                    "REMOTE_ROOT/aef_index.parquet)")
    src = pl.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="GeoTIFFs (footprint and acquisition year from each header)")
    src.add_argument("--manifest", metavar="DS", help="a dataset (its records' meta.footprint and meta.year)")
    src.add_argument("--bbox", action="append", metavar="LON0,LAT0,LON1,LAT1",
                     help="a lon/lat box (repeatable); needs --years")
    pl.add_argument("--years", help="comma-separated years (default: each image's acquisition year), clipped to "
                                    "the years the remote has")
    pl.add_argument("--to", required=True, metavar="LOCAL_ROOT", help="local AEF root to write into")
    pl.add_argument("--margin", type=int, default=4, metavar="PX", help="extra AEF pixels around each footprint "
                                                                        "(default 4; block means need (block-1)/2)")
    pl.add_argument("--whole-tiles", action="store_true", help="copy whole tiles byte for byte instead of windows")
    pl.add_argument("--workers", type=int, default=4, help="tiles fetched at once (default 4)")
    pl.add_argument("--dry-run", action="store_true", help="list tiles, windows and bytes; fetch nothing")
    pl.add_argument("--cache-dir", help="where the parsed index is cached")
    pl.add_argument("--json", action="store_true", help="print the plan or the result as JSON")
    cv = asub.add_parser("coverage", help="per image: the share of valid anchors an AEF root gives, and the year",
                         description="Sample each image's anchor grid as 'build' does and report the share of valid "
                                     "anchors and the AEF year used, with a summary (full / partial / none, by "
                                     "year); 'none' says whether no tile reaches the place or it is nodata there.",
                         epilog=EXAMPLES["aef"], formatter_class=fmt)
    src = cv.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="GeoTIFFs (footprint and acquisition year from each header)")
    src.add_argument("--manifest", metavar="DS", help="a dataset (its records' meta.footprint and meta.year)")
    cv.add_argument("--aef", required=True, metavar="ROOT", help="AEF root (local, https://... or /vsis3/...)")
    cv.add_argument("--index", help="index file (for remote roots without their own)")
    cv.add_argument("--grid", type=int, default=8, help="nodes per side (default 8, as build)")
    cv.add_argument("--cache-dir", help="where the parsed index is cached")
    cv.add_argument("--json", action="store_true", help="print the per-image lines and the summary as JSON")


def _years(text) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(y) for y in str(text).split(",") if y.strip()]
    except ValueError:
        raise ValueError(f"--years must be comma-separated integers, got {text!r}") from None


def _footprints(args):
    from ..geo import aef_plan

    if args.images:
        return aef_plan.images_footprints(args.images)
    if args.manifest:
        return aef_plan.manifest_footprints(args.manifest)
    return aef_plan.bbox_footprints(args.bbox), []


def cmd_pull(args) -> int:
    from ..geo.aef_pull import pull

    years = _years(args.years)
    if args.bbox and not years:
        raise ValueError("--years is required with --bbox")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    footprints, problems = _footprints(args)
    res = pull(args.remote, args.to, footprints, index=args.index, years=years, margin=args.margin,
               whole_tiles=args.whole_tiles, workers=args.workers, dry_run=args.dry_run, progress=not args.json,
               cache_dir=args.cache_dir, problems=problems)
    if args.json:
        print(json.dumps(res))
        return 0
    for p in res["problems"]:
        print(f"skipped {p['image']}: {p['reason']}", file=sys.stderr)
    if res["dry_run"]:
        for t in res["tiles"]:
            for w in t["windows"]:
                where = f"window {w['window']}" if "window" in w else "whole tile"
                print(f"{'have' if w['present'] else 'get '} {t['tile']} {where} -> {w['local']} ({_mb(w['bytes'])})")
        print(f"{res['to_fetch']} of {res['windows']} window(s) in {len(res['tiles'])} tile(s) to fetch: "
              f"{_mb(res['bytes_to_fetch'])} (whole tiles: {_mb(res['whole_tile_bytes'])}); years "
              f"{', '.join(map(str, res['years'])) or '-'}; {res['footprints']} footprint(s)")
        return 0
    print(f"pulled {len(res['written'])} file(s) ({_mb(res['fetched_bytes'])} in {res['requests']} requests, "
          f"{res['retries']} retried, {res['seconds']:.1f} s) into {res['local']}; "
          f"{res['windows'] - res['to_fetch']} window(s) were there already")
    return 0


def cmd_coverage(args) -> int:
    from ..geo.aef import AEFStore
    from ..geo.aef_coverage import coverage

    footprints, problems = _footprints(args)
    res = coverage(AEFStore(args.aef, index=args.index, cache_dir=args.cache_dir), footprints, grid=args.grid,
                   problems=problems)
    if args.json:
        print(json.dumps(res))
        return 0
    for i in res["images"]:
        print(f"{i['status']:7s} {i['share'] * 100:5.1f}%  AEF {i['aef_year'] or '-'} (asked {i['year'] or '-'})  "
              f"{i['image']}" + (f"  [{i['reason']}]" if "reason" in i else ""))
    for p in res["problems"]:
        print(f"skipped {p['image']}: {p['reason']}", file=sys.stderr)
    s = res["summary"]
    years = "; ".join(f"{y}: {v['full']} full, {v['partial']} partial, {v['none']} none"
                      for y, v in res["by_year"].items())
    print(f"{len(res['images'])} image(s): {s['full']} full, {s['partial']} partial, {s['none']} none "
          f"({s['no_tile']} with no tile at all); by AEF year: {years or '-'}")
    return 0


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def cmd_aef(args) -> int:
    import numpy as np

    from ..geo.aef import AEFStore

    if args.aef_command == "pull":
        return cmd_pull(args)
    if args.aef_command == "coverage":
        return cmd_coverage(args)
    if args.aef_command == "index":
        if args.write:
            from ..geo.aef_tiles import write_index

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
        from ..geo import check_bbox

        bbox = check_bbox(args.bbox.split(","), "--bbox")
        asked = args.year
        anchors = store.sample(bbox, asked, grid=args.grid, method=args.method, block=args.block)
    else:
        from ..geo.raster import read_sar

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
