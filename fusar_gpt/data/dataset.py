"""Manifest datasets for training and evaluation: records read lazily into model-ready items (torch ``Dataset``s).

Reading and validating a manifest, and opening one record's image and anchors, is ``manifest.py`` (no torch, so
scoring can use it); its names are importable from here too, their old home.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..chip import ChipSpec, dataset_spec
from .manifest import (  # noqa: F401  (re-exported: the manifest readers' old home)
    IMAGE_TAG,
    OFFICIAL_FRAME,
    ManifestError,
    as_names,
    frame_size,
    load_manifest,
    read_anchors,
    read_image,
    read_jsonl,
)


class ManifestDataset(torch.utils.data.Dataset):
    """Items ``{"id", "task", "image" (PIL RGB), "question", "answer", "anchors" (Anchors | None),
    "coordinate_size", "meta"}`` from a manifest path or from records returned by :func:`load_manifest`. GeoTIFF
    images are made into chips with ``spec`` (default: the spec in the dataset's ``build.json``, if any)."""

    def __init__(self, manifest, *, split: str | None = None, tasks: Sequence[str] | None = None,
                 spec: ChipSpec | None = None) -> None:
        self.spec = spec
        if isinstance(manifest, (str, Path)):
            self.source = str(manifest)
            everything = load_manifest(manifest)
            self.spec = spec or dataset_spec(manifest)
        else:
            self.source = "records"
            everything = list(manifest)
        task_names = as_names(tasks, "tasks")
        self.records = [r for r in everything if (split is None or r.get("split") == split)
                        and (task_names is None or r.get("task") in task_names)]
        if everything and not self.records:
            splits = sorted({str(r.get("split")) for r in everything})
            found = sorted({str(r.get("task")) for r in everything})
            raise ManifestError(f"{self.source}: no record matches split={split!r} tasks={tasks!r} "
                                f"(splits present: {', '.join(splits)}; tasks present: {', '.join(found)})")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        return {
            "id": rec["id"],
            "task": rec.get("task"),
            "image": read_image(rec, self.spec),
            "question": rec["question"],
            "answer": rec["answer"],
            "anchors": read_anchors(rec),
            "coordinate_size": rec["coordinate_size"],
            "meta": rec.get("meta") or {},
        }


class Conversations(torch.utils.data.Dataset):
    """Records about the same image (and anchors) grouped into conversations of up to ``turns`` question/answer
    turns: the image is encoded once for several supervised answers, which makes a training step several times
    more productive (the text is the cheap part). The grouping is fixed by ``seed`` (a seeded shuffle within each
    image, then chunks), so a run's data order, and so ``--resume``, stay exact. Items are those of
    :class:`ManifestDataset` (the first turn's record) plus ``turns = [(question, answer), ...]`` and ``ids``.

    Records of the ``alone`` tasks (default: captions) are conversations of one turn. Why: an answer that can be
    copied from another turn is learned as a copy, a skill that a single question at inference cannot use, and a
    caption states the targets, their cells and the terrain shares. (Detection alone too was tried on the demo's
    base: a box list gives the count and cells, and a classify question's box can be copied into a detect answer;
    but it did not teach detection, and with fewer passes over the rest, captions and landcover got worse.)"""

    def __init__(self, data: ManifestDataset, turns: int, seed: int = 0, alone: Sequence[str] = ("caption",)) -> None:
        if int(turns) != turns or turns < 1:
            raise ValueError(f"turns must be a positive integer, got {turns!r}")
        self.data = data
        groups: dict[tuple, list[int]] = {}
        for i, rec in enumerate(data.records):
            key = (rec["image"], rec.get("aef")) if rec.get("task") not in alone else ("alone", i)
            groups.setdefault(key, []).append(i)
        rng = np.random.default_rng(seed)
        self.units: list[list[int]] = []
        for members in groups.values():
            members = [members[j] for j in rng.permutation(len(members))]
            self.units += [members[k:k + turns] for k in range(0, len(members), turns)]

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> dict:
        unit = self.units[i]
        item = self.data[unit[0]]
        recs = [self.data.records[j] for j in unit]
        item["turns"] = [(r["question"], r["answer"]) for r in recs]
        item["ids"] = [r["id"] for r in recs]
        return item
