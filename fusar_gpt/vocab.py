"""Word lists shared by the library and the CLI's parsers, in a module that imports nothing.

Why a module: the CLI builds its parsers (``--help``, a mistyped option) without importing the library, so a
``choices=`` list must come from somewhere lighter than ``chip.py`` (GDAL, pyproj); and a vocabulary written out in
two places drifts apart.
"""

RASTER_SUFFIXES = (".tif", ".tiff")  # a GeoTIFF (SAR raster) rather than an 8-bit PNG/JPEG chip
SAMPLING = ("point", "mean")         # AEF sampling: the anchor's pixel, or a block mean around it
EIGHT_BIT = ("gray", "rgb")          # PNG/JPEG chips: one grey channel (what build writes) or colour as is
