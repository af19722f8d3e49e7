"""Box annotations from COCO JSON, Pascal VOC XML and YOLO txt, all brought to pixel xyxy.

Real labelling exports are messy: one bad entry must not cost the rest of the data set, and a
bad image must never slip through silently. So a reader returns every valid image and, apart,
a :class:`Problem` for each image (or file) it had to leave out; only input that is unusable as
a whole raises :class:`AnnotationError`. Problem reasons are single lines, ready for a
quarantine file.

This module picks the reader; each format family has its own module (``annotation_coco``, ``annotation_voc``,
``annotation_yolo``) and what they share, the records and the checks, is ``annotation_checks``, whose public
names are imported from here as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .annotation_checks import (  # noqa: F401 (re-exported: callers import the records from here)
    AnnotationError,
    ImageAnnotations,
    Obj,
    Problem,
    split_name,
    validate_objects,
)
from .annotation_coco import read_coco
from .annotation_voc import read_voc
from .annotation_yolo import read_yolo

FORMATS = ("coco", "voc", "yolo")


def read_annotations(path, fmt: str = "coco", *, classes: Sequence[str] | None = None,
                     image_sizes: Mapping[str, tuple[int, int]] | None = None,
                     ) -> tuple[dict[str, ImageAnnotations], list[Problem]]:
    """Read one annotation source; returns ``({file_name: ImageAnnotations}, problems)``.

    ``fmt``: ``coco`` (one JSON file), ``voc`` (a directory of XML files, or one file) or ``yolo`` (a directory
    of ``*.txt``, one per image stem). ``classes`` restricts the accepted labels (YOLO: also the class names by
    index). ``image_sizes`` maps a file name or stem to ``(width, height)``: used where the annotation has no
    size; YOLO needs it, and its images are keyed by STEM (``a`` for ``a.png``) so callers match by stem.
    Class names ``label/subtype`` carry a subtype in every format.
    """
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{fmt} annotations not found: {path}")
    classes = None if classes is None else tuple(classes)
    reader = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}[fmt]
    return reader(path, classes, image_sizes)
