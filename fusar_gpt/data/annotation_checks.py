"""What every annotation reader shares: the records it returns (:class:`Obj`, :class:`ImageAnnotations`,
:class:`Problem`) and the checks that decide whether an image is kept or quarantined.

Why one module for the three formats: a box, a label or a size is judged the same way whichever file it came
from, so the same bad image gets the same one-line reason from COCO, VOC or YOLO, and the builder re-checks
boxes against the pixels it actually read with the same :func:`validate_objects`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..text import one_line


class AnnotationError(ValueError):
    """The whole annotation input is unusable (unparseable COCO file, missing directory, no class names)."""


@dataclass(frozen=True)
class Obj:
    """One annotated target: pixel xyxy in the source image (x right, y down), coarse label, optional subtype."""

    box: tuple[float, float, float, float]
    label: str
    subtype: str | None = None


@dataclass
class ImageAnnotations:
    file_name: str
    objects: list[Obj]
    width: int | None = None
    height: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Why an image (or, with ``image=None``, part of a file) was left out."""

    image: str | None
    reason: str


def is_id(v) -> bool:
    """A usable COCO id: an int or a string (not a bool, which JSON ``true`` would give)."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def split_name(name: str) -> tuple[str, str | None]:
    """``"ship/tanker"`` -> ``("ship", "tanker")``: exports that know only flat class names can still carry subtypes."""
    label, _, sub = str(name).strip().partition("/")
    return label.strip(), (sub.strip() or None)


def finite(v) -> bool:
    """A real, finite number (not a bool, a string or NaN)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(box) -> str:
    return "[" + ", ".join(f"{v:g}" if finite(v) else repr(v) for v in box) + "]"


def _box_problem(o: Obj) -> str | None:
    """What makes a box unusable whatever the image size (non-finite, empty), else None."""
    what = f"box {_fmt(o.box)} of {o.label!r}"
    if len(o.box) != 4 or not all(finite(v) for v in o.box):
        return f"{what} is not 4 finite numbers"
    x1, y1, x2, y2 = o.box
    return f"{what} is empty (x2 <= x1 or y2 <= y1)" if x2 <= x1 or y2 <= y1 else None


def validate_objects(objects: Sequence[Obj], width: int, height: int) -> tuple[list[Obj], str | None]:
    """Clip boxes that stick out of the ``width`` x ``height`` image; name the first box that cannot be used.

    A box partly outside is a labelling slip worth keeping; one entirely outside, empty or non-finite means
    the image and its labels do not belong together, so the caller quarantines the whole image (returned
    objects are then the input, unchanged).
    """
    objects = list(objects)
    if not (finite(width) and finite(height) and width > 0 and height > 0):
        return objects, f"image size {width!r} x {height!r} is not positive"
    out = []
    for o in objects:
        why = _box_problem(o)
        if why:
            return objects, why
        x1, y1, x2, y2 = (float(v) for v in o.box)
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            return objects, f"box {_fmt(o.box)} of {o.label!r} lies outside the {width}x{height} image"
        out.append(Obj((max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)), o.label, o.subtype))
    return out, None


def _check_objects(objects: list[Obj], width, height) -> tuple[list[Obj], str | None]:
    """Full validation when the size is known; without it only the checks that need no size."""
    if width is not None and height is not None:
        return validate_objects(objects, width, height)
    return objects, next((why for why in map(_box_problem, objects) if why), None)


def size_of(name: str, image_sizes) -> tuple[tuple[int, int] | None, str | None]:
    """Look a size up by exact name, then base name, then stem; two different sizes for one stem is an error."""
    if not image_sizes:
        return None, None
    stem = Path(name).stem
    keys = [k for k in (name, os.path.basename(name)) if k in image_sizes]
    as_t = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,)
    found = {as_t(image_sizes[keys[0]])} if keys else {as_t(v) for k, v in image_sizes.items()
                                                       if Path(str(k)).stem == stem}
    if len(found) > 1:
        return None, f"image_sizes has {len(found)} different sizes for stem {stem!r}"
    if not found:
        return None, None
    size = found.pop()
    wh = (pos_int(size[0]), pos_int(size[1])) if len(size) == 2 else (None, None)
    return (wh, None) if None not in wh else (None, f"image_sizes gives a bad size {size!r} for {name!r}")


def pos_int(v) -> int | None:
    """``v`` as an int when it is a positive whole number (``640.0`` too), else None."""
    if finite(v) and v > 0 and float(v).is_integer():
        return int(v)
    return None


def check_label(name: str, label: str, classes) -> str | None:
    """Why class ``name`` (coarse ``label``) is refused: empty, or not among ``classes``; else None."""
    if not label:
        return f"empty class name {name!r}"
    if classes is not None and label not in classes and name not in classes:
        return f"unknown category {name!r} (expected one of {', '.join(classes)})"
    return None


def finish_image(name, objects, width, height, extra, reasons, image_sizes, problems, out) -> None:
    """Common tail of every reader: size fallback, box validation, then keep the image or report it."""
    if not reasons and (width is None or height is None):
        size, why = size_of(name, image_sizes)
        if why:
            reasons.append(why)
        elif size is not None:
            width, height = size
    if not reasons:
        objects, why = _check_objects(objects, width, height)
        if why:
            reasons.append(why)
    if reasons:
        more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
        problems.append(Problem(name, one_line("; ".join(reasons[:3]) + more)))
    else:
        out[name] = ImageAnnotations(name, objects, width, height, extra)
