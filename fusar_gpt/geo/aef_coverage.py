"""How much AEF a set of images gets from a root: per image the share of valid anchors and the year used.

Before a build (or after a pull) this answers "is my AEF copy complete for these scenes?" without
building anything: each image's anchor grid is sampled as the build samples it (on the image's own
pixel grid for GeoTIFFs, over ``meta.footprint`` for a dataset's records), and classed as ``full`` (every
node valid), ``partial`` or ``none``; ``none`` says whether no tile reaches the place at all (missing
data: pull it) or the tiles hold only nodata there (open sea: nothing to pull).
"""

from __future__ import annotations

from .aef import AEFStore
from .aef_plan import Footprint


def image_coverage(store: AEFStore, fp: Footprint, grid: int = 8) -> dict:
    """One image's line: asked and used year, valid nodes, share, and its class."""
    if fp.year is None:
        return {"image": fp.source, "year": None, "aef_year": None, "valid": 0, "nodes": grid * grid, "share": 0.0,
                "status": "none", "reason": "no acquisition year"}
    if fp.raster is not None:
        crs, transform, width, height = fp.raster
        anchors = store.sample_raster(crs, transform, width, height, fp.year, grid=grid)
    else:
        anchors = store.sample(fp.bbox, fp.year, grid=grid)
    nodes = int(anchors.mask.size)
    status = "full" if anchors.n_valid == nodes else "partial" if anchors.n_valid else "none"
    line = {"image": fp.source, "year": fp.year, "aef_year": anchors.year, "valid": anchors.n_valid, "nodes": nodes,
            "share": round(anchors.n_valid / nodes, 4), "status": status}
    if status == "none":
        line["reason"] = "nodata only (open sea)" if store.has_tiles(fp.bbox, fp.year) else "no tile"
    return line


def coverage(store: AEFStore, footprints: list[Footprint], *, grid: int = 8, problems: list[dict] | None = None
             ) -> dict:
    """Every image's line plus a summary: full / partial / none overall and by AEF year used."""
    images = [image_coverage(store, fp, grid) for fp in footprints]
    summary = {k: sum(i["status"] == k for i in images) for k in ("full", "partial", "none")}
    by_year: dict[str, dict] = {}
    for i in images:
        year = str(i["aef_year"]) if i["aef_year"] is not None else "none"
        by_year.setdefault(year, {"full": 0, "partial": 0, "none": 0})[i["status"]] += 1
    no_tile = sum(i.get("reason") == "no tile" for i in images)
    return {"root": store.root, "grid": grid, "images": images, "summary": {**summary, "no_tile": no_tile},
            "by_year": dict(sorted(by_year.items())), "problems": problems or [],
            "mean_share": round(sum(i["share"] for i in images) / len(images), 4) if images else 0.0}
