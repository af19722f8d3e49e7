"""The scene tasks' answers: the Stage-I caption (acquisition, terrain, layout, targets) and the dominant land cover.

``landcover`` is ours, not the paper's: SAR backscatter barely tells grass from crops from scrub (real S1 VV means
within 0.5 dB of each other), AEF vectors tell them apart, so it is the question family on which the geographic
prior has to make the difference.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Sequence

from .questions import (
    CAPTION_QUESTIONS,
    CELLS,
    LANDCOVER_QUESTIONS,
    LANDCOVER_WORDS,
    QA,
    Ask,
    FrameObj,
    SceneInfo,
    cells_of,
    join_words,
    pick,
    plural,
)

# Dynamic World class ids -> words a caption can use.
COVER_NAMES = {"water": "water", "trees": "trees", "grass": "grass", "flooded_vegetation": "flooded vegetation",
               "crops": "cropland", "shrub_and_scrub": "shrub and scrub", "built": "built-up land",
               "bare": "bare ground or paved surfaces", "snow_and_ice": "snow and ice"}


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
    parts = join_words([f"{p}% {_cover(k)}" for k, p in major])
    rest = f", with small amounts of {join_words(minor)}" if minor else ""
    t = pick(("The terrain is about {}{}.", "By area, the scene is roughly {}{}.", "Land cover: about {}{}.",
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
            out.append(f"Most of the scene is dominated by {name}, except the {join_words(others)}.")
        else:  # phrasings that need no verb agreement with the cover name ("trees", "water")
            t = pick(("The {c} {be} dominated by {n}.", "The {c} of the scene {be} mostly {n}.",
                      "The main cover in the {c} is {n}.", "In grid terms, the {c} {be} mostly {n}."),
                     seed, "layout", k)
            out.append(t.format(n=name, c=join_words(cells), be="is" if len(cells) == 1 else "are"))
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
        t = pick(("There {be} {n} {noun}{sub} in the {c}.", "The image contains {n} {noun}{sub}, located in the {c}.",
                  "{n} {noun}{sub} can be seen in the {c}.", "Targets: {n} {noun}{sub} in the {c}."),
                 seed, "targets", lab)
        out.append(t.format(be="is" if n == 1 else "are", n=n, noun=lab if n == 1 else plural(lab),
                            sub=sub if subs else "", c=join_words(cells_of(mine, frame))))
    missing = [plural(c) for c in classes if c not in labels]
    if missing:
        t = pick(("No {} are visible.", "There are no {}.", "No {} can be seen.", "The image shows no {}."),
                 seed, "absent")
        out.append(t.format(join_words(missing, "or")))
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
        out.append(pick(("This {s}{w} was acquired on {d}.", "Acquisition date of this {s}{w}: {d}."),
                        seed, "intro").format(s=subject, w=where, d=s.date))
    elif s.place or s.sensor:
        out.append(f"This {subject}{where} is described below.")
    if s.landcover:
        out += _terrain(s.landcover, seed)
    if s.layout is not None:
        out += _layout(s.layout, seed)
    out += _targets(list(objects), frame, seed, tuple(classes))
    return " ".join(out)


# ---------------------------------------------------------------- answer builders: (objects, frame, ask) -> turns
def caption_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    return [QA("caption", pick(CAPTION_QUESTIONS, ask.seed, "caption"),
               caption_text(objs, frame, ask.scene, seed=ask.seed, classes=ask.classes), {})]


def landcover_answers(objs: Sequence[FrameObj], frame: int, ask: Ask) -> list[QA]:
    """One turn when the scene's land-cover shares are known (:func:`dominant_cover`), else none."""
    answer = dominant_cover((ask.scene or SceneInfo()).landcover)
    if answer is None:
        return []
    return [QA("landcover", pick(LANDCOVER_QUESTIONS, ask.seed, "landcover"), answer,
               {"choices": list(LANDCOVER_WORDS)})]
