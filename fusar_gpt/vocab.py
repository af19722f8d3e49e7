"""Word lists shared by the library and the CLI's parsers, in a module that imports nothing.

Why a module: the CLI builds its parsers (``--help``, a mistyped option) without importing the library, so a
``choices=`` list must come from somewhere lighter than ``chip.py`` (GDAL, pyproj); and a vocabulary written out in
two places drifts apart.
"""

RASTER_SUFFIXES = (".tif", ".tiff")  # a GeoTIFF (SAR raster) rather than an 8-bit PNG/JPEG chip
SAMPLING = ("point", "mean")         # AEF sampling: the anchor's pixel, or a block mean around it
EIGHT_BIT = ("gray", "rgb")          # PNG/JPEG chips: one grey channel (what build writes) or colour as is

# The cap on one chip (build, ask, serve). The model sees a frame of 224-504 px, so a chip is at most a few
# thousand px a side (FUSAR-Ship, SSDD, HRSID: 256-800 px); 10000 x 10000 already shrinks 20x into the frame,
# where a ship is a pixel. Above it an image is a scene, for ``detect-scene`` (tiles at full resolution). The
# readers' own cap (2**29, a 2 GiB float array) is sized for whole scenes: through ``ask`` a 50 KB 20000 x 20000
# GeoTIFF took 46 s and 4.3 GB to give a meaningless answer (measured).
CHIP_MAX_PIXELS = 10000 * 10000
