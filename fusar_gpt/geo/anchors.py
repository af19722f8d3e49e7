"""Anchors: the AEF vectors of one image, with where they sit in it; and their ``.npz`` file format.

File format (DESIGN.md §3): ``features float32 [S,64]``, ``positions float32 [S,2]`` (normalised
image-local (y, x)), ``mask bool [S]``; optional ``lonlat float64 [S,2]`` and ``year int``.
Multi-year files hold ``features [T,S,64]``, ``mask [T,S]`` and ``years int [T]``. The official
FUSAR-GPT files hold only features and positions; they load with every finite row valid.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io_atomic import atomic_path
from . import GeoError


@dataclass
class Anchors:
    features: np.ndarray                # float32 [S, D] or [T, S, D]; NaN rows where nodata
    positions: np.ndarray               # float32 [S, 2] normalised (y, x)
    mask: np.ndarray                    # bool [S] or [T, S]
    lonlat: np.ndarray | None = None    # float64 [S, 2] (lon, lat) of each node
    year: int | None = None             # AEF year used (single-year anchors)
    years: np.ndarray | None = None     # int [T] AEF years used (multi-year anchors)

    def __post_init__(self):
        self.features = np.asarray(self.features, np.float32)
        self.positions = np.asarray(self.positions, np.float32)
        self.mask = np.asarray(self.mask, bool)
        f, p, m = self.features, self.positions, self.mask
        if p.ndim != 2 or p.shape[1] != 2:
            raise GeoError(f"anchor positions must be [S, 2], got {list(p.shape)}")
        s = p.shape[0]
        if f.ndim not in (2, 3) or f.shape[-2] != s:
            raise GeoError(f"anchor features must be [S, D] or [T, S, D] with S={s}, got {list(f.shape)}")
        if m.shape != f.shape[:-1]:
            raise GeoError(f"anchor mask must be {list(f.shape[:-1])}, got {list(m.shape)}")
        if s and (not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6):
            raise GeoError("anchor positions must be finite and within [0, 1]")
        if self.lonlat is not None:
            self.lonlat = np.asarray(self.lonlat, np.float64)
            if self.lonlat.shape != (s, 2):
                raise GeoError(f"anchor lonlat must be [{s}, 2], got {list(self.lonlat.shape)}")
        if f.ndim == 3:
            if self.years is None or len(self.years) != f.shape[0]:
                raise GeoError("multi-year anchors need years [T] matching features [T, S, D]")
            self.years = np.asarray(self.years, np.int64)
        # a row flagged valid must hold numbers; the model must never see NaN as a prior
        self.mask &= np.isfinite(f).all(-1)

    @property
    def n_valid(self) -> int:
        return int(self.mask.sum())

    @property
    def multi_year(self) -> bool:
        return self.features.ndim == 3

    def for_year(self, k: int = 0) -> Anchors:
        """One year of multi-year anchors as single-year anchors (what the model takes)."""
        if not self.multi_year:
            return self
        return Anchors(self.features[k], self.positions, self.mask[k], self.lonlat, year=int(self.years[k]))

    def save(self, path) -> Path:
        """Write atomically: a crash never leaves a half-written file under the final name."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"features": self.features, "positions": self.positions, "mask": self.mask}
        if self.lonlat is not None:
            arrays["lonlat"] = self.lonlat
        if self.year is not None:
            arrays["year"] = np.array(int(self.year), np.int64)
        if self.years is not None:
            arrays["years"] = np.asarray(self.years, np.int64)
        with atomic_path(path, ".npz") as tmp:
            _write_npz(tmp, arrays)
        return path

    @classmethod
    def load(cls, path) -> Anchors:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise GeoError(f"anchor file {path} does not exist") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise GeoError(f"anchor file {path} is not a readable .npz ({err})") from None
        for key in ("features", "positions"):
            if key not in arrays:
                raise GeoError(f"anchor file {path} has no '{key}' array")
        feats = arrays["features"]
        mask = arrays.get("mask")
        if mask is None:
            mask = np.ones(feats.shape[:-1], bool)
        years = arrays.get("years")
        year = arrays.get("year")
        try:
            return cls(feats, arrays["positions"], mask, lonlat=arrays.get("lonlat"),
                       year=None if year is None else int(year), years=years)
        except GeoError as err:
            raise GeoError(f"anchor file {path}: {err}") from None


def _write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` with fixed zip timestamps: the same anchors always give the same bytes (resumable builds)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)

