"""Question templates, the turn types, and the answer builders of the per-object tasks (count, locate, classify,
detect); the scene tasks (caption, landcover) are in ``captions.py``, the registry tying them together in ``tasks.py``.

Questions vary in wording so the model learns the task rather than one sentence; answers never vary
(DESIGN.md section 3), so scoring can be exact. Wording is chosen by a stable hash of the seed, never
Python's salted ``hash()``: a dataset rebuilt in another process gets the same questions.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CELLS = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")

COUNT_QUESTIONS = (
    "How many {plural} are in this image?",
    "Count the {plural} in this SAR image.",
    "How many {plural} can you see? Answer with a number.",
    "What is the number of {plural} in this scene?",
    "Count every {singular} visible in the image and give the total.",
)
LOCATE_QUESTIONS = (
    "In which cells of a 3x3 grid over the image are there {plural}?",
    "Divide the image into a 3x3 grid. Which cells contain at least one {singular}?",
    "Where are the {plural} in this image? Answer with 3x3 grid cells "
    "(top-left, top, top-right, left, center, right, bottom-left, bottom, bottom-right).",
    "Which parts of the image, on a 3x3 grid, hold {plural}?",
    "List the 3x3 grid cells of this SAR image that contain {plural}.",
)
CLASSIFY_QUESTIONS = (
    "What is the object at {box}? Answer {choices}.",
    "Classify the target in the box {box}: {choices}?",
    "Which class is the target inside {box}? Choose from {choices}.",
    "Look at the region {box}. What kind of target is it, {choices}?",
)
FINE_QUESTIONS = (
    "What type of {label} is at {box}? Answer {choices}.",
    "Which kind of {label} is the target in the box {box}? Choose from {choices}.",
    "Identify the fine-grained class of the {label} at {box}: {choices}?",
    "Look at the {label} at {box}. Which subtype is it, {choices}?",
)
DETECT_QUESTIONS = (
    "Detect all {plural} in this image and output their bounding boxes in JSON.",
    "Find every {singular} in the image and give each one as bbox_2d [x1, y1, x2, y2].",
    "Locate the {plural} with bounding boxes.",
    "Output the bounding box of each {singular} in this SAR image as JSON.",
    "Where exactly are the {plural}? Return their bbox_2d boxes.",
)
CAPTION_QUESTIONS = (
    "Describe this SAR image.",
    "Describe the terrain, the layout and the targets in this SAR image.",
    "What does this scene contain? Give a short description.",
    "Write a short description of this SAR image: land cover, layout and targets.",
    "Summarise what this SAR image shows.",
)
LANDCOVER_QUESTIONS = (
    "What is the dominant land cover in this image?",
    "Which land-cover class covers most of this scene?",
    "What kind of surface makes up most of this SAR image?",
    "Name the main land cover of this scene.",
)
# Dynamic World classes as landcover answers (canonical words, one per class).
LANDCOVER_WORDS = ("water", "trees", "grass", "flooded vegetation", "crops", "shrub and scrub", "built", "bare",
                   "snow and ice")


@dataclass(frozen=True)
class FrameObj:
    """A target in the square model frame: integer xyxy (may extend past the frame), label, optional subtype."""

    box: tuple[int, int, int, int]
    label: str
    subtype: str | None = None


@dataclass(frozen=True)
class SceneInfo:
    """What a caption may say besides the targets. ``landcover``: class -> share (fractions; values summing
    to more than 1.5 are read as percentages). ``layout``: the dominant class of each 3x3 cell, row-major."""

    landcover: Mapping[str, float] | None = None
    layout: Sequence[str | None] | None = None
    sensor: str | None = None
    date: str | None = None
    place: str | None = None


@dataclass(frozen=True)
class QA:
    task: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Ask:
    """What every answer builder of one image is given besides its objects and frame (see ``build_qa``)."""

    seed: object
    scene: SceneInfo | None = None
    classes: tuple[str, ...] = ("ship", "plane")
    subtypes: Mapping[str, Sequence[str]] | None = None
    max_classify: int = 3


def stable_hash(seed, *keys) -> int:
    """A 64-bit hash of the seed and keys that is the same in every process (unlike the salted ``hash()``)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, (seed, *keys))).encode()).digest()[:8], "big")


def pick(options: Sequence[str], seed, *keys) -> str:
    """The option the seed and keys choose, stably (:func:`stable_hash`)."""
    return options[stable_hash(seed, *keys) % len(options)]


def plural(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def join_words(items: Sequence[str], conj: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c`` (``conj`` instead of ``and`` when given)."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conj} {items[-1]}"


def cell_of(box, frame: int) -> str:
    """The 3x3 cell (``CELLS``) holding the box centre. A centre exactly on a border belongs to the later cell
    (right / lower); centres past the frame fall in the edge cells. Exact integer arithmetic for int boxes."""
    x1, y1, x2, y2 = box
    col = 0 if 3 * (x1 + x2) < 2 * frame else 1 if 3 * (x1 + x2) < 4 * frame else 2
    row = 0 if 3 * (y1 + y2) < 2 * frame else 1 if 3 * (y1 + y2) < 4 * frame else 2
    return CELLS[3 * row + col]


def cells_of(objects, frame) -> list[str]:
    """The cells holding the objects' centres, in row-major order, each once: the locate answer's cells."""
    found = {cell_of(o.box, frame) for o in objects}
    return [c for c in CELLS if c in found]


def format_boxes(objects, label: str | None = None) -> str:
    """Qwen2.5-VL JSON ``[{"bbox_2d": [x1, y1, x2, y2], "label": "ship"}]`` of the objects (only ``label`` if
    given), in reading order (by y1, then x1), or ``None``. Takes FrameObj or ``{"bbox_2d", "label"}`` dicts."""
    items = []
    for o in objects:
        box, lab = (o["bbox_2d"], o.get("label", "")) if isinstance(o, Mapping) else (o.box, o.label)
        if label is None or lab == label:
            items.append({"bbox_2d": [int(round(v)) for v in box], "label": str(lab)})
    items.sort(key=lambda d: (d["bbox_2d"][1], d["bbox_2d"][0], d["bbox_2d"][3], d["bbox_2d"][2], d["label"]))
    return json.dumps(items, ensure_ascii=False) if items else "None"


# ---------------------------------------------------------------- answer builders: (objects, frame, ask) -> turns
def _per_class(task: str, templates: Sequence[str], answer, objs, ask: Ask) -> list[QA]:
    """One turn per class in ``ask.classes`` (absent classes too: the negatives a detector needs)."""
    out = []
    for c in ask.classes:
        q = pick(templates, ask.seed, task, c).format(plural=plural(c), singular=c)
        out.append(QA(task, q, answer([o for o in objs if o.label == c]), {"class": c}))
    return out


def count_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    return _per_class("count", COUNT_QUESTIONS, lambda mine: str(len(mine)), objs, ask)


def locate_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    return _per_class("locate", LOCATE_QUESTIONS, lambda mine: ", ".join(cells_of(mine, frame)) or "None", objs, ask)


def detect_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    return _per_class("detect", DETECT_QUESTIONS, format_boxes, objs, ask)


def classify_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    """Up to ``ask.max_classify`` objects whose label is a class (a seeded choice): coarse with two or more classes,
    fine with a subtype and two or more options (``ask.subtypes[label]``, else the subtypes seen in this image)."""
    seed, classes, subtypes = ask.seed, ask.classes, ask.subtypes
    eligible = [i for i, o in enumerate(objs) if o.label in classes]
    chosen = sorted(sorted(eligible, key=lambda i: stable_hash(seed, "classify", i))[:ask.max_classify])
    out = []
    for i in chosen:
        o, box = objs[i], "[" + ", ".join(str(v) for v in objs[i].box) + "]"
        if len(classes) >= 2:
            q = pick(CLASSIFY_QUESTIONS, seed, "classify", i).format(box=box, choices=join_words(classes, "or"))
            out.append(QA("classify", q, o.label, {"box": list(o.box), "level": "coarse", "class": o.label,
                                                   "choices": list(classes)}))
        if o.subtype is None:
            continue
        if subtypes is not None and o.label in subtypes:
            options = sorted(set(subtypes[o.label]))
            if o.subtype not in options:
                raise ValueError(f"subtype {o.subtype!r} of {o.label!r} is not in subtypes[{o.label!r}] {options}")
        else:
            options = sorted({p.subtype for p in objs if p.label == o.label and p.subtype})
        if len(options) >= 2:
            q = pick(FINE_QUESTIONS, seed, "fine", i).format(label=o.label, box=box, choices=join_words(options, "or"))
            out.append(QA("classify", q, o.subtype, {"box": list(o.box), "level": "fine", "class": o.label,
                                                     "choices": options}))
    return out
