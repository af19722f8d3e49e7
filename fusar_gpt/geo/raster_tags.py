"""What a SAR raster's tags, name and values say about it: its acquisition date and its radiometric scale.

Why apart from reading: these are pure functions of strings and arrays (no GDAL), shared by :func:`read_sar`
and by scene detection, which takes a date from a file's tags without reading its pixels.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

from . import GeoError

SCALES = ("db", "amplitude", "intensity")

# Acquisition tags in priority order; TIFFTAG_DATETIME is handled separately because it is usually write time.
_DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITION_START_TIME", "ACQUISITION_START", "ACQUISITION_TIME",
              "FIRST_LINE_TIME", "DATE_ACQUIRED", "SENSING_START", "SENSING_TIME", "START_TIME")
_DATE_RE = re.compile(r"(?<!\d)(\d{4})([-_:/.]?)(\d{2})\2(\d{2})(?!\d)")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DMY_RE = re.compile(r"(?<!\d)(\d{1,2})[- ]([A-Za-z]{3})[- ](\d{4})(?!\d)")
_SCALE_TAGS = ("UNITS", "UNIT", "SCALE", "SCALING", "RADIOMETRY", "VALUE_TYPE", "OUTPUT_TYPE", "BACKSCATTER")


# ----------------------------------------------------------------------------------------------------- dates
def _parse_date(text: str) -> dt.date | None:
    for m in _DATE_RE.finditer(text):
        year, month, day = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if 1990 <= year <= 2100:
            try:
                return dt.date(year, month, day)
            except ValueError:
                continue
    for m in _DMY_RE.finditer(text):
        mon = m.group(2).upper()
        if mon in _MONTHS and 1990 <= int(m.group(3)) <= 2100:
            try:
                return dt.date(int(m.group(3)), _MONTHS.index(mon) + 1, int(m.group(1)))
            except ValueError:
                continue
    return None


def acquisition_date(tags: dict, path) -> dt.date | None:
    """Acquisition date from explicit tags, then the file name, then TIFFTAG_DATETIME.

    TIFFTAG_DATETIME comes last because processors stamp it with the time they WROTE the file, which can be
    years after the pass; the file name of most SAR products carries the sensing start.
    """
    upper = {str(k).upper().rsplit(":", 1)[-1]: str(v) for k, v in (tags or {}).items()}
    for key in _DATE_TAGS:
        if key in upper and (d := _parse_date(upper[key])) is not None:
            return d
    if path is not None and (d := _parse_date(Path(str(path)).stem)) is not None:
        return d
    if "TIFFTAG_DATETIME" in upper:
        return _parse_date(upper["TIFFTAG_DATETIME"])
    return None


def coerce_date(value, path) -> dt.date:
    """A ``date=`` override (a date, a datetime or an ISO ``YYYY-MM-DD`` string) as a date, else a GeoError."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise GeoError(f"{path}: date={value!r} is not a date; use YYYY-MM-DD") from None


# ------------------------------------------------------------------------------------------------- radiometry
def guess_scale(data: np.ndarray, mask: np.ndarray | None, dtype, tags: dict | None = None) -> str:
    """``"db"``, ``"amplitude"`` or ``"intensity"``: tags win, then the dtype, then the value distribution.

    Non-negative data cannot tell amplitude from intensity, so it is called amplitude (DN products are);
    calibrated linear sigma0/gamma0 should be tagged or passed as ``scale="intensity"``.
    """
    for key, value in (tags or {}).items():
        if str(key).upper().rsplit(":", 1)[-1] not in _SCALE_TAGS:
            continue
        v = str(value).lower()
        if re.search(r"\bdb\b|decibel", v):
            return "db"
        if re.search(r"intensity|power|linear", v):
            return "intensity"
        if re.search(r"amplitude|magnitude|\bdn\b", v):
            return "amplitude"
    name = str(np.dtype(dtype) if not isinstance(dtype, str) else dtype)
    if not name.startswith("float"):  # complex -> |z| is an amplitude; integers are DN amplitudes
        return "amplitude"
    vals = data[mask] if mask is not None else data[np.isfinite(data)]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "amplitude"
    if vals.size > 1_000_000:  # a strided sample decides as well as the whole scene
        vals = vals[:: vals.size // 1_000_000]
    p1, p5, p99 = np.percentile(vals, [1, 5, 99])
    # dB: a real share of values below -1 (linear noise-subtracted data dips only slightly below zero),
    # all within what backscatter in dB can be.
    if p5 < -1.0 and p1 >= -100.0 and p99 <= 60.0:
        return "db"
    return "amplitude"
