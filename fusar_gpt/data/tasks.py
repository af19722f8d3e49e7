"""Questions and canonical answers for the five tasks, and the parsers that read answers back.

Builders and parsers live together because they are one contract: every answer a builder writes must
be read back to the same value by both the lenient parser of model output and the strict parser of
the truth (the tests check this property), so training targets and scoring cannot drift apart.
Questions vary in wording so the model learns the task rather than one sentence; answers never vary
(DESIGN.md section 3), so scoring can be exact. Wording is chosen by a stable hash of the seed, never
Python's salted ``hash()``: a dataset rebuilt in another process gets the same questions.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TASKS = ("caption", "count", "locate", "classify", "detect", "landcover")
# The paper's five; ``landcover`` (the dominant land cover of the scene) is ours: SAR backscatter barely tells
# grass from crops from scrub (real S1 VV means within 0.5 dB of each other), AEF vectors tell them apart, so
# it is the question family on which the geographic prior has to make the difference. Opt-in.
PAPER_TASKS = TASKS[:5]
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
# Dynamic World class ids -> words a caption can use.
COVER_NAMES = {"water": "water", "trees": "trees", "grass": "grass", "flooded_vegetation": "flooded vegetation",
               "crops": "cropland", "shrub_and_scrub": "shrub and scrub", "built": "built-up land",
               "bare": "bare ground or paved surfaces", "snow_and_ice": "snow and ice"}


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


def _stable(seed, *keys) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, (seed, *keys))).encode()).digest()[:8], "big")


def _pick(options: Sequence[str], seed, *keys) -> str:
    return options[_stable(seed, *keys) % len(options)]


def plural(word: str) -> str:
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def _join(items: Sequence[str], conj: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conj} {items[-1]}"


def _box_text(box) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


def cell_of(box, frame: int) -> str:
    """The 3x3 cell (``CELLS``) holding the box centre. A centre exactly on a border belongs to the later cell
    (right / lower); centres past the frame fall in the edge cells. Exact integer arithmetic for int boxes."""
    x1, y1, x2, y2 = box
    col = 0 if 3 * (x1 + x2) < 2 * frame else 1 if 3 * (x1 + x2) < 4 * frame else 2
    row = 0 if 3 * (y1 + y2) < 2 * frame else 1 if 3 * (y1 + y2) < 4 * frame else 2
    return CELLS[3 * row + col]


def _cells(objects, frame) -> list[str]:
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


def _check(objects, frame, tasks, classes, max_classify) -> list[FrameObj]:
    if not isinstance(frame, numbers.Integral) or isinstance(frame, bool) or frame <= 0:
        raise ValueError(f"frame must be a positive integer, got {frame!r}")
    bad = [t for t in tasks if t not in TASKS]
    if bad or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {', '.join(TASKS)}, got {list(tasks)}")
    if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct non-empty names, got {list(classes)}")
    if not isinstance(max_classify, int) or max_classify < 0:
        raise ValueError(f"max_classify must be a non-negative integer, got {max_classify!r}")
    out = []
    for o in objects:
        box = tuple(getattr(o, "box", ()))
        if len(box) != 4 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in box):
            raise ValueError(f"object box must be 4 integers in the model frame, got {box!r}")
        label, subtype = getattr(o, "label", None), getattr(o, "subtype", None)
        if not isinstance(label, str) or not label or (subtype is not None and not isinstance(subtype, str)):
            raise ValueError(f"object needs a non-empty label and a str or None subtype, got {o!r}")
        out.append(FrameObj(tuple(int(v) for v in box), label, subtype or None))
    return out


def build_qa(objects: Sequence[FrameObj], frame: int, tasks: Sequence[str] = PAPER_TASKS, *, seed,
             scene: SceneInfo | None = None, classes: Sequence[str] = ("ship", "plane"),
             subtypes: Mapping[str, Sequence[str]] | None = None, max_classify: int = 3) -> list[QA]:
    """All question/answer turns of one image, task by task in ``tasks`` order.

    landcover asks once when the scene's land-cover shares are known (:func:`dominant_cover`), else not at all.
    count, locate and detect ask once per class in ``classes`` (absent classes give ``0`` / ``None``: the
    negatives a detector needs). classify asks about up to ``max_classify`` objects whose label is in
    ``classes`` (a seeded choice): coarse when there are two or more classes, fine when the object has a
    subtype and there are two or more options: ``subtypes[label]`` (pass it dataset-wide), else the subtypes
    seen in this image. A subtype missing from ``subtypes[label]`` is a ValueError. ``seed`` is any str/int.
    """
    tasks, classes = tuple(tasks), tuple(classes)
    objs = _check(objects, frame, tasks, classes, max_classify)
    out: list[QA] = []
    for task in tasks:
        if task == "caption":
            out.append(QA(task, _pick(CAPTION_QUESTIONS, seed, task),
                          caption_text(objs, frame, scene, seed=seed, classes=classes), {}))
        elif task == "classify":
            out += _classify(objs, seed, classes, subtypes, max_classify)
        elif task == "landcover":
            answer = dominant_cover((scene or SceneInfo()).landcover)
            if answer is not None:
                out.append(QA(task, _pick(LANDCOVER_QUESTIONS, seed, task), answer,
                              {"choices": list(LANDCOVER_WORDS)}))
        else:
            templates = {"count": COUNT_QUESTIONS, "locate": LOCATE_QUESTIONS, "detect": DETECT_QUESTIONS}[task]
            for c in classes:
                mine = [o for o in objs if o.label == c]
                answer = (str(len(mine)) if task == "count" else format_boxes(mine) if task == "detect"
                          else ", ".join(_cells(mine, frame)) or "None")
                q = _pick(templates, seed, task, c).format(plural=plural(c), singular=c)
                out.append(QA(task, q, answer, {"class": c}))
    return out


def _classify(objs, seed, classes, subtypes, max_classify) -> list[QA]:
    eligible = [i for i, o in enumerate(objs) if o.label in classes]
    chosen = sorted(sorted(eligible, key=lambda i: _stable(seed, "classify", i))[:max_classify])
    out = []
    for i in chosen:
        o, box = objs[i], _box_text(objs[i].box)
        if len(classes) >= 2:
            q = _pick(CLASSIFY_QUESTIONS, seed, "classify", i).format(box=box, choices=_join(classes, "or"))
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
            q = _pick(FINE_QUESTIONS, seed, "fine", i).format(label=o.label, box=box, choices=_join(options, "or"))
            out.append(QA("classify", q, o.subtype, {"box": list(o.box), "level": "fine", "class": o.label,
                                                     "choices": options}))
    return out


def _shares(landcover) -> dict[str, float]:
    shares = {}
    for k, v in landcover.items():
        if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
            raise ValueError(f"landcover share of {k!r} must be a finite non-negative number, got {v!r}")
        shares[str(k)] = float(v)
    if sum(shares.values()) > 1.5:
        shares = {k: v / 100 for k, v in shares.items()}
    return shares


def dominant_cover(landcover) -> str | None:
    """The landcover answer: the word (``LANDCOVER_WORDS``) of the Dynamic World class with the largest share;
    ties go to the class first in Dynamic World order. None without shares; an unknown class is a ValueError."""
    if not landcover:
        return None
    shares = _shares(landcover)
    keys = [k.replace("_", " ") for k in shares]
    bad = [k for k in keys if k not in LANDCOVER_WORDS]
    if bad:
        raise ValueError(f"landcover class {bad[0]!r} is not a Dynamic World class ({', '.join(LANDCOVER_WORDS)})")
    share = dict(zip(keys, shares.values()))
    best = max(LANDCOVER_WORDS, key=lambda w: (share.get(w, -1.0), -LANDCOVER_WORDS.index(w)))
    return best if share.get(best, 0.0) > 0 else None


def _cover(k) -> str:
    return COVER_NAMES.get(k, str(k).replace("_", " "))


def _terrain(landcover, seed) -> list[str]:
    shares = _shares(landcover)
    ranked = sorted(((k, round(100 * v)) for k, v in shares.items()), key=lambda kv: (-kv[1], kv[0]))
    major = [(k, p) for k, p in ranked if p >= 5][:4]
    minor = [_cover(k) for k, p in ranked if p >= 1 and (k, p) not in major]
    if not major:
        return []
    parts = _join([f"{p}% {_cover(k)}" for k, p in major])
    rest = f", with small amounts of {_join(minor)}" if minor else ""
    t = _pick(("The terrain is about {}{}.", "By area, the scene is roughly {}{}.", "Land cover: about {}{}.",
               "The land cover is about {}{}."), seed, "terrain")
    return [t.format(parts, rest)]


def _layout(layout, seed) -> list[str]:
    layout = list(layout)
    if len(layout) != 9:
        raise ValueError(f"layout must name 9 cells (3x3, row-major), got {len(layout)}")
    groups: dict[str, list[str]] = {}
    for cell, k in zip(CELLS, layout):
        if k is not None:
            groups.setdefault(str(k), []).append(cell)
    out = []
    for k, cells in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        name = _cover(k)
        if len(cells) == 9:
            out.append(f"The whole scene is dominated by {name}.")
        elif len(cells) >= 6:
            others = [c for c in CELLS if c not in cells]
            out.append(f"Most of the scene is dominated by {name}, except the {_join(others)}.")
        else:  # phrasings that need no verb agreement with the cover name ("trees", "water")
            t = _pick(("The {c} {be} dominated by {n}.", "The {c} of the scene {be} mostly {n}.",
                       "The main cover in the {c} is {n}.", "In grid terms, the {c} {be} mostly {n}."),
                      seed, "layout", k)
            out.append(t.format(n=name, c=_join(cells), be="is" if len(cells) == 1 else "are"))
    return out


def _targets(objs, frame, seed, classes) -> list[str]:
    labels = [c for c in classes if any(o.label == c for o in objs)]
    labels += sorted({o.label for o in objs} - set(classes))
    out = []
    for lab in labels:
        mine = [o for o in objs if o.label == lab]
        n = len(mine)
        subs = Counter(o.subtype for o in mine if o.subtype)
        sub = " (" + ", ".join(f"{c} {s}" for s, c in sorted(subs.items(), key=lambda kv: (-kv[1], kv[0]))) + ")"
        t = _pick(("There {be} {n} {noun}{sub} in the {c}.", "The image contains {n} {noun}{sub}, located in the {c}.",
                   "{n} {noun}{sub} can be seen in the {c}.", "Targets: {n} {noun}{sub} in the {c}."),
                  seed, "targets", lab)
        out.append(t.format(be="is" if n == 1 else "are", n=n, noun=lab if n == 1 else plural(lab),
                            sub=sub if subs else "", c=_join(_cells(mine, frame))))
    missing = [plural(c) for c in classes if c not in labels]
    if missing:
        t = _pick(("No {} are visible.", "There are no {}.", "No {} can be seen.", "The image shows no {}."),
                  seed, "absent")
        out.append(t.format(_join(missing, "or")))
    return out


def caption_text(objects: Sequence[FrameObj], frame: int, scene: SceneInfo | None = None, *, seed,
                 classes: Sequence[str] = ("ship", "plane")) -> str:
    """Stage-I knowledge text: acquisition, terrain shares, layout in grid terms, then the targets and where they
    are (absent ``classes`` said too). Without a scene only the targets are described."""
    s = scene or SceneInfo()
    out = []
    subject = f"{s.sensor} SAR image" if s.sensor else "SAR image"
    where = f" of {s.place}" if s.place else ""
    if s.date:
        out.append(_pick(("This {s}{w} was acquired on {d}.", "Acquisition date of this {s}{w}: {d}."),
                         seed, "intro").format(s=subject, w=where, d=s.date))
    elif s.place or s.sensor:
        out.append(f"This {subject}{where} is described below.")
    if s.landcover:
        out += _terrain(s.landcover, seed)
    if s.layout is not None:
        out += _layout(s.layout, seed)
    out += _targets(list(objects), frame, seed, tuple(classes))
    return " ".join(out)


def _template_re(template: str) -> re.Pattern:
    parts = re.split(r"\{[a-z_]*\}", " ".join(template.lower().split()))
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\s*")


_TASK_TEMPLATES = {"count": COUNT_QUESTIONS, "locate": LOCATE_QUESTIONS,
                   "classify": CLASSIFY_QUESTIONS + FINE_QUESTIONS, "detect": DETECT_QUESTIONS,
                   "caption": CAPTION_QUESTIONS, "landcover": LANDCOVER_QUESTIONS}
_TASK_RES = [(task, _template_re(t)) for task, ts in _TASK_TEMPLATES.items() for t in ts]


def task_of_question(question) -> str | None:
    """The task of a question asked with one of our templates (as ``build`` writes them), or None: what scores a
    record that carries no ``task`` (the authors' manifests have none)."""
    if not isinstance(question, str):
        return None
    q = " ".join(question.replace("<image>", " ").lower().split())
    found = {task for task, rx in _TASK_RES if rx.fullmatch(q)}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- parsers of model output (lenient)
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_COUNT_RE = re.compile(
    r"(?P<neg>(?<![\w.])-)?(?<![A-Za-z_\d])(?P<num>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?"
    rf"|\b(?P<word>{'|'.join(list(_TENS) + _UNITS[::-1])})(?:[\s-]+(?P<unit>{'|'.join(_UNITS[1:10])}))?\b"
    r"|\b(?P<none>none|nothing|no(?=\s+[a-z]))\b", re.IGNORECASE)


def parse_count(text) -> int | None:
    """First number in the text: digits, number words (zero..ninety-nine), ``none`` / ``no ships`` = 0.
    A negative or fractional first number is garbage (None)."""
    m = _COUNT_RE.search(text) if isinstance(text, str) else None
    if m is None or m["neg"]:
        return None
    if m["none"]:
        return 0
    if m["num"]:
        if m["frac"] and int(m["frac"][1:]) != 0:
            return None
        return int(m["num"].replace(",", ""))
    word = m["word"].lower()
    if word in _TENS:
        return _TENS[word] + (_UNITS.index(m["unit"].lower()) if m["unit"] else 0)
    return _UNITS.index(word)


_CELL_RE = re.compile(
    r"\b(?:(?P<v>top|upper|bottom|lower)(?:[\s_-]*(?P<h>left|right|cent(?:er|re)|middle))?"
    r"|(?P<m>cent(?:er|re)|middle)(?:[\s_-]*(?P<mh>left|right))?"
    r"|(?P<s>left|right)(?:[\s_-]*(?:cent(?:er|re)|middle))?)\b", re.IGNORECASE)
_NOTHING = re.compile(r"\b(none|no|nowhere|nothing|zero)\b", re.IGNORECASE)


def cells_in_order(text: str) -> list[str]:
    """Cells in the order the text first mentions them (each mention read by :func:`parse_cells`): the scorer
    keeps the model's own order."""
    out: list[str] = []
    for m in _CELL_RE.finditer(text):
        cell = parse_cells(m.group(0))
        if cell and cell[0] not in out:
            out.append(cell[0])
    return out


def parse_cells(text) -> list[str] | None:
    """Cell names anywhere in the text (any case or order, ``top left`` / ``upper-left`` / ``centre`` /
    ``middle`` too) in canonical row-major order, without duplicates; ``none`` / ``no`` / empty -> []."""
    if not isinstance(text, str):
        return None
    found = set()
    for m in _CELL_RE.finditer(text):
        g = {k: (v.lower() if v else v) for k, v in m.groupdict().items()}
        if g["v"]:
            row = "top" if g["v"] in ("top", "upper") else "bottom"
            found.add(f"{row}-{g['h']}" if g["h"] in ("left", "right") else row)
        elif g["m"]:
            found.add(g["mh"] or "center")
        else:
            found.add(g["s"])
    if found:
        return [c for c in CELLS if c in found]
    return [] if not text.strip() or _NOTHING.search(text) else None


def parse_label(text, choices: Sequence[str]) -> str | None:
    """The choice mentioned first in the text, as a whole word, case-insensitive (spaces, ``_`` and ``-`` inside
    a choice are interchangeable); at one position the longest choice wins. Returned spelled as in ``choices``."""
    if not isinstance(text, str):
        return None
    best = None
    for c in choices:
        words = [re.escape(w) for w in re.split(r"[\s_-]+", str(c).strip()) if w]
        if not words:
            continue
        m = re.search(r"(?<![\w-])" + r"[\s_-]+".join(words) + r"(?![\w-])", text, re.IGNORECASE)
        if m and (best is None or (m.start(), m.start() - m.end()) < best[0]):
            best = ((m.start(), m.start() - m.end()), c)
    return best[1] if best else None


_NUM = r"-?\d+(?:\.\d+)?"
_DICT_RE = re.compile(r"\{[^{}]*\}")
_BOX_RE = re.compile(r"""["']?(?:bbox_2d|bbox|box_2d|box)["']?\s*:\s*\[([^\[\]]*)\]""")
_LABEL_RE = re.compile(r"""["']?label["']?\s*:\s*(?:"([^"]*)"|'([^']*)')""")
_LIST_RE = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,?\s*\]")


def parse_boxes(text) -> list[dict] | None:
    """Boxes from model output: ``{"bbox_2d": [...], "label": ...}`` items anywhere in the text (code fences,
    prose, single quotes, trailing commas are fine), else bare ``[x1, y1, x2, y2]`` lists (label ``""``);
    ``None`` / ``no`` / ``[]`` -> []. Coordinates are rounded to ints. Any item without exactly 4 numbers makes
    the whole output unparseable (None): a half-read answer must not pass for a confident one."""
    if not isinstance(text, str):
        return None
    t = re.sub(r"```[A-Za-z]*", " ", text)
    items = _DICT_RE.findall(t)
    out = []
    for item in items:
        m = _BOX_RE.search(item)
        nums = [x.strip() for x in m.group(1).split(",")] if m else []
        if nums and not nums[-1]:
            nums.pop()  # trailing comma
        if len(nums) != 4 or not all(re.fullmatch(_NUM, x) for x in nums):
            return None
        lab = _LABEL_RE.search(item)
        label = (lab.group(1) if lab.group(1) is not None else lab.group(2)) if lab else ""
        out.append({"bbox_2d": [int(round(float(x))) for x in nums], "label": label.strip()})
    if items:
        return out
    lists = _LIST_RE.findall(t)
    if lists:
        return [{"bbox_2d": [int(round(float(x))) for x in b], "label": ""} for b in lists]
    return [] if re.search(r"\[\s*\]", t) or re.search(r"\b(none|no|nothing)\b", t, re.IGNORECASE) else None


# ---------------------------------------------------------------- parsers of the truth (strict)
def truth_count(answer) -> int:
    if not isinstance(answer, str) or not re.fullmatch(r"0|[1-9][0-9]*", answer):
        raise ValueError(f"count answer must be a non-negative integer in digits, got {answer!r}")
    return int(answer)


def truth_cells(answer) -> list[str]:
    if answer == "None":
        return []
    parts = answer.split(", ") if isinstance(answer, str) else []
    idx = [CELLS.index(p) if p in CELLS else -1 for p in parts]
    if not parts or -1 in idx or idx != sorted(set(idx)):
        raise ValueError(f"locate answer must be 'None' or distinct cell names in row-major order joined by ', ', "
                         f"got {answer!r}")
    return parts


def truth_boxes(answer) -> list[dict]:
    """``None`` or a non-empty JSON list of ``{"bbox_2d": [4 ints], "label": str}`` and nothing else."""
    if answer == "None":
        return []
    err = ValueError(f"detect answer must be 'None' or a JSON list of bbox_2d/label objects, got {answer!r:.200}")
    if not isinstance(answer, str) or answer != answer.strip():
        raise err
    try:
        data = json.loads(answer)
    except json.JSONDecodeError:
        raise err from None
    if not isinstance(data, list) or not data:
        raise err
    for d in data:
        if not (isinstance(d, dict) and set(d) == {"bbox_2d", "label"} and isinstance(d["label"], str) and d["label"]
                and isinstance(d["bbox_2d"], list) and len(d["bbox_2d"]) == 4
                and all(type(v) is int for v in d["bbox_2d"])):
            raise err
    return data
