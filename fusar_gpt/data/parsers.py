"""Readers of answers: lenient parsers of model output and strict parsers of the reference (truth) answers.

They are one contract with the answer builders (``questions.py``, ``captions.py``): every answer a builder writes
must be read back to the same value by both the lenient parser of model output and the strict parser of the truth
(the tests check this property), so training targets and scoring cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .questions import CELLS

_TOKEN_RE = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")


# ---------------------------------------------------------------- parsers of model output (lenient)
def tokens(text) -> list[str]:
    """Caption tokens: lowercased runs of letters/digits, decimals kept whole; punctuation and ``_`` separate."""
    return _TOKEN_RE.findall(text.lower()) if isinstance(text, str) else []


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
    except (json.JSONDecodeError, RecursionError):  # RecursionError: 100,000 nested lists, never a traceback
        raise err from None
    if not isinstance(data, list) or not data:
        raise err
    for d in data:
        if not (isinstance(d, dict) and set(d) == {"bbox_2d", "label"} and isinstance(d["label"], str) and d["label"]
                and isinstance(d["bbox_2d"], list) and len(d["bbox_2d"]) == 4
                and all(type(v) is int for v in d["bbox_2d"])):
            raise err
    return data


def truth_label(answer, choices: Sequence[str], task: str = "label") -> str:
    """A classify / landcover answer: exactly one of ``choices`` (``task`` names the family in the error)."""
    if not answer or answer != answer.strip() or answer not in choices:
        raise ValueError(f"{task} answer must be one of {list(choices)}, got {answer!r}")
    return answer


def truth_caption(answer) -> list[str]:
    """A caption answer's tokens (:func:`tokens`); a caption without words is a ValueError."""
    toks = tokens(answer)
    if not toks:
        raise ValueError(f"caption answer has no words, got {answer!r:.80}")
    return toks


# The authors' detection prompt, as their released manifests ask it: "This is a SAR image. Please carefully check the
# image and detect the following object: plane. Output each detected target's bbox coordinates in JSON format ..."
AUTHORS_DETECT = re.compile(r"detect the following object:\s*(?P<label>[^.]+?)\s*\.\s*output each detected target"
                             r"\W{0,2}s? bbox", re.IGNORECASE)


def asked_class(question) -> str | None:
    """The class an authors' detection prompt asks for ("... detect the following object: ship. ..."), or None."""
    m = AUTHORS_DETECT.search(" ".join(question.lower().split())) if isinstance(question, str) else None
    return m["label"].strip() if m else None
