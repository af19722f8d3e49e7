"""Pascal VOC XML boxes (a directory of XML files, one per image, or one file) to pixel xyxy.

Why a module of its own: VOC pixels are 1-based and inclusive, sizes of 0 x 0 mean "unknown", and one image
annotated in two files must be refused rather than silently take the later file's boxes.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..text import one_line
from .annotation_checks import (
    AnnotationError,
    ImageAnnotations,
    Obj,
    Problem,
    check_label,
    finish_image,
    pos_int,
    split_name,
)


def _text(node, tag):
    el = node.find(tag)
    return None if el is None or el.text is None else el.text.strip()


def read_voc(path: Path, classes, image_sizes):
    """A VOC XML directory (or one file) to ``({file_name: ImageAnnotations}, problems)``."""
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"no .xml files in VOC directory {path}")
    out: dict[str, ImageAnnotations] = {}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as e:
            problems.append(Problem(f.name, one_line(f"cannot parse VOC XML {f.name}: {e}")))
            continue
        name = _text(root, "filename") or os.path.basename(_text(root, "path") or "")
        if not name:
            problems.append(Problem(f.name, f"VOC XML {f.name} has no <filename>"))
            continue
        if name in seen:
            problems.append(Problem(name, f"annotated twice, in {seen[name]} and {f.name}"))
            out.pop(name, None)
            continue
        seen[name] = f.name
        reasons: list[str] = []
        width = height = None
        size = root.find("size")
        if size is not None:
            try:
                w, h = float(_text(size, "width") or 0), float(_text(size, "height") or 0)
            except ValueError:
                reasons.append(f"bad <size> in {f.name}")
            else:  # many tools write 0 x 0 when they do not know: treat as unknown
                width, height = (pos_int(w), pos_int(h)) if w > 0 and h > 0 else (None, None)
        objects = []
        for j, ob in enumerate(root.findall("object")):
            cname = _text(ob, "name") or ""
            label, subtype = split_name(cname)
            subtype = _text(ob, "subtype") or subtype
            bb = ob.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(_text(bb, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError, AttributeError):
                reasons.append(f"object {j} in {f.name} has no valid <bndbox>")
                continue
            why = check_label(cname, label, classes)
            if why:
                reasons.append(why)
                continue
            objects.append(Obj((xmin - 1.0, ymin - 1.0, xmax, ymax), label, subtype))  # 1-based inclusive
        finish_image(name, objects, width, height, {}, reasons, image_sizes, problems, out)
    return out, problems
