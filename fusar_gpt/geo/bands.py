"""Which band(s) of a SAR raster hold the measurement: one band, a complex band, or SLC I and Q as two real bands.

Real exports are multi-band: SNAP writes an SLC as ``i_IW1_VV`` / ``q_IW1_VV`` real bands (reading ``i`` alone as
"the amplitude" turns half the scene into negative values and NaNs), and dual-pol GRD holds ``VV`` and ``VH``.
The layout is read from the band descriptions; where they do not tell, the caller says it (``bands="i,q"`` or a
band number) and a file that stays undecidable is refused with that advice, never read as band 1 by default.
``pol`` never falls back to band order: no convention fixes it (SNAP writes VH before VV, Earth Engine VV before
VH, and two undescribed float bands may as well be I and Q), so a file without descriptions needs ``--bands N``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import GeoError

POLS = ("VV", "VH", "HH", "HV")
CO_POLS = ("VV", "HH")  # the default: the co-polarised channel
_POL_RE = re.compile(r"(?<![A-Z])(VV|VH|HH|HV)(?![A-Z])")
_IQ_RE = re.compile(r"^(i|q)(?:[_\-\s]|$)(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class BandChoice:
    """``kind`` "single" (``index``: a real or complex band) or "iq" (``index``: I, ``q_index``: Q), 1-based,
    and the polarisation when the descriptions named one."""

    kind: str
    index: int
    q_index: int | None = None
    pol: str | None = None

    def describe(self) -> str:
        what = f"bands {self.index} (I) + {self.q_index} (Q)" if self.kind == "iq" else f"band {self.index}"
        return what + (f", {self.pol}" if self.pol else "")


def check_bands(bands: str | None, flag: str = "--bands") -> str | None:
    """The ``bands`` value in its one spelling (``i,q``, ``dual``, ``N`` or ``N,M``), or None; anything else is a
    one-line ``ValueError`` naming ``flag``. Why here and not only when a file is read: a typo would otherwise
    surface once per image, as a quarantine of every image of a build that then exits 0."""
    if bands is None:
        return None
    parts = [b.strip().lower() for b in str(bands).split(",")]
    if parts == ["i", "q"]:
        return "i,q"
    if parts == ["dual"]:
        return "dual"
    if 1 <= len(parts) <= 2 and all(b.isdigit() and int(b) >= 1 for b in parts) and len(set(map(int, parts))) \
            == len(parts):
        return ",".join(str(int(b)) for b in parts)
    raise ValueError(f"{flag} must be i,q, dual, a band number N or two distinct band numbers N,M (I and Q), "
                     f"got {bands!r}")


def check_pol(pol: str | None, flag: str = "--pol") -> str | None:
    """The polarisation in capitals (VV, VH, HH or HV), or None; anything else is a one-line ``ValueError``."""
    if pol is None:
        return None
    if not isinstance(pol, str) or pol.strip().upper() not in POLS:
        raise ValueError(f"{flag} must be one of {', '.join(POLS)}, got {pol!r}")
    return pol.strip().upper()


def pol_of(description: str | None) -> str | None:
    m = _POL_RE.search((description or "").upper())
    return m.group(1) if m else None


def _pick_pol(available: list[str], pol: str | None, what: str) -> str:
    if pol is not None:
        if pol not in available:
            raise GeoError(f"{what}: no {pol} band; the file holds {', '.join(available)} (--pol)")
        return pol
    for p in CO_POLS:
        if p in available:
            return p
    return available[0]


def choose_bands(descriptions, count: int, *, bands: str | None = None, pol: str | None = None,
                 what: str = "raster") -> BandChoice:
    """The band(s) to read. ``bands``: ``"i,q"`` (SLC as two real bands: by description, else bands 1 and 2),
    ``"N"`` (band N) or ``"N,M"`` (I in band N, Q in band M); ``pol``: VV/VH/HH/HV among described bands
    (default the co-pol)."""
    if pol is not None:
        pol = str(pol).upper()
        if pol not in POLS:
            raise GeoError(f"{what}: --pol must be one of {', '.join(POLS)}, got {pol!r}")
    desc = [(d or "").strip() for d in (list(descriptions or []) + [""] * count)[:count]]
    iq: dict[str, dict[str, int]] = {}
    for k, d in enumerate(desc, start=1):
        m = _IQ_RE.match(d)
        if m:
            iq.setdefault(m.group(2).upper(), {})[m.group(1).lower()] = k
    pairs = {rest: p for rest, p in iq.items() if set(p) == {"i", "q"}}
    if bands is not None:
        spec = [b.strip().lower() for b in str(bands).split(",") if b.strip()]
        if spec == ["i", "q"]:
            if pairs:
                return _iq_by_pol(pairs, pol, what)
            if count == 2:
                return BandChoice("iq", 1, 2)
            raise GeoError(f"{what}: --bands i,q but {count} bands without i_*/q_* descriptions; give the band "
                           f"numbers (--bands N,M)")
        try:
            idx = [int(b) for b in spec]
        except ValueError:
            raise GeoError(f"{what}: --bands must be 'i,q', a band number or two (I,Q), got {bands!r}") from None
        if not 1 <= len(idx) <= 2 or not all(1 <= b <= count for b in idx):
            raise GeoError(f"{what}: --bands {bands!r} does not fit the file's {count} band(s)")
        return BandChoice("single", idx[0]) if len(idx) == 1 else BandChoice("iq", idx[0], idx[1])
    if count == 1:
        own = pol_of(desc[0])
        if pol is not None and own is not None and own != pol:
            raise GeoError(f"{what}: no {pol} band; the file holds {own} (--pol)")
        return BandChoice("single", 1, pol=own)
    if pairs:
        return _iq_by_pol(pairs, pol, what)
    pols = [pol_of(d) for d in desc]
    if any(pols):
        chosen = _pick_pol(list(dict.fromkeys(p for p in pols if p)), pol, what)
        return BandChoice("single", pols.index(chosen) + 1, pol=chosen)
    if pol is not None:  # no standard orders undescribed bands (VV,VH and VH,VV exports are both common)
        raise GeoError(f"{what}: --pol {pol} finds a band by its description, and these {count} bands have none; "
                       f"give its band number (--bands N)")
    raise GeoError(f"{what}: {count} bands and no band descriptions saying which holds what; say it with "
                   f"--bands (i,q for an SLC stored as I and Q bands, or the band number) and --pol")


def _iq_by_pol(pairs: dict[str, dict[str, int]], pol: str | None, what: str) -> BandChoice:
    by_pol = {pol_of(rest): p for rest, p in pairs.items()}
    if None in by_pol and len(by_pol) == 1:
        p = by_pol[None]
        return BandChoice("iq", p["i"], p["q"])
    named = [k for k in by_pol if k]
    chosen = _pick_pol(named, pol, what)
    return BandChoice("iq", by_pol[chosen]["i"], by_pol[chosen]["q"], pol=chosen)
