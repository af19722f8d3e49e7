"""A synthetic but physically plausible SAR world, written in the REAL file formats.

``make_world(out)`` writes what a user of the real pipeline brings, so tests, the demo and new users run the
real data path offline:

- ``OUT/aef/{year}/{zone}/*.tiff`` + ``OUT/aef/aef_index.csv``: AEF tiles in the bucket layout (int8, 64 bands,
  bottom-up, nodata -128 over open sea), holding REAL AlphaEarth vectors drawn from ``shared/data/aef_samples``
  by land-cover class, one vector per small parcel, mostly stable between years;
- ``OUT/images/scene_NNNNN.tif``: float32 linear-amplitude GeoTIFFs (UTM, north-up, 1-3 m pixels) with
  ``ACQUISITION_START_TIME`` and ``UNITS`` tags; backscatter per land-cover class is the mean real Sentinel-1
  VV of that class in the samples, with L-look gamma speckle; ships and planes are bright point-scatterer
  structures with sinc sidelobes; buildings and oil tanks are unannotated look-alikes;
- ``OUT/annotations.json`` (COCO, boxes in pixels, with ``subtype`` and land-cover extras) and ``OUT/world.json``.

SAR alone is made partly ambiguous on purpose: runways, aprons and quays are as dark as calm water, and oil tanks
and sheds stand on dark quays next to water, so a small bright blob on a dark background may be a fishing boat or
a tank; the land cover (hence AEF) tells them apart. Every random draw comes from
``np.random.default_rng([seed, stream, index, ...])``: the same seed gives the same world, byte for byte in the
JSON files and pixel for pixel in the rasters.

The package: ``samples`` (the real AEF / S1 sample pool and the material ids), ``landcover`` (random fields and
the per-kind land-cover generators), ``sites`` (site placement, parcels and AEF codes per year), ``canvas`` (point
splatting, sidelobes, building and tank primitives), ``targets`` (ships, planes and look-alikes) and ``world``
(scenes, GeoTIFFs, ``make_world``).
"""

from .landcover import SITE_KINDS
from .samples import (
    BARE,
    BUILT,
    CROPS,
    DW_CLASSES,
    FALLOW,
    FLOODED,
    GRASS,
    MAT_DW,
    MATERIALS,
    OPEN_SEA,
    QUAY,
    RUNWAY,
    SHRUB,
    TARMAC_DB,
    TREES,
    WATER,
    Samples,
    load_samples,
    material_db,
    samples_dir,
)
from .sites import AEF_RES
from .targets import CATEGORIES, PLANE_SUBTYPES, SHIP_SUBTYPES
from .world import ATTRIBUTION, LOOKS, NOISE_FLOOR, VERSION, make_world

__all__ = [
    "AEF_RES", "ATTRIBUTION", "BARE", "BUILT", "CATEGORIES", "CROPS", "DW_CLASSES", "FALLOW", "FLOODED", "GRASS",
    "LOOKS", "MATERIALS", "MAT_DW", "NOISE_FLOOR", "OPEN_SEA", "PLANE_SUBTYPES", "QUAY", "RUNWAY", "SHIP_SUBTYPES",
    "SHRUB", "SITE_KINDS", "TARMAC_DB", "TREES", "VERSION", "WATER", "Samples", "load_samples", "make_world",
    "material_db", "samples_dir",
]
