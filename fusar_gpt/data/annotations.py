"""Box annotations from COCO JSON, Pascal VOC XML and YOLO txt, all brought to pixel xyxy.

Real labelling exports are messy: one bad entry must not cost the rest of the data set, and a
bad image must never slip through silently. So a reader returns every valid image and, apart,
a :class:`Problem` for each image (or file) it had to leave out; only input that is unusable as
a whole raises :class:`AnnotationError`. Problem reasons are single lines, ready for a
quarantine file.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FORMATS = ("coco", "voc", "yolo")


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


def _is_id(v) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def split_name(name: str) -> tuple[str, str | None]:
    """``"ship/tanker"`` -> ``("ship", "tanker")``: exports that know only flat class names can still carry subtypes."""
    label, _, sub = str(name).strip().partition("/")
    return label.strip(), (sub.strip() or None)


def _finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(box) -> str:
    return "[" + ", ".join(f"{v:g}" if _finite(v) else repr(v) for v in box) + "]"


def _box_problem(o: Obj) -> str | None:
    """What makes a box unusable whatever the image size (non-finite, empty), else None."""
    what = f"box {_fmt(o.box)} of {o.label!r}"
    if len(o.box) != 4 or not all(_finite(v) for v in o.box):
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
    if not (_finite(width) and _finite(height) and width > 0 and height > 0):
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


def _size_of(name: str, image_sizes) -> tuple[tuple[int, int] | None, str | None]:
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
    wh = (_pos_int(size[0]), _pos_int(size[1])) if len(size) == 2 else (None, None)
    return (wh, None) if None not in wh else (None, f"image_sizes gives a bad size {size!r} for {name!r}")


def _pos_int(v) -> int | None:
    if _finite(v) and v > 0 and float(v).is_integer():
        return int(v)
    return None


def _check_label(name: str, label: str, classes) -> str | None:
    if not label:
        return f"empty class name {name!r}"
    if classes is not None and label not in classes and name not in classes:
        return f"unknown category {name!r} (expected one of {', '.join(classes)})"
    return None


def _finish(name, objects, width, height, extra, reasons, image_sizes, problems, out) -> None:
    """Common tail of every reader: size fallback, box validation, then keep the image or report it."""
    if not reasons and (width is None or height is None):
        size, why = _size_of(name, image_sizes)
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
        problems.append(Problem(name, _one_line("; ".join(reasons[:3]) + more)))
    else:
        out[name] = ImageAnnotations(name, objects, width, height, extra)


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
    reader = {"coco": _read_coco, "voc": _read_voc, "yolo": _read_yolo}[fmt]
    return reader(path, classes, image_sizes)


def _read_coco(path: Path, classes, image_sizes):
    if not path.is_file():
        raise AnnotationError(f"COCO annotations must be one JSON file, got a directory: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(_one_line(f"cannot parse COCO file {path}: {e}")) from None
    except RecursionError:  # 100,000 nested lists: the decoder's stack, not a traceback
        raise AnnotationError(f"cannot parse COCO file {path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"COCO file {path} is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"COCO file {path} has no {key!r} list")
    problems: list[Problem] = []
    cats: dict = {}
    dup_cats = set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name"), str):
            problems.append(Problem(None, _one_line(f"categories[{i}] needs an id and a name, got {c!r}")))
        elif c["id"] in cats:
            dup_cats.add(c["id"])
        else:
            cats[c["id"]] = c["name"]
    for cid in dup_cats:  # which name is right cannot be known: treat the id as unknown
        problems.append(Problem(None, f"category id {cid!r} is defined more than once"))
        del cats[cid]

    images: dict = {}  # id -> [entry, objects, reasons]
    by_name: dict[str, list] = {}
    bad_ids = set()
    for i, im in enumerate(data["images"]):
        name = im.get("file_name") if isinstance(im, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(Problem(None, _one_line(f"images[{i}] has no file_name")))
            if isinstance(im, dict) and _is_id(im.get("id")):
                bad_ids.add(im["id"])
            continue
        rec = [im, [], []]
        by_name.setdefault(name, []).append(rec)
        if not _is_id(im.get("id")):
            rec[2].append(f"image entry has no usable id: {im.get('id')!r}")
        elif im["id"] in images:
            rec[2].append(f"image id {im['id']!r} is used by more than one image")
            images[im["id"]][2].append(f"image id {im['id']!r} is used by more than one image")
        else:
            images[im["id"]] = rec
    for recs in by_name.values():
        if len(recs) > 1:
            for rec in recs:
                rec[2].append(f"{len(recs)} image entries share this file_name")

    as_text = {str(i): rec for i, rec in images.items()}
    for k, a in enumerate(data["annotations"]):
        img_id = a.get("image_id") if isinstance(a, dict) else None
        if not _is_id(img_id) or img_id not in images:
            near = as_text.get(str(img_id)) if _is_id(img_id) else None
            if near is not None:  # "1" for 1: pycocotools would drop it and the image build with a target less
                near[2].append(f"annotations[{k}] refers to image_id {img_id!r}, a {type(img_id).__name__}, but "
                               f"the image's id is {near[0]['id']!r}, a {type(near[0]['id']).__name__}")
            elif not _is_id(img_id) or img_id not in bad_ids:
                problems.append(Problem(None, _one_line(f"annotations[{k}] refers to unknown image_id {img_id!r}")))
            continue
        rec = images[img_id]
        bbox = a.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            rec[2].append(f"annotations[{k}] bbox is not 4 finite numbers: {bbox!r}")
            continue
        if "category_id" not in a:
            rec[2].append(f"annotations[{k}] has no category_id")
            continue
        if not _is_id(a["category_id"]) or a["category_id"] not in cats:
            rec[2].append(f"annotations[{k}] has unknown category id {a['category_id']!r}")
            continue
        cname = cats[a["category_id"]]
        label, subtype = split_name(cname)
        attrs = a.get("attributes")
        sub = a.get("subtype") or (attrs.get("subtype") if isinstance(attrs, dict) else None)
        if sub is not None:
            subtype = str(sub).strip() or None
        why = _check_label(cname, label, classes)
        if why:
            rec[2].append(why)
            continue
        x, y, w, h = bbox
        rec[1].append(Obj((x, y, x + w, y + h), label, subtype))

    out: dict[str, ImageAnnotations] = {}
    for recs in by_name.values():
        for im, objects, reasons in recs:
            w, h = im.get("width"), im.get("height")
            width, height = _pos_int(w), _pos_int(h)
            if (w, h) != (None, None) and not (width and height):
                reasons.append(f"bad image size {w!r} x {h!r}")
            extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
            _finish(im["file_name"], objects, width, height, extra, reasons, image_sizes, problems, out)
    return out, problems


def _text(node, tag):
    el = node.find(tag)
    return None if el is None or el.text is None else el.text.strip()


def _read_voc(path: Path, classes, image_sizes):
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
            problems.append(Problem(f.name, _one_line(f"cannot parse VOC XML {f.name}: {e}")))
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
                width, height = (_pos_int(w), _pos_int(h)) if w > 0 and h > 0 else (None, None)
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
            why = _check_label(cname, label, classes)
            if why:
                reasons.append(why)
                continue
            objects.append(Obj((xmin - 1.0, ymin - 1.0, xmax, ymax), label, subtype))  # 1-based inclusive
        _finish(name, objects, width, height, {}, reasons, image_sizes, problems, out)
    return out, problems


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
                    raise AnnotationError(_one_line(f"cannot read class names from {f}: {e}")) from None
                if isinstance(names, dict) and sorted(names) == list(range(len(names))):
                    return [str(names[i]) for i in range(len(names))]
                if isinstance(names, list):
                    return [str(n) for n in names]
                raise AnnotationError(f"{f} has no usable 'names' list or 0..n-1 dict")
    raise AnnotationError(f"YOLO class names not found: pass classes= or put classes.txt / data.yaml in {dirs[0]}")


def _read_yolo(path: Path, classes, image_sizes):
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
        size, why = _size_of(stem, image_sizes)
        if why or size is None:
            problems.append(Problem(stem, why or f"no image size for {stem!r} in image_sizes"))
            continue
        width, height = size
        objects = []
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(stem, _one_line(f"cannot read {f.name}: {e}")))
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
            why = _check_label(names[k], label, classes)
            if why:
                reasons.append(why)
                continue
            objects.append(Obj(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                (cy + h / 2) * height), label, subtype))
        _finish(stem, objects, width, height, {}, reasons, image_sizes, problems, out)
    return out, problems
