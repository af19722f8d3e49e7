"""``fusar-gpt aef index`` and ``aef sample``: AlphaEarth tile indexes and anchor grids."""

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
      --index aef_index.parquet --bbox 4.49,43.57,4.55,43.61 --year 2023""",
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


def cmd_aef(args) -> int:
    import numpy as np

    from ..geo.aef import AEFStore

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
