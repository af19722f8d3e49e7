"""COCO JSON boxes (one file: images, annotations, categories) to pixel xyxy.

Why a module of its own: COCO is the one format whose entries refer to each other by id, so most of its
problems are cross-references (an image id used twice, an annotation naming an unknown image or category, a
"1" for 1) and each must land on the image it spoils, or on the file, not end the read.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..text import one_line
from .annotation_checks import (
    AnnotationError,
    ImageAnnotations,
    Obj,
    Problem,
    check_label,
    finish_image,
    finite,
    is_id,
    pos_int,
    split_name,
)


def read_coco(path: Path, classes, image_sizes):
    """One COCO JSON file to ``({file_name: ImageAnnotations}, problems)``; see :func:`read_annotations`."""
    if not path.is_file():
        raise AnnotationError(f"COCO annotations must be one JSON file, got a directory: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(one_line(f"cannot parse COCO file {path}: {e}")) from None
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
        if not isinstance(c, dict) or not is_id(c.get("id")) or not isinstance(c.get("name"), str):
            problems.append(Problem(None, one_line(f"categories[{i}] needs an id and a name, got {c!r}")))
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
            problems.append(Problem(None, one_line(f"images[{i}] has no file_name")))
            if isinstance(im, dict) and is_id(im.get("id")):
                bad_ids.add(im["id"])
            continue
        rec = [im, [], []]
        by_name.setdefault(name, []).append(rec)
        if not is_id(im.get("id")):
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
        if not is_id(img_id) or img_id not in images:
            near = as_text.get(str(img_id)) if is_id(img_id) else None
            if near is not None:  # "1" for 1: pycocotools would drop it and the image build with a target less
                near[2].append(f"annotations[{k}] refers to image_id {img_id!r}, a {type(img_id).__name__}, but "
                               f"the image's id is {near[0]['id']!r}, a {type(near[0]['id']).__name__}")
            elif not is_id(img_id) or img_id not in bad_ids:
                problems.append(Problem(None, one_line(f"annotations[{k}] refers to unknown image_id {img_id!r}")))
            continue
        rec = images[img_id]
        bbox = a.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(finite(v) for v in bbox)):
            rec[2].append(f"annotations[{k}] bbox is not 4 finite numbers: {bbox!r}")
            continue
        if "category_id" not in a:
            rec[2].append(f"annotations[{k}] has no category_id")
            continue
        if not is_id(a["category_id"]) or a["category_id"] not in cats:
            rec[2].append(f"annotations[{k}] has unknown category id {a['category_id']!r}")
            continue
        cname = cats[a["category_id"]]
        label, subtype = split_name(cname)
        attrs = a.get("attributes")
        sub = a.get("subtype") or (attrs.get("subtype") if isinstance(attrs, dict) else None)
        if sub is not None:
            subtype = str(sub).strip() or None
        why = check_label(cname, label, classes)
        if why:
            rec[2].append(why)
            continue
        x, y, w, h = bbox
        rec[1].append(Obj((x, y, x + w, y + h), label, subtype))

    out: dict[str, ImageAnnotations] = {}
    for recs in by_name.values():
        for im, objects, reasons in recs:
            w, h = im.get("width"), im.get("height")
            width, height = pos_int(w), pos_int(h)
            if (w, h) != (None, None) and not (width and height):
                reasons.append(f"bad image size {w!r} x {h!r}")
            extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
            finish_image(im["file_name"], objects, width, height, extra, reasons, image_sizes, problems, out)
    return out, problems
