"""YOLO txt boxes (one ``class cx cy w h`` file per image stem, normalised) to pixel xyxy.

Why a module of its own: YOLO files hold neither class names nor image sizes, so this reader finds the names
(``classes=``, ``classes.txt`` or a ``data.yaml``) and needs every image's size before one box means a pixel.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from ..text import one_line
from .annotation_checks import (
    AnnotationError,
    ImageAnnotations,
    Obj,
    Problem,
    check_label,
    finish_image,
    size_of,
    split_name,
)


def _yolo_names(dirs, classes) -> list[str]:
    if classes is not None:
        return list(classes)
    for d in dirs:
        f = d / "classes.txt"
        if f.is_file():
            return [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for yname in ("data.yaml", "dataset.yaml"):
            f = d / yname
            if f.is_file():
                try:
                    names = (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("names")
                except (yaml.YAMLError, AttributeError) as e:
                    raise AnnotationError(one_line(f"cannot read class names from {f}: {e}")) from None
                if isinstance(names, dict) and sorted(names) == list(range(len(names))):
                    return [str(names[i]) for i in range(len(names))]
                if isinstance(names, list):
                    return [str(n) for n in names]
                raise AnnotationError(f"{f} has no usable 'names' list or 0..n-1 dict")
    raise AnnotationError(f"YOLO class names not found: pass classes= or put classes.txt / data.yaml in {dirs[0]}")


def read_yolo(path: Path, classes, image_sizes):
    """YOLO txt files to ``({stem: ImageAnnotations}, problems)``; ``image_sizes`` is required."""
    files = sorted(p for p in path.glob("*.txt") if p.name != "classes.txt") if path.is_dir() else [path]
    if image_sizes is None:
        raise AnnotationError("YOLO boxes are normalised: image_sizes {stem: (width, height)} is required")
    d = path if path.is_dir() else path.parent
    names = _yolo_names([d, d.parent], classes)
    out: dict[str, ImageAnnotations] = {}
    problems: list[Problem] = []
    for f in files:
        stem = f.stem
        reasons: list[str] = []
        size, why = size_of(stem, image_sizes)
        if why or size is None:
            problems.append(Problem(stem, why or f"no image size for {stem!r} in image_sizes"))
            continue
        width, height = size
        objects = []
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(stem, one_line(f"cannot read {f.name}: {e}")))
            continue
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                vals = []
            if len(vals) != 5 or not all(math.isfinite(v) for v in vals) or not vals[0].is_integer():
                reasons.append(f"{f.name} line {n} is not 'class cx cy w h': {line.strip()[:60]!r}")
                continue
            k, cx, cy, w, h = int(vals[0]), *vals[1:]
            if not 0 <= k < len(names):
                reasons.append(f"{f.name} line {n}: class index {k} out of range (0..{len(names) - 1})")
                continue
            label, subtype = split_name(names[k])
            why = check_label(names[k], label, classes)
            if why:
                reasons.append(why)
                continue
            objects.append(Obj(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                (cy + h / 2) * height), label, subtype))
        finish_image(stem, objects, width, height, {}, reasons, image_sizes, problems, out)
    return out, problems
