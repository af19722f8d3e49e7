"""Land cover of a scene read off its AEF anchors, for the stage-I captions of real (unlabelled) imagery.

Users' annotations name targets, not terrain; the terrain text of a stage-I caption therefore comes
from the anchors themselves: each valid AEF vector is given the Dynamic World class of the nearest
class centroid (cosine) of a labelled reference set: CSV exports of AEF vectors with a
``dw_label`` column, the format of ``shared/data/aef_samples`` (exported from Earth Engine; users can
export their own region the same way). Nodata anchors inside a tile are open sea (PAPER.md).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..geo.anchors import Anchors

DW_CLASSES = ("water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built", "bare",
              "snow_and_ice")


class LandcoverReference:
    """Unit-length class centroids of labelled AEF vectors."""

    def __init__(self, centroids: np.ndarray, names: list[str]):
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self.names = names

    @classmethod
    def from_csv(cls, source) -> LandcoverReference:
        """Read every ``*.csv`` of a folder (or one file) with columns A00..A63 and ``dw_label``."""
        source = Path(source)
        files = sorted(source.glob("*.csv")) if source.is_dir() else [source]
        sums: dict[int, np.ndarray] = {}
        for f in files:
            with open(f, newline="") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or "dw_label" not in reader.fieldnames or "A63" not in reader.fieldnames:
                    raise ValueError(f"land-cover reference {f} needs columns A00..A63 and dw_label")
                for row in reader:
                    label = int(float(row["dw_label"]))
                    v = np.array([float(row[f"A{i:02d}"]) for i in range(64)])
                    sums[label] = sums.get(label, 0) + v
        if not sums:
            raise ValueError(f"land-cover reference {source} holds no labelled vectors")
        labels = sorted(sums)
        return cls(np.stack([sums[k] for k in labels]), [DW_CLASSES[k] for k in labels])

    def classify(self, features: np.ndarray) -> np.ndarray:
        """Class name per row (cosine to the nearest centroid); rows with NaN get ''."""
        f = np.asarray(features, np.float64)
        valid = np.isfinite(f).all(1)
        out = np.full(len(f), "", dtype=object)
        if valid.any():
            out[valid] = np.array(self.names, dtype=object)[np.argmax(np.nan_to_num(f[valid]) @ self.centroids.T, 1)]
        return out


def default_reference() -> LandcoverReference | None:
    """``$FUSAR_GPT_LANDCOVER_REF``, else the reference samples beside a development checkout, else None."""
    env = os.environ.get("FUSAR_GPT_LANDCOVER_REF")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "aef_samples")
    for c in candidates:
        if c.exists():
            return LandcoverReference.from_csv(c)
    return None


def describe(anchors: Anchors, reference: LandcoverReference) -> tuple[dict[str, float], list[str | None]]:
    """(class -> share of the anchor nodes, dominant class of each 3x3 cell, row-major).

    Nodata nodes count as water: inside a tile, AEF has no value only over open sea.
    """
    a = anchors.for_year(len(anchors.years) - 1) if anchors.multi_year else anchors
    names = reference.classify(np.where(a.mask[:, None], a.features, np.nan))
    names[names == ""] = "water"
    shares = {str(k): round(float(np.mean(names == k)), 3) for k in sorted(set(names))}
    cell = (np.minimum((a.positions[:, 0] * 3).astype(int), 2) * 3 + np.minimum((a.positions[:, 1] * 3).astype(int), 2))
    layout: list[str | None] = []
    for c in range(9):
        here = names[cell == c]
        if len(here) == 0:
            layout.append(None)
            continue
        values, counts = np.unique(here.astype(str), return_counts=True)
        layout.append(str(values[np.argmax(counts)]))
    return shares, layout
