"""The real AEF / Sentinel-1 sample pool the synthetic world draws from, and the materials of its land-cover maps.

Every AEF vector written and every land-cover backscatter level comes from ``shared/data/aef_samples``: real
AlphaEarth vectors labelled with their Dynamic World class and the Sentinel-1 VV/VH backscatter at the same place.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...geo import GeoError
from ...geo.aef import DIM, dequantize, quantize
from ..landcover import DW_CLASSES

TARMAC_DB = -18.0      # runways, aprons and quays: as dark as calm water on purpose

# Materials of the synthetic land-cover map: finer than Dynamic World where SAR or AEF coverage differs.
MATERIALS = ("open_sea", "water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built",
             "bare", "fallow", "runway", "quay")
OPEN_SEA, WATER, TREES, GRASS, FLOODED, CROPS, SHRUB, BUILT, BARE, FALLOW, RUNWAY, QUAY = range(len(MATERIALS))
MAT_DW = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7], np.int64)  # material -> Dynamic World class


def samples_dir() -> Path:
    """``$FUSAR_GPT_AEF_SAMPLES``, else ``shared/data/aef_samples`` beside the repository root."""
    env = os.environ.get("FUSAR_GPT_AEF_SAMPLES")
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data" / "aef_samples"


@dataclass(frozen=True)
class Samples:
    """The real AEF vectors (as stored int8 codes) with their Dynamic World class and Sentinel-1 backscatter."""

    codes: np.ndarray   # int8 [N, 64]
    labels: np.ndarray  # int64 [N], Dynamic World class id
    s1_vv: np.ndarray   # float64 [N], dB
    s1_vh: np.ndarray   # float64 [N], dB

    def mean_vv(self) -> dict[str, float]:
        """Mean S1 VV (dB) of each class present."""
        return {DW_CLASSES[c]: float(self.s1_vv[self.labels == c].mean()) for c in np.unique(self.labels)}

    def label_of(self, codes) -> np.ndarray:
        """Dynamic World class of each vector [..., 64] (int8 codes, or floats that are quantised first) found in
        the pool; -1 where it is not a pool vector (nodata included)."""
        table = _code_table(self.codes.tobytes(), self.labels.tobytes())
        codes = np.asarray(codes)
        codes = np.ascontiguousarray(quantize(codes) if codes.dtype.kind == "f" else codes.astype(np.int8))
        flat = codes.reshape(-1, DIM)
        return np.array([table.get(row.tobytes(), -1) for row in flat], np.int64).reshape(codes.shape[:-1])


@lru_cache(maxsize=4)
def _code_table(codes: bytes, labels: bytes) -> dict[bytes, int]:
    c = np.frombuffer(codes, np.int8).reshape(-1, DIM)
    lab = np.frombuffer(labels, np.int64)
    return {row.tobytes(): int(k) for row, k in zip(c, lab)}


def load_samples(path=None) -> Samples:
    """Read the labelled AEF sample CSVs (``A00``..``A63``, ``S1_VV``, ``S1_VH``, ``dw_label``)."""
    return _load_samples(str(Path(path) if path is not None else samples_dir()))


@lru_cache(maxsize=4)
def _load_samples(path: str) -> Samples:
    src = Path(path)
    files = sorted(src.glob("*.csv")) if src.is_dir() else [src] if src.is_file() else []
    if not files:
        raise GeoError(f"AEF reference samples not found at {src}: the synthetic world draws real AEF vectors and "
                       f"backscatter from shared/data/aef_samples beside the repository (or set "
                       f"FUSAR_GPT_AEF_SAMPLES to a folder of such CSVs)")
    vecs, labels, vv, vh = [], [], [], []
    bands = [f"A{i:02d}" for i in range(DIM)]
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (*bands, "S1_VV", "S1_VH", "dw_label") if c not in (reader.fieldnames or ())]
            if missing:
                raise GeoError(f"{f}: AEF sample CSV lacks columns {missing[:4]}")
            for row in reader:
                try:
                    vecs.append([float(row[b]) for b in bands])
                    labels.append(int(float(row["dw_label"])))
                    vv.append(float(row["S1_VV"]))
                    vh.append(float(row["S1_VH"]))
                except ValueError:
                    continue  # a row with a blank value is skipped, not guessed
    v = np.array(vecs, np.float64)
    codes = quantize(v)
    if not len(v) or np.abs(dequantize(codes) - v).max() > 1e-6:
        raise GeoError(f"{src}: sample vectors are empty or not on the int8 AEF lattice")
    return Samples(codes, np.array(labels, np.int64), np.array(vv), np.array(vh))


def material_db(samples: Samples) -> np.ndarray:
    """Mean sigma0 (dB) of each material: the real mean S1 VV of its Dynamic World class; tarmac is special."""
    means = samples.mean_vv()
    missing = [DW_CLASSES[c] for c in set(MAT_DW.tolist()) if DW_CLASSES[c] not in means]
    if missing:
        raise GeoError(f"AEF samples hold no vectors of class(es) {missing}")
    db = np.array([means[DW_CLASSES[c]] for c in MAT_DW])
    db[[RUNWAY, QUAY]] = TARMAC_DB
    return db

