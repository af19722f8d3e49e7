"""The dual-polarisation colour composite: co-pol, cross-pol and their ratio as the three channels of one chip.

A dual-pol GRD (VV + VH, or HH + HV) holds more than either band alone: water is dark in both, a ship is bright in
both, vegetation lifts the cross-pol (volume scattering) while built structures keep the co-pol high. The
backbone already takes three channels, so ``--bands dual`` gives it co-pol dB, cross-pol dB and the co/cross
ratio in dB (co minus cross), each stretched to 8-bit on its own: the usual false-colour view of dual-pol SAR.
The polarisations are found by band description (as ``--pol`` finds them); a file that does not say which band
is which is refused with its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import GeoError
from .bands import pol_of
from .radiometry import stretch_to_uint8, to_db
from .raster import DEFAULT_MAX_PIXELS, SarImage, open_raster, read_sar

DUAL = "dual"          # the --bands value that asks for the composite
PAIRS = (("VV", "VH"), ("HH", "HV"))


@dataclass
class DualPol:
    """The co- and cross-polarised bands of one raster (the same window). It stands where one band's
    :class:`SarImage` stands: place, size, date and path are the co-pol band's, the mask is where both are valid."""

    co: SarImage
    cross: SarImage

    def __post_init__(self):
        self.path = self.co.path

    def __getattr__(self, name):  # crs, transform, width, height, date, scale, footprint, nodata, data
        return getattr(self.__dict__["co"], name)

    @property
    def mask(self) -> np.ndarray:
        return self.co.mask & self.cross.mask

    @property
    def band(self) -> str:
        return f"dual-pol composite: {self.co.band} / {self.cross.band} / ratio"


def dual_pols(path) -> tuple[str, str]:
    """(co, cross) polarisations a dual- or quad-pol file holds by its band descriptions."""
    with open_raster(path) as ds:
        found = {pol_of(d) for d in ds.descriptions}
    for co, cross in PAIRS:
        if co in found and cross in found:
            return co, cross
    raise GeoError(f"{path}: --bands dual needs a co- and a cross-polarised band named in the band descriptions "
                   f"(VV + VH or HH + HV); found {', '.join(sorted(p for p in found if p)) or 'none'}")


def read_dual(path, *, scale: str | None = None, window=None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              footprint=None) -> DualPol:
    co, cross = dual_pols(path)
    kw = dict(scale=scale, window=window, max_pixels=max_pixels, footprint=footprint)
    return DualPol(read_sar(path, pol=co, **kw), read_sar(path, pol=cross, **kw))


def dual_to_uint8(img: DualPol, *, fixed=None, percentiles=(2, 98)) -> np.ndarray:
    """``[H, W, 3]`` uint8: co-pol dB, cross-pol dB (both by ``fixed`` when given, else their own percentiles) and
    the co/cross ratio in dB (always by its own percentiles: its range is not a backscatter range)."""
    mask = img.mask
    co, cross = to_db(img.co.data, img.co.scale), to_db(img.cross.data, img.cross.scale)
    ratio = co - cross
    return np.stack([stretch_to_uint8(co, mask, fixed=fixed, percentiles=percentiles),
                     stretch_to_uint8(cross, mask, fixed=fixed, percentiles=percentiles),
                     stretch_to_uint8(ratio, mask, percentiles=percentiles)], axis=-1)
